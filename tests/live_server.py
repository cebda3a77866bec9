"""A gateway served by daphne in a subprocess, for tests that need a real ASGI server.

The pieces (`gateway_env`, `manage`, `daphne`, `Database`) serve the session-wide gateway of
tests/integration and the multi-process tests. LiveGateway puts them together for a test
module of its own: a free loopback port and its own SQLite file, migrated and filled by a
setup script run with `manage.py shell`. Lines the script prints as `name value` are kept
in `.printed` (API key secrets, say). The fake upstream stays in the test process.
"""

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests import fake_upstream

ROOT = Path(__file__).resolve().parent.parent
# Seconds daphne may take to start listening.
STARTUP_TIMEOUT = 30


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Database:
    """A database of the gateway's own for one test session.

    A SQLite file by default; a fresh PostgreSQL database (dropped at the end) when the run
    itself is on PostgreSQL (DATABASE_URL), so that the production-stack leg tests daphne on
    PostgreSQL and Redis too.
    """

    def __init__(self, folder):
        self.main_url = os.environ.get("DATABASE_URL", "")
        self.postgres = self.main_url.startswith(("postgres://", "postgresql://"))
        if self.postgres:
            self.name = "gateway_it_" + uuid.uuid4().hex[:12]
            self.url = self.main_url.rsplit("/", 1)[0] + "/" + self.name
            self._admin("CREATE DATABASE {}")
        else:
            self.path = folder / "db.sqlite3"
            self.url = f"sqlite:///{self.path}"

    def _admin(self, statement):
        import psycopg

        with psycopg.connect(self.main_url, autocommit=True) as db:
            db.execute(statement.format(self.name))

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
            self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def gateway_env(database, **extra):
    """Return the environment of a gateway process on this database."""
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
        **extra,
    }
    if os.environ.get("REDIS_URL"):
        # Database 1 of the same Redis: the in-process tests clear database 0 as they go.
        env["REDIS_URL"] = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/1"
    return env


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


@contextlib.contextmanager
def daphne(env, log_path):
    """Run daphne on a free port until the block ends; yield its base URL."""
    port = _free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                # daphne with request bodies bounded (gateway/server.py), as in production.
                "gateway.server",
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
            while True:
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daphne did not start: {log_path.read_text()}")
                time.sleep(0.1)
            yield base_url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


class LiveGateway:
    def __init__(self, folder, setup, **env):
        self.folder = Path(folder)
        self.database = self.folder / "db.sqlite3"
        self.log_path = self.folder / "daphne.log"
        # Always SQLite and DEBUG off, unlike gateway_env: a module's own small gateway.
        self.env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "DEBUG": "false",
            "DATABASE_URL": f"sqlite:///{self.database}",
            "ECHO_STREAM_DELAY": "0",
            "DJANGO_SETTINGS_MODULE": "gateway.settings",
            # As in gateway_env: other tests' 401s from 127.0.0.1 in a shared Redis must not
            # turn this gateway's first request into a 429.
            "AUTH_FAILURES_PER_MINUTE": "100000",
            **env,
        }
        self.setup = setup
        self.printed = {}
        self.base_url = ""
        self._server = contextlib.ExitStack()

    def __enter__(self):
        manage(self.env, "migrate", "--no-input", "-v0")
        output = manage(self.env, "shell", "-c", self.setup)
        self.printed = dict(line.split(" ", 1) for line in output.splitlines() if " " in line)
        self.base_url = self._server.enter_context(daphne(self.env, self.log_path))
        return self

    def __exit__(self, *exc_info):
        self._server.close()

    @property
    def log(self):
        return self.log_path.read_text()

    def usage_records(self):
        """Return the usage records the server wrote, oldest first, as dicts."""
        with sqlite3.connect(self.database) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM apikeys_usagerecord ORDER BY id").fetchall()
        return [dict(row) for row in rows]

    def usage_record(self, request_id, timeout=5.0):
        """Return the usage record of a request once it is written, waiting up to timeout s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.usage_records():
                if record["request_id"] == request_id:
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no usage record for {request_id} within {timeout} s")
