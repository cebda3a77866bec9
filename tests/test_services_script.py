"""scripts/services starts PostgreSQL and Redis for a checkout anywhere, /root/... included.

Run as root, PostgreSQL runs as the postgres user, which cannot enter a checkout under a
0700 directory (/root, a private home): initdb could not make its cluster there.
"""

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def locked_checkout(tmp_path):
    """Return a checkout of scripts/ inside a directory only its owner may enter."""
    locked = tmp_path / "private"
    checkout = locked / "gateway"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "services", checkout / "scripts" / "services")
    locked.chmod(0o700)
    yield checkout
    locked.chmod(0o755)


def _services(checkout, command, pg_port, redis_port=None):
    env = {
        **os.environ,
        "GATEWAY_PG_PORT": str(pg_port),
        "GATEWAY_REDIS_PORT": str(redis_port or _free_port()),
    }
    return subprocess.run(
        [str(checkout / "scripts" / "services"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cluster(checkout, pg_port):
    process = _services(checkout, "where", pg_port)
    assert process.returncode == 0, process.stderr
    return Path(process.stdout.strip())


def test_the_cluster_of_a_checkout_in_a_private_directory_lies_where_postgres_can_enter(
    locked_checkout,
):
    cluster = _cluster(locked_checkout, 54399)

    if os.getuid() == 0:
        # As root, the postgres user runs the cluster: not under the 0700 directory.
        assert locked_checkout.parent not in cluster.parents
    else:
        assert cluster == locked_checkout / "var" / "postgres-54399"


def test_each_checkout_and_port_has_a_cluster_of_its_own(locked_checkout):
    assert _cluster(locked_checkout, 54399) != _cluster(locked_checkout, 54398)
    assert _cluster(locked_checkout, 54399) != _cluster(ROOT, 54399)


def test_it_starts_postgresql_for_a_checkout_in_a_private_directory(locked_checkout):
    installed = glob.glob("/usr/lib/postgresql/*/bin/initdb") and shutil.which("redis-server")
    assert installed, "PostgreSQL and Redis are needed: run scripts/system-deps services"
    pg_port, redis_port = _free_port(), _free_port()
    cluster = _cluster(locked_checkout, pg_port)
    try:
        started = _services(locked_checkout, "start", pg_port, redis_port)

        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{pg_port}/gateway" in started.stdout
    finally:
        _services(locked_checkout, "stop", pg_port, redis_port)
        shutil.rmtree(cluster, ignore_errors=True)
