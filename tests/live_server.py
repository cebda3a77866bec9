"""The gateway served by daphne in subprocesses, for tests that need a real ASGI server.

`LiveGateway` is the one launcher: a database of its own, migrated and filled by a setup
script run with `manage.py shell`, then one or more daphne processes on free loopback ports,
all stopped (and a PostgreSQL database dropped) when the block ends. Lines the script prints
as `name value` are kept in `.printed` (API key secrets, say). The fake upstream stays in the
test process. Two kinds:

    LiveGateway(folder, setup, **env)
        a module's own small gateway: always SQLite, DEBUG off (unless `env` says otherwise)
    LiveGateway(folder, setup, on_run_stack=True, processes=2, **env)
        on the run's own kind of database: PostgreSQL on the production-stack leg, so that
        it tests daphne on it too

Both take their environment from `gateway_env`: the run's Redis, if it has one, in a
database of the test gateways' own.

The pieces (`gateway_env`, `manage`, `daphne`, `Database`) stay public for tests that need
only some of them (a database with no server, a daphne started another way).
"""

import atexit
import contextlib
import functools
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests import fake_upstream

ROOT = Path(__file__).resolve().parent.parent
# Seconds daphne may take to start listening.
STARTUP_TIMEOUT = 30
# Left out of the environment that migrates the template: the Cloudflare settings change
# what `migrate` writes (completions.models.ensure_default_providers adds a provider when
# both are set), which the `migrate` each gateway runs again in its own environment adds;
# without REDIS_URL the template's migration touches no cache that tests share.
MIGRATION_SENSITIVE = ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "REDIS_URL")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Database:
    """A database of the gateway's own for one gateway.

    A SQLite file by default; a fresh PostgreSQL database (dropped at the end) when the run
    itself is on PostgreSQL (DATABASE_URL) and `follow_run` is true, so that the
    production-stack leg tests daphne on PostgreSQL and Redis too. With `migrated`, it
    starts as a copy of a database migrated once in this test run: a `migrate` from nothing
    costs 3 to 10 s of a process each time; the one each gateway still runs then only adds
    what its own settings add (MIGRATION_SENSITIVE). Measured with migrate_and_run: entering
    and leaving a small SQLite gateway took 25.6 s instead of 46.5 s (medians of 4,
    interleaved, 2 cores under a load average of 8).
    """

    def __init__(self, folder, follow_run=True, migrated=False):
        self.main_url = os.environ.get("DATABASE_URL", "") if follow_run else ""
        self.postgres = self.main_url.startswith(("postgres://", "postgresql://"))
        if self.postgres:
            self.name = "gateway_it_" + uuid.uuid4().hex[:12]
            self.url = self.main_url.rsplit("/", 1)[0] + "/" + self.name
            template = f" TEMPLATE {_migrated_postgres(self.main_url)}" if migrated else ""
            _create_postgres(self.main_url, self.name + template)
        else:
            self.path = Path(folder) / "db.sqlite3"
            self.url = f"sqlite:///{self.path}"
            if migrated:
                source = sqlite3.connect(_migrated_sqlite())
                copy = sqlite3.connect(self.path)
                with contextlib.closing(source), contextlib.closing(copy):
                    source.backup(copy)

    def rows(self, query):
        """Return the rows of a query as dicts."""
        if self.postgres:
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.url, row_factory=dict_row) as db:
                return db.execute(query).fetchall()
        with sqlite3.connect(self.path) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(query).fetchall()]

    def drop(self):
        if self.postgres:
            _postgres_admin(self.main_url, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def _postgres_admin(main_url, statement):
    import psycopg

    with psycopg.connect(main_url, autocommit=True) as db:
        db.execute(statement)


def _create_postgres(main_url, name_and_template):
    """CREATE DATABASE, waiting for the template's last session to end: the process that
    migrated it has exited, but PostgreSQL may not have closed its session yet."""
    import psycopg

    deadline = time.monotonic() + 10
    while True:
        try:
            return _postgres_admin(main_url, f"CREATE DATABASE {name_and_template}")
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _template_env(database_url):
    env = {name: value for name, value in os.environ.items() if name not in MIGRATION_SENSITIVE}
    return {
        **env,
        "ENVIRONMENT": "development",
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
    }


@functools.cache
def _migrated_sqlite():
    """Return the path of a SQLite file migrated once in this test run."""
    folder = Path(tempfile.mkdtemp(prefix="gateway-migrated-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "db.sqlite3"
    manage(_template_env(f"sqlite:///{path}"), "migrate", "--no-input", "-v0")
    return path


@functools.cache
def _migrated_postgres(main_url):
    """Return the name of a PostgreSQL database migrated once in this test run, on the
    server of main_url; dropped when the run ends."""
    name = "gateway_it_migrated_" + uuid.uuid4().hex[:12]
    _create_postgres(main_url, name)
    atexit.register(_drop_quietly, main_url, name)
    url = main_url.rsplit("/", 1)[0] + "/" + name
    manage(_template_env(url), "migrate", "--no-input", "-v0")
    return name


def _drop_quietly(main_url, name):
    # The server may be gone by the end of the run (stopped by scripts/services).
    with contextlib.suppress(Exception):
        _postgres_admin(main_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def gateway_env(database, **extra):
    """Return the environment of a gateway process on this database and the run's cache."""
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": database.url,
        "GATEWAY_PROVIDER_TEST_CF_TOKEN": fake_upstream.CLOUDFLARE_TOKEN,
        "ECHO_STREAM_DELAY": "0",
        "UPSTREAM_TIMEOUT": "10",
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        # Every test gateway shares one Redis database (below) and answers 127.0.0.1: the
        # 401s that earlier tests drew from it within the minute must not turn a later
        # test's first request into a 429 (tests/test_authentication_failures.py tests it).
        "AUTH_FAILURES_PER_MINUTE": "100000",
    }
    if os.environ.get("REDIS_URL"):
        # Database 1 of the same Redis: the in-process tests clear database 0 as they go.
        env["REDIS_URL"] = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/1"
    return {**env, **extra}


def manage(env, *args):
    """Run a management command in the gateway's environment; return its stdout."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def migrate_and_run(env, setup=""):
    """Migrate the gateway's database and run a setup script in one `manage.py shell`
    (one process start instead of two); return what the script printed."""
    script = (
        "from django.core.management import call_command\n"
        "call_command('migrate', interactive=False, verbosity=0)\n"
        f"{setup}"
    )
    # -v 0: without Django's line on the objects the shell imported.
    return manage(env, "shell", "-v", "0", "-c", script)


@contextlib.contextmanager
def daphne(env, log_path, module="gateway.server", probe_headers=None):
    """Run daphne on a free port until the block ends; yield its base URL.

    It is ready once /healthz answers 200 to a probe sent with `probe_headers`. `module`
    is gateway.server (daphne with request bodies bounded, as in production) unless a test
    needs daphne's own.
    """
    port = _free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "gateway.asgi:application",
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            while not _answers(f"{base_url}/healthz", probe_headers):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daphne did not start: {Path(log_path).read_text()}")
                time.sleep(0.1)
            yield base_url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


def _answers(url, headers):
    try:
        return httpx.get(url, headers=headers, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


class LiveGateway:
    """The gateway in `processes` daphne processes sharing one database (see the module
    docstring). `base_urls` holds each process's URL, `base_url` the first."""

    def __init__(self, folder, setup="", *, on_run_stack=False, processes=1, **env):
        self.folder = Path(folder)
        self.setup = setup
        self.on_run_stack = on_run_stack
        self.extra_env = env
        self.log_paths = [
            self.folder / ("daphne.log" if n == 0 else f"daphne-{n + 1}.log")
            for n in range(processes)
        ]
        # Set on entering: a PostgreSQL database is created only then, and dropped on leaving.
        self.database = None
        self.env = {}
        self.printed = {}
        self.base_urls = []
        self._resources = contextlib.ExitStack()

    def __enter__(self):
        try:
            self.database = Database(self.folder, follow_run=self.on_run_stack, migrated=True)
            self._resources.callback(self.database.drop)
            own = {} if self.on_run_stack else {"DEBUG": "false"}
            self.env = gateway_env(self.database, **{**own, **self.extra_env})
            output = migrate_and_run(self.env, self.setup)
            self.printed = dict(line.split(" ", 1) for line in output.splitlines() if " " in line)
            self.base_urls = [
                self._resources.enter_context(daphne(self.env, log_path))
                for log_path in self.log_paths
            ]
        except BaseException:
            self._resources.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self._resources.close()

    @property
    def base_url(self):
        return self.base_urls[0]

    @property
    def api_base(self):
        """The base URL of the OpenAI API, as the SDKs take it."""
        return f"{self.base_url}/v1"

    @property
    def log(self):
        """What every process wrote, the first's first."""
        return "".join(path.read_text() for path in self.log_paths if path.exists())

    def usage_records(self):
        """Return the usage records the server wrote, oldest first, as dicts."""
        return self.database.rows("SELECT * FROM apikeys_usagerecord ORDER BY id")

    def usage_record(self, request_id, timeout=5.0):
        """Return the usage record of a request once it is written, waiting up to timeout s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.usage_records():
                if record["request_id"] == request_id:
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no usage record for {request_id} within {timeout} s")
