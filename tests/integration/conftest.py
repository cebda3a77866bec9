"""A real gateway: daphne in a subprocess on a free port, with its own SQLite file.

The fake upstream runs in the test process; the gateway reaches it over loopback, as it
would reach Cloudflare.
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
import pytest

from tests import fake_upstream

ROOT = Path(__file__).resolve().parents[2]
LLAMA = "@cf/meta/llama-3.1-8b-instruct"
# A Workers AI model that answers in OpenAI's shape.
NEWER = "@cf/qwen/qwen3-30b-a3b-fp8"
# Seconds daphne may take to start listening.
STARTUP_TIMEOUT = 30

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, ModelAlias, ModelFallback, Provider

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{cloudflare}", account_id="{account}",
    api_key_env="TEST_CF_TOKEN",
)
llama = Model.objects.create(name="{llama}", provider=cf)
ModelAlias.objects.create(name="gpt-4o-mini", model=llama)
for name in ["@cf/test/slow", "@cf/test/fail-500", "@cf/test/cut-stream"]:
    Model.objects.create(name=name, provider=cf)
# The endpoints beyond chat (tests/integration/test_sdk_endpoints.py).
bge = Model.objects.create(
    name="@cf/baai/bge-small-en-v1.5", provider=cf, task="Text Embeddings"
)
ModelAlias.objects.create(name="text-embedding-3-small", model=bge)
Model.objects.create(name="{newer}", provider=cf)
failing = Model.objects.create(name="@cf/test/fail-500-then-llama", provider=cf)
ModelFallback.objects.create(model=failing, fallback=llama, position=0)
for name, fields in [("alice", {{}}), ("bob", {{"permissions": "read"}})]:
    key, secret = ApiKey.objects.create_key(name=name, **fields)
    print(name, secret)
"""


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


class Gateway:
    def __init__(self, base_url, database, secrets):
        self.base_url = base_url
        self.api_base = f"{base_url}/v1"
        self.database = database
        self.secrets = secrets

    def usage_records(self):
        """Return the usage records the server wrote, oldest first, as dicts."""
        return self.database.rows("SELECT * FROM apikeys_usagerecord ORDER BY id")


def gateway_env(database, **extra):
    """Return the environment of a gateway process on this database."""
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": database.url,
        "TEST_CF_TOKEN": fake_upstream.CLOUDFLARE_TOKEN,
        "ECHO_STREAM_DELAY": "0",
        "UPSTREAM_TIMEOUT": "10",
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
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
                "daphne",
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


@pytest.fixture(scope="session")
def upstream_for_gateway():
    with fake_upstream.FakeUpstream().start() as server:
        yield server


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, upstream_for_gateway):
    folder = tmp_path_factory.mktemp("gateway")
    database = Database(folder)
    env = gateway_env(database)
    try:
        manage(env, "migrate", "--no-input", "-v0")
        output = manage(
            env,
            "shell",
            "-c",
            SETUP.format(
                cloudflare=upstream_for_gateway.cloudflare_base_url,
                account=fake_upstream.CLOUDFLARE_ACCOUNT,
                llama=LLAMA,
                newer=NEWER,
            ),
        )
        secrets = dict(
            line.split() for line in output.splitlines() if line.startswith(("alice", "bob"))
        )
        with daphne(env, folder / "daphne.log") as base_url:
            yield Gateway(base_url, database, secrets)
    finally:
        database.drop()
