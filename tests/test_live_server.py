"""The test gateways' launcher (tests/live_server.py): each gateway gets the environment it
was given, on top of what the run's own stack gives it."""

from tests.live_server import Database, gateway_env


def test_a_redis_database_given_to_a_gateway_is_the_one_it_counts_in(monkeypatch, tmp_path):
    # tests/clients' gateway counts in database 2, apart from tests/integration's in 1:
    # their keys have the same ids.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6380/0")
    database = Database(tmp_path, follow_run=False)

    env = gateway_env(database, REDIS_URL="redis://127.0.0.1:6380/2")

    assert env["REDIS_URL"] == "redis://127.0.0.1:6380/2"


def test_a_gateway_on_the_runs_redis_counts_apart_from_the_in_process_tests(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6380/0")
    database = Database(tmp_path, follow_run=False)

    assert gateway_env(database)["REDIS_URL"] == "redis://127.0.0.1:6380/1"
