"""Prompt caching: a session affinity per conversation, cached tokens counted and priced.

Workers AI keeps a prompt's prefix cached on the instance that computed it, and routes a
session to one instance by its `x-session-affinity` header; cached tokens come back as
`usage.prompt_tokens_details.cached_tokens` and cost less ([doc] prompt-caching.mdx).
"""

import csv
import io
import json
from decimal import Decimal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from apikeys.models import UsageRecord
from apikeys.usage import cost_of
from apikeys.writer import DatabaseStore
from completions.models import Model
from completions.providers.base import Usage
from tests import fake_upstream
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

# A Workers AI model that answers in OpenAI's shape, with cached tokens in its usage.
QWEN = "@cf/qwen/qwen3-30b-a3b-fp8"
FIRST_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there world"},
]
SECOND_TURN = [
    *FIRST_TURN,
    {"role": "assistant", "content": "Echo: hello there world"},
    {"role": "user", "content": "and more"},
]
# The fake counts words: the first turn's prompt is 5, the second's 11, of which the 5 of
# the first turn are its cached prefix; the second answer ("Echo: and more") is 3.
SECOND_TURN_USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 3,
    "total_tokens": 14,
    "prompt_tokens_details": {"cached_tokens": 5},
}


@pytest.fixture
def qwen(cloudflare):
    return Model.objects.create(name=QWEN, provider=cloudflare)


async def _chat(api, persona, model=LLAMA, messages=FIRST_TURN, **body):
    return await api.post(
        "/v1/chat/completions",
        data={"model": model, "messages": messages, **body},
        content_type="application/json",
        headers=persona.headers,
    )


async def _read(response):
    return b"".join([chunk async for chunk in response.streaming_content]).decode()


def _chunks(text):
    return [
        json.loads(event.removeprefix("data: "))
        for event in text.split("\n\n")
        if event and event != "data: [DONE]"
    ]


def _affinities(upstream):
    """Return the x-session-affinity header of each call to Workers AI, None where absent."""
    return [
        r["headers"].get("x-session-affinity") for r in upstream.requests if "/ai/run/" in r["path"]
    ]


# The header sent to Workers AI


async def test_it_sends_one_affinity_for_one_prompt_cache_key(api, alice, cloudflare, upstream):
    await _chat(api, alice, prompt_cache_key="project-7")
    await _chat(api, alice, messages=SECOND_TURN, prompt_cache_key="project-7")
    await _chat(api, alice, prompt_cache_key="project-8")

    first, again, other = _affinities(upstream)
    assert first is not None
    assert again == first
    assert other != first


async def test_it_sends_an_affinity_for_a_user_when_no_prompt_cache_key_is_given(
    api, alice, cloudflare, upstream
):
    await _chat(api, alice, user="user-41")
    await _chat(api, alice, messages=[{"role": "user", "content": "unrelated"}], user="user-41")
    await _chat(api, alice, user="user-42")

    first, again, other = _affinities(upstream)
    assert first is not None
    assert again == first
    assert other != first


async def test_a_conversation_keeps_its_derived_affinity_from_turn_to_turn(
    api, alice, cloudflare, upstream
):
    await _chat(api, alice)
    await _chat(api, alice, messages=SECOND_TURN)
    await _chat(api, alice, messages=[*FIRST_TURN[:1], {"role": "user", "content": "another"}])

    first, second, other = _affinities(upstream)
    assert first is not None
    assert second == first
    assert other != first


async def test_two_keys_never_share_an_affinity(api, alice, carol, cloudflare, upstream):
    await _chat(api, alice)
    await _chat(api, carol)
    await _chat(api, alice, prompt_cache_key="shared")
    await _chat(api, carol, prompt_cache_key="shared")

    alices, carols, alices_keyed, carols_keyed = _affinities(upstream)
    assert alices != carols
    assert alices_keyed != carols_keyed


async def test_the_affinity_shows_neither_the_key_nor_what_the_client_sent(
    api, alice, cloudflare, upstream
):
    await _chat(api, alice, prompt_cache_key="project-7", user="user-41")

    [affinity] = _affinities(upstream)
    assert "project-7" not in affinity and "user-41" not in affinity
    assert alice.secret not in affinity and alice.key.prefix not in affinity
    assert affinity.isascii() and affinity.isalnum()


