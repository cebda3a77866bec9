"""Two daphne processes sharing PostgreSQL and Redis, as behind a load balancer.

They always run on PostgreSQL and Redis: when the test run itself is on SQLite, the
project's scripts/services starts both on loopback.
"""

import asyncio
import os
import subprocess
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live_server import ROOT, LiveGateway

pytestmark = pytest.mark.integration

SETUP = """
from apikeys.models import ApiKey
for name, rate in [("limited", "10/d"), ("streamer", "1000/h")]:
    key, secret = ApiKey.objects.create_key(name=name, rate_limit=rate)
    print(name, secret)
# Rate counters of an earlier run must not count against this one.
from django.core.cache import cache
cache.clear()
"""


@pytest.fixture(scope="module")
def production_stack(monkeypatch_module):
    """Make DATABASE_URL and REDIS_URL point at PostgreSQL and Redis, starting them if needed."""
    if os.environ.get("DATABASE_URL", "").startswith("postgres") and os.environ.get("REDIS_URL"):
        return
    output = subprocess.run(
        [str(ROOT / "scripts" / "services"), "start"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for assignment in output.split():
        name, _, value = assignment.partition("=")
        monkeypatch_module.setenv(name, value)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def two_gateways(production_stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiprocess")
    metrics_folder = folder / "metrics"
    metrics_folder.mkdir()
    with LiveGateway(
        folder,
        SETUP,
        on_run_stack=True,
        processes=2,
        ECHO_STREAM_DELAY="0",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_folder),
    ) as live:
        secrets = [live.printed["limited"], live.printed["streamer"]]
        yield live.base_urls, secrets, live.database


async def test_a_key_limited_to_10_a_day_gets_exactly_10_of_30_across_two_processes(
    two_gateways,
):
    servers, (secret, _), database = two_gateways
    body = {"model": "echo", "messages": [{"role": "user", "content": "count these four words"}]}

    async with httpx.AsyncClient(timeout=30) as client:

        async def send(index):
            response = await client.post(
                f"{servers[index % 2]}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {secret}"},
            )
            return response.status_code, index % 2

        results = await asyncio.gather(*(send(i) for i in range(30)))

    # Each process sees 15 of the 30: with a counter of its own, each would admit 10.
    assert Counter(status for status, _ in results) == {200: 10, 429: 20}
    records = database.rows("SELECT * FROM apikeys_usagerecord")
    assert len(records) == 10
    # The echo model answers the 4 words back: 4 prompt and 4 completion tokens each.
    assert sum(r["prompt_tokens"] for r in records) == 40
    assert sum(r["completion_tokens"] for r in records) == 40

    # Either process's /metrics counts what both served.
    metrics = httpx.get(f"{servers[0]}/metrics").text
    assert _sample(metrics, "gateway_model_requests_total", model="echo", status="ok") == 10
    assert _sample(metrics, "gateway_tokens_total", model="echo", kind="completion") == 40
    assert _sample(metrics, "gateway_requests_total", status="429") == 20


def _sample(text, name, **labels):
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def test_open_streams_hold_no_database_connection(two_gateways):
    servers, (_, secret), database = two_gateways
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "one two three four five six"}],
        "stream": True,
    }
    opened = asyncio.Event()
    started = 0

    async with httpx.AsyncClient(timeout=30) as client:

        async def stream(index):
            nonlocal started
            url = f"{servers[index % 2]}/v1/chat/completions"
            headers = {"Authorization": f"Bearer {secret}"}
            async with client.stream("POST", url, json=body, headers=headers) as response:
                assert response.status_code == 200
                lines = response.aiter_lines()
                await anext(lines)
                started += 1
                if started == 20:
                    opened.set()
                return [line async for line in lines if line]

        tasks = [asyncio.create_task(stream(i)) for i in range(20)]
        await asyncio.wait_for(opened.wait(), 20)
        connections = database.rows(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )[0]["n"]
        endings = await asyncio.gather(*tasks)

    # 20 streams open over two processes: at most each process's usage writer is connected.
    assert connections <= 2
    assert all(lines[-1] == "data: [DONE]" for lines in endings)
