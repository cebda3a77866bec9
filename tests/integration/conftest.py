"""A real gateway: daphne in a subprocess on a free port, with its own SQLite file.

The fake upstream runs in the test process; the gateway reaches it over loopback, as it
would reach Cloudflare.
"""

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import fake_upstream

ROOT = Path(__file__).resolve().parents[2]
LLAMA = "@cf/meta/llama-3.1-8b-instruct"
# Seconds daphne may take to start listening.
STARTUP_TIMEOUT = 30

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, ModelAlias, Provider

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{cloudflare}", account_id="{account}",
    api_key_env="TEST_CF_TOKEN",
)
llama = Model.objects.create(name="{llama}", provider=cf)
ModelAlias.objects.create(name="gpt-4o-mini", model=llama)
for name in ["@cf/test/slow", "@cf/test/fail-500", "@cf/test/cut-stream"]:
    Model.objects.create(name=name, provider=cf)
for name, fields in [("alice", {{}}), ("bob", {{"permissions": "read"}})]:
    key, secret = ApiKey.objects.create_key(name=name, **fields)
    print(name, secret)
"""


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gateway:
    def __init__(self, base_url, database, secrets):
        self.base_url = base_url
        self.api_base = f"{base_url}/v1"
        self.database = database
        self.secrets = secrets

    def usage_records(self):
        """Return the usage records the server wrote, newest last, as dicts."""
        with sqlite3.connect(self.database) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM apikeys_usagerecord ORDER BY id").fetchall()
        return [dict(row) for row in rows]


@pytest.fixture(scope="session")
def upstream_for_gateway():
    with fake_upstream.FakeUpstream().start() as server:
        yield server


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, upstream_for_gateway):
    folder = tmp_path_factory.mktemp("gateway")
    database = folder / "db.sqlite3"
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": f"sqlite:///{database}",
        "TEST_CF_TOKEN": fake_upstream.CLOUDFLARE_TOKEN,
        "ECHO_STREAM_DELAY": "0",
        "UPSTREAM_TIMEOUT": "10",
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--no-input", "-v0"], env=env, cwd=ROOT, check=True)
    setup = SETUP.format(
        cloudflare=upstream_for_gateway.cloudflare_base_url,
        account=fake_upstream.CLOUDFLARE_ACCOUNT,
        llama=LLAMA,
    )
    output = subprocess.run(
        [*manage, "shell", "-c", setup],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    secrets = dict(
        line.split() for line in output.splitlines() if line.startswith(("alice", "bob"))
    )

    port = _free_port()
    log = open(folder / "daphne.log", "w")  # noqa: SIM115 - closed at teardown
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
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"daphne did not start: {(folder / 'daphne.log').read_text()}")
        time.sleep(0.1)
    try:
        yield Gateway(base_url, database, secrets)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