async def test_a_prompt_cache_key_of_any_characters_reaches_workers_ai(
    api, alice, cloudflare, upstream
):
    response = await _chat(api, alice, prompt_cache_key="café ☕\r\nx-injected: 1")

    assert response.status_code == 200
    [record] = [r for r in upstream.requests if "/ai/run/" in r["path"]]
    assert "x-injected" not in record["headers"]
    assert record["headers"]["x-session-affinity"]


async def test_a_stream_sends_the_affinity_too(api, alice, cloudflare, upstream):
    await _read(await _chat(api, alice, stream=True))
    await _read(await _chat(api, alice, messages=SECOND_TURN, stream=True))

    first, second = _affinities(upstream)
    assert first is not None
    assert second == first


async def test_it_sends_no_prompt_cache_key_field_to_workers_ai(api, alice, cloudflare, upstream):
    await _chat(api, alice, prompt_cache_key="project-7")

    [record] = [r for r in upstream.requests if "/ai/run/" in r["path"]]
    assert "prompt_cache_key" not in record["json"]


# The parameter


@pytest.mark.parametrize("value", ["k" * 65, 7, ["a"]])
async def test_it_refuses_a_prompt_cache_key_that_is_not_a_short_string(
    api, alice, cloudflare, value
):
    response = await _chat(api, alice, prompt_cache_key=value)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt_cache_key"


async def test_it_takes_a_null_prompt_cache_key_as_none(api, alice, cloudflare, upstream):
    response = await _chat(api, alice, prompt_cache_key=None)

    assert response.status_code == 200
    assert _affinities(upstream)[0] is not None


# OpenAI-compatible upstreams


async def test_it_passes_the_prompt_cache_key_to_an_openai_upstream(
    api, alice, openai_upstream, upstream
):
    await _chat(api, alice, model="gpt-test-mini", prompt_cache_key="project-7")
    await _read(await _chat(api, alice, model="gpt-test-mini", prompt_cache_key="p8", stream=True))

    sent = [r["json"] for r in upstream.requests if r["path"].endswith("/chat/completions")]
    assert [body.get("prompt_cache_key") for body in sent] == ["project-7", "p8"]


async def test_it_adds_no_prompt_cache_key_of_its_own_for_an_openai_upstream(
    api, alice, openai_upstream, upstream
):
    await _chat(api, alice, model="gpt-test-mini")

    [body] = [r["json"] for r in upstream.requests if r["path"].endswith("/chat/completions")]
    assert "prompt_cache_key" not in body


# Cached tokens


async def test_the_next_turn_of_a_conversation_reports_its_cached_tokens(api, alice, qwen):
    first = await _chat(api, alice, model=QWEN)
    second = await _chat(api, alice, model=QWEN, messages=SECOND_TURN)

    assert first.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert second.json()["usage"] == SECOND_TURN_USAGE
    records = [r async for r in UsageRecord.objects.order_by("id")]
    assert [r.cached_tokens for r in records] == [0, 5]
    assert [r.prompt_tokens for r in records] == [5, 11]


