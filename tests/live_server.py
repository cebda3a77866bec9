"""A gateway served by daphne in a subprocess, for tests that need a real ASGI server.

Each LiveGateway gets a free loopback port and its own SQLite file, migrated and filled by a
setup script run with `manage.py shell`. Lines the script prints as `name value` are kept
in `.printed` (API key secrets, say). The fake upstream stays in the test process.
"""

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
# Seconds daphne may take to start listening.
STARTUP_TIMEOUT = 30


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveGateway:
    def __init__(self, folder, setup, **env):
        self.folder = Path(folder)
        self.database = self.folder / "db.sqlite3"
        self.log_path = self.folder / "daphne.log"
        self.env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "DEBUG": "false",
            "DATABASE_URL": f"sqlite:///{self.database}",
            "ECHO_STREAM_DELAY": "0",
            "DJANGO_SETTINGS_MODULE": "gateway.settings",
            **env,
        }
        self.setup = setup
        self.printed = {}
        self.base_url = ""
        self._server = None
        self._log = None

    def __enter__(self):
        manage = [sys.executable, str(ROOT / "manage.py")]
        run = {"env": self.env, "cwd": ROOT, "check": True, "capture_output": True, "text": True}
        subprocess.run([*manage, "migrate", "--no-input", "-v0"], **run)
        output = subprocess.run([*manage, "shell", "-c", self.setup], **run).stdout
        self.printed = dict(line.split(" ", 1) for line in output.splitlines() if " " in line)
        port = _free_port()
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in __exit__
        self._server = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
            + ["gateway.asgi:application"],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self._server.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"daphne did not start: {self.log_path.read_text()}")
            time.sleep(0.1)

    def __exit__(self, *exc_info):
        if self._server is not None:
            self._server.terminate()
            self._server.wait(timeout=10)
        if self._log is not None:
            self._log.close()

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
