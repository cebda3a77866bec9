"""Usage counts no real upstream sends (negative, 10**30, infinite): clamped and flagged.

The fake upstream reports them for model names holding its ABSURD_USAGE markers; the answer
itself is the ordinary echo, and the request is answered and recorded all the same.
"""

import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import ApiKey, UsageRecord
from apikeys.throttling import token_windows
from completions.models import Model
from completions.providers.base import Usage
from tests.limited_keys import chat, new_key, read_stream

pytestmark = pytest.mark.django_db(transaction=True)

NEGATIVE = "@cf/test/absurd-usage-negative"
HUGE = "@cf/test/absurd-usage-huge"
INFINITE = "@cf/test/absurd-usage-inf"
# Each marker and the count the gateway records for it.
MOST = Usage.MAX_REPORTED_TOKENS
CLAMPED = [(NEGATIVE, 0), (HUGE, MOST), (INFINITE, MOST)]


@pytest.fixture
def absurd(cloudflare, openai_upstream):
    """The markers on both kinds of provider, at OpenAI-like prices (USD per million)."""
    prices = {"input_price": Decimal("2.5"), "output_price": Decimal("10")}
    for name, _ in CLAMPED:
        Model.objects.create(name=name, provider=cloudflare, **prices)
        Model.objects.create(name=f"gpt-test-{name[8:]}", provider=openai_upstream, **prices)


@sync_to_async
def _record():
    (record,) = UsageRecord.objects.all()
    return record


def _events(body):
    return [line[6:] for line in body.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize(("model", "count"), CLAMPED)
@pytest.mark.parametrize("openai_shape", [False, True], ids=["cloudflare", "openai"])
async def test_it_answers_and_records_absurd_usage_as_a_flagged_clamped_count(
    api, absurd, model, count, openai_shape
):
    model = f"gpt-test-{model[8:]}" if openai_shape else model
    headers = await new_key()

    response = await chat(api, headers, model)

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello there world"
    assert response.json()["usage"]["prompt_tokens"] == count
    record = await _record()
    assert record.status == UsageRecord.OK
    assert (record.prompt_tokens, record.completion_tokens) == (count, count)
    assert record.total_tokens == 2 * count
    assert record.tokens_estimated is True
    assert Decimal(0) <= record.cost <= Decimal("999999.99999999")


@pytest.mark.parametrize(("model", "count"), CLAMPED)
@pytest.mark.parametrize("openai_shape", [False, True], ids=["cloudflare", "openai"])
async def test_a_stream_with_absurd_usage_ends_and_is_recorded(
    api, absurd, model, count, openai_shape
):
    model = f"gpt-test-{model[8:]}" if openai_shape else model
    headers = await new_key()

    response = await chat(api, headers, model, stream=True, stream_options={"include_usage": True})
    events = _events(await read_stream(response))

    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"]["completion_tokens"] == count
    assert not any("error" in json.loads(event) for event in events[:-1])
    record = await _record()
    assert record.status == UsageRecord.OK
    assert record.completion_tokens == count
    assert record.tokens_estimated is True


async def test_a_negative_count_never_credits_the_keys_token_limit(api, absurd):
    headers = await new_key(tokens_per_minute=1000)
    await chat(api, headers)

    await chat(api, headers, NEGATIVE)

    key = await ApiKey.objects.aget(name="dave")
    (minute,) = await sync_to_async(token_windows)(key)
    # The first chat's 3 prompt and 4 completion tokens, nothing taken off.
    assert minute.used == 7


async def test_it_says_in_the_log_that_an_upstream_reported_absurd_usage(api, absurd, caplog):
    headers = await new_key()

    await chat(api, headers, HUGE)

    assert any(
        record.levelname == "WARNING" and "usage" in record.getMessage()
        for record in caplog.records
    )
