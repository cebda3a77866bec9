"""Reservations hold across two daphne processes sharing PostgreSQL and Redis.

50 chats sent at once, half of them streamed, alternate between the two processes; the fake
upstream's gated model holds each one that is admitted until all 50 were answered or
arrived, so that every admitted request is in flight at once. A limit with room for exactly
k worst cases (tests/limited_keys.py's chat with MAX_TOKENS) admits k of them.
"""

import asyncio
from collections import Counter
from decimal import Decimal

import httpx
import pytest

from completions.worst_case import chat_prompt_tokens
from tests import fake_upstream
from tests.integration.test_multiprocess import monkeypatch_module, production_stack
from tests.limited_keys import MAX_TOKENS, MESSAGES
from tests.live_server import LiveGateway

pytestmark = pytest.mark.integration

# Fixtures shared with test_multiprocess.py.
__all__ = ["monkeypatch_module", "production_stack"]

GATED = "@cf/test/gated"
CONCURRENT = 50
# 1,000 USD per million tokens, in and out: a worst case of 132 tokens costs 0.132 USD.
PRICE = Decimal("1000")
WORST_TOKENS = chat_prompt_tokens({"messages": MESSAGES}) + MAX_TOKENS
WORST_COST = WORST_TOKENS * PRICE / 10**6
# Room for exactly k worst cases, and not k + 1.
LIMITS = {
    "budget": ("monthly_budget", 5, (WORST_COST * Decimal("5.5")).quantize(Decimal("0.01"))),
    "minute": ("tokens_per_minute", 3, 3 * WORST_TOKENS + WORST_TOKENS // 2),
    "day": ("tokens_per_day", 4, 4 * WORST_TOKENS + WORST_TOKENS // 2),
}
SETUP = """
from decimal import Decimal
from apikeys.models import ApiKey
from completions.models import Model, Provider

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{base_url}", account_id="{account}",
    api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
)
Model.objects.create(
    name="{gated}", provider=cf, input_price=Decimal("{price}"), output_price=Decimal("{price}")
)
for name, (field, _, limit) in {limits}.items():
    key, secret = ApiKey.objects.create_key(name=name, rate_limit="1000/m", **{{field: limit}})
    print(name, secret)
from django.core.cache import cache
cache.clear()
"""


@pytest.fixture(scope="module")
def two_gateways(production_stack, upstream, tmp_path_factory):
    setup = SETUP.format(
        base_url=upstream.cloudflare_base_url,
        account=fake_upstream.CLOUDFLARE_ACCOUNT,
        gated=GATED,
        price=PRICE,
        limits={name: (field, k, str(limit)) for name, (field, k, limit) in LIMITS.items()},
    )
    folder = tmp_path_factory.mktemp("reservations")
    with LiveGateway(folder, setup, on_run_stack=True, processes=2) as live:
        yield live.base_urls, live.printed, live.database


async def _send_together(servers, secret, upstream):
    upstream.close_gate()
    refused = 0
    headers = {"Authorization": f"Bearer {secret}"}

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as client:

        async def send(number):
            nonlocal refused
            body = {"model": GATED, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
            body["stream"] = number % 2 == 0
            url = f"{servers[number % 2]}/v1/chat/completions"
            async with client.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code == 429:
                    refused += 1
                await response.aread()
                return response.status_code

        tasks = [asyncio.ensure_future(send(number)) for number in range(CONCURRENT)]
        try:
            for _ in range(3000):
                if refused + upstream.at_gate >= CONCURRENT:
                    break
                await asyncio.sleep(0.01)
        finally:
            upstream.open_gate()
        return await asyncio.gather(*tasks)


@pytest.mark.parametrize("name", list(LIMITS))
async def test_a_limit_with_room_for_k_admits_k_of_50_across_two_processes(
    two_gateways, upstream, name
):
    servers, secrets, database = two_gateways
    field, k, limit = LIMITS[name]

    statuses = await _send_together(servers, secrets[name], upstream)

    assert Counter(statuses) == {200: k, 429: CONCURRENT - k}
    assert upstream.at_gate == k
    records = database.rows(
        f"SELECT total_tokens, cost FROM apikeys_usagerecord WHERE key_name = '{name}'"
    )
    assert len(records) == k
    spent = sum(Decimal(record["cost"]) for record in records)
    tokens = sum(record["total_tokens"] for record in records)
    assert (spent if field == "monthly_budget" else tokens) <= limit