async def test_the_next_turn_of_a_stream_reports_its_cached_tokens(api, alice, qwen):
    await _read(await _chat(api, alice, model=QWEN, stream=True))
    text = await _read(
        await _chat(
            api,
            alice,
            model=QWEN,
            messages=SECOND_TURN,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert _chunks(text)[-1]["usage"] == SECOND_TURN_USAGE
    record = await UsageRecord.objects.order_by("id").alast()
    assert record.cached_tokens == 5


async def test_a_model_without_prompt_caching_reports_no_cached_tokens(api, alice, cloudflare):
    await _chat(api, alice)
    response = await _chat(api, alice, messages=SECOND_TURN)

    assert response.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    record = await UsageRecord.objects.order_by("id").alast()
    assert record.cached_tokens == 0


async def test_metrics_count_cached_tokens_by_model(api, alice, qwen):
    def cached(text):
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "gateway_tokens_total"
            and sample.labels == {"model": QWEN, "kind": "cached"}
        )

    before = (await api.get("/metrics")).content.decode()
    await _chat(api, alice, model=QWEN)
    await _chat(api, alice, model=QWEN, messages=SECOND_TURN)
    after = (await api.get("/metrics")).content.decode()

    assert cached(after) - cached(before) == 5


# Their price


async def test_cached_tokens_cost_the_cached_input_price(api, alice, qwen):
    qwen.input_price, qwen.cached_input_price = Decimal("1000"), Decimal("100")
    qwen.output_price = Decimal("2000")
    await qwen.asave()

    await _chat(api, alice, model=QWEN)
    await _chat(api, alice, model=QWEN, messages=SECOND_TURN)

    record = await UsageRecord.objects.order_by("id").alast()
    # (6 uncached × 1000 + 5 cached × 100 + 3 completion × 2000) / 10^6 USD
    assert record.cost == Decimal("0.01250000")


async def test_cached_tokens_cost_the_input_price_when_no_cached_price_is_known(api, alice, qwen):
    qwen.input_price, qwen.output_price = Decimal("1000"), Decimal("2000")
    await qwen.asave()

    await _chat(api, alice, model=QWEN)
    await _chat(api, alice, model=QWEN, messages=SECOND_TURN)

    record = await UsageRecord.objects.order_by("id").alast()
    # (11 prompt × 1000 + 3 completion × 2000) / 10^6 USD
    assert record.cost == Decimal("0.01700000")


def test_cost_of_charges_the_uncached_prompt_at_the_input_price():
    model = Model(
        input_price=Decimal("0.28"), cached_input_price=Decimal("0.07"), output_price=Decimal("1")
    )

    # (900 × 0.28 + 100 × 0.07 + 10 × 1) / 10^6 USD
    assert cost_of(model, 1000, 10, cached_tokens=100) == Decimal("0.00026900")
    assert cost_of(model, 1000, 10) == Decimal("0.00029000")


# Reading an upstream's usage


@pytest.mark.parametrize(
    "details, cached",
    [
        ({"cached_tokens": 3}, 3),
        ({"cached_tokens": None}, 0),
        ({"cached_tokens": "many"}, 0),
        ({"cached_tokens": -2}, 0),
        # Never more than the prompt.
        ({"cached_tokens": 50}, 10),
        ({}, 0),
        (None, 0),
        ("junk", 0),
    ],
)
def test_it_reads_cached_tokens_leniently(details, cached):
    usage = Usage.reported(
        {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": details}
    )

    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (10, 2, cached)


def test_usage_adds_up_cached_tokens():
    total = Usage(prompt_tokens=4, cached_tokens=2) + Usage(prompt_tokens=6, cached_tokens=3)

    assert total.cached_tokens == 5
    assert total.as_dict()["prompt_tokens_details"] == {"cached_tokens": 5}


# The fake upstream, as prompt-caching.mdx describes Workers AI


def test_the_fake_caches_a_prefix_only_within_one_session(upstream):
    url = (
        f"{upstream.cloudflare_base_url}/accounts/{fake_upstream.CLOUDFLARE_ACCOUNT}/ai/run/{QWEN}"
    )
    headers = {"Authorization": f"Bearer {fake_upstream.CLOUDFLARE_TOKEN}"}

    def cached(messages, affinity=None):
        extra = {"x-session-affinity": affinity} if affinity else {}
        answer = httpx.post(url, json={"messages": messages}, headers={**headers, **extra})
        return answer.json()["result"]["usage"]["prompt_tokens_details"]["cached_tokens"]

    assert cached(FIRST_TURN, "s1") == 0
    assert cached(SECOND_TURN, "s1") == 5
    assert cached(SECOND_TURN, "s2") == 0
    assert cached(SECOND_TURN) == 0


# The admin's usage report


def _cached_record(key, prompt, cached):
    return DatabaseStore().add_one(
        dict(
            api_key=key,
            key_name=key.name,
            model=QWEN,
            endpoint="/v1/chat/completions",
            prompt_tokens=prompt,
            cached_tokens=cached,
            total_tokens=prompt,
            request_id=f"req-{prompt}",
        )
    )


def test_the_usage_report_shows_the_cached_part_of_the_prompt(admin_client, alice):
    _cached_record(alice.key, 1000, 600)
    _cached_record(alice.key, 200, 0)

    html = admin_client.get("/admin/apikeys/usagereport/").content.decode()
    rows = list(
        csv.DictReader(
            io.StringIO(admin_client.get("/admin/apikeys/usagereport/csv/").content.decode())
        )
    )

    assert "1,200 prompt (600 cached)" in html
    assert [(r["prompt_tokens"], r["cached_tokens"]) for r in rows] == [("1200", "600")]
