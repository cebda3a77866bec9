"""The official openai SDK against daphne: a prompt that reached the provider is paid for,
even when the answer never reaches its end (tests/test_prompt_always_paid.py in-process)."""

import time
from decimal import Decimal

import openai
import pytest

from tests.live_server import manage

pytestmark = pytest.mark.integration

# The fake upstream's behaviour comes from the model's name: "slow" streams a word every
# 0.05 s, "cut-stream" drops the connection after 3 words.
SLOW = "@cf/test/slow-priced"
CUT = "@cf/test/cut-stream-priced"
# USD per million tokens: 0.001 USD a prompt token, 0.002 USD a completion token.
INPUT_PRICE = Decimal("1000")
OUTPUT_PRICE = Decimal("2000")
# A hostile client's prompt: 10,000 words, 60,000 characters, 15,000 tokens as the
# gateway counts them (4 characters a token).
LONG_PROMPT = " ".join(["lorem"] * 10_000)
PROMPT_TOKENS = 15_000
# Seconds to wait for the record of a request the client left.
RECORD_TIMEOUT = 10
SETUP = f"""
from decimal import Decimal
from completions.models import Model, Provider

for name in {[SLOW, CUT]!r}:
    Model.objects.get_or_create(
        name=name,
        defaults={{
            "provider": Provider.objects.get(name="cloudflare"),
            "input_price": Decimal("{INPUT_PRICE}"),
            "output_price": Decimal("{OUTPUT_PRICE}"),
        }},
    )
"""


@pytest.fixture(scope="module")
def priced(gateway):
    manage(gateway.env, "shell", "-c", SETUP)
    # The server sees new models once its catalogue is older than REGISTRY_CACHE_SECONDS
    # (5 s by default): another process's change reaches it no sooner on the in-process
    # cache.
    client = openai.OpenAI(
        base_url=gateway.api_base, api_key=gateway.printed["alice"], max_retries=0
    )
    deadline = time.monotonic() + RECORD_TIMEOUT
    while True:
        try:
            client.models.retrieve(CUT)
            client.models.retrieve(SLOW)
            return
        except openai.NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _record(gateway, request_id):
    deadline = time.monotonic() + RECORD_TIMEOUT
    while time.monotonic() < deadline:
        for record in gateway.usage_records():
            if record["request_id"] == request_id:
                return record
        time.sleep(0.1)
    raise AssertionError(f"no usage record for {request_id}")


def _cost(record):
    return (
        record["prompt_tokens"] * INPUT_PRICE + record["completion_tokens"] * OUTPUT_PRICE
    ) / 1_000_000


def test_a_long_streamed_prompt_dropped_after_the_first_token_pays_for_its_prompt(
    client, gateway, priced
):
    stream = client.chat.completions.create(
        model=SLOW, messages=[{"role": "user", "content": LONG_PROMPT}], stream=True
    )
    request_id = stream.response.headers["x-request-id"]
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    # The client hangs up after its first token, with some 10,000 words still to come.
    stream.close()

    record = _record(gateway, request_id)
    assert record["status"] == "client_closed"
    assert record["prompt_tokens"] == PROMPT_TOKENS
    assert 1 <= record["completion_tokens"] <= 3
    assert record["tokens_estimated"] == 1
    assert Decimal(str(record["cost"])) == _cost(record) >= Decimal("15")


def test_a_stream_the_upstream_cuts_pays_for_its_prompt(client, gateway, priced):
    stream = client.chat.completions.create(
        model=CUT, messages=[{"role": "user", "content": LONG_PROMPT}], stream=True
    )
    request_id = stream.response.headers["x-request-id"]

    with pytest.raises(openai.APIError, match="ended before it was complete"):
        list(stream)

    record = _record(gateway, request_id)
    assert record["status"] == "upstream_error"
    assert record["prompt_tokens"] == PROMPT_TOKENS
    assert record["completion_tokens"] >= 1
    assert Decimal(str(record["cost"])) == _cost(record)
