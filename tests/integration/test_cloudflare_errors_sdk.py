"""Workers AI's capacity and allowance codes, as the official openai SDK sees them through
daphne: the SDK's error class, status, code and Retry-After (tests/test_cloudflare_errors.py
covers every code in-process).
"""

import time

import openai
import pytest

from tests import fake_upstream
from tests.live_server import LiveGateway

pytestmark = pytest.mark.integration

LLAMA = "@cf/meta/llama-3.1-8b-instruct"
CAPACITY = "@cf/test/cf-3040"
ALLOWANCE = "@cf/test/cf-4006"
# Seconds in a day, for the allowance's renewal at midnight UTC.
DAY_SECONDS = 24 * 3600

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, ModelFallback, Provider

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{base_url}", account_id="{account}",
    api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
)
llama = Model.objects.create(name="{llama}", provider=cf)
Model.objects.create(name="{capacity}", provider=cf)
Model.objects.create(name="{allowance}", provider=cf)
busy = Model.objects.create(name="{capacity}-then-llama", provider=cf)
ModelFallback.objects.create(model=busy, fallback=llama, position=0)
key, secret = ApiKey.objects.create_key(name="alice")
print("secret", secret)
"""


@pytest.fixture(scope="module")
def live(upstream, tmp_path_factory):
    setup = SETUP.format(
        base_url=upstream.cloudflare_base_url,
        account=fake_upstream.CLOUDFLARE_ACCOUNT,
        llama=LLAMA,
        capacity=CAPACITY,
        allowance=ALLOWANCE,
    )
    folder = tmp_path_factory.mktemp("cloudflare-errors")
    with LiveGateway(
        folder, setup, GATEWAY_PROVIDER_TEST_CF_TOKEN=fake_upstream.CLOUDFLARE_TOKEN
    ) as gateway:
        yield gateway


@pytest.fixture
def client(live):
    # No retries of the SDK's own, so that each test sees the gateway's first answer.
    return openai.OpenAI(
        base_url=f"{live.base_url}/v1", api_key=live.printed["secret"], max_retries=0
    )


def _user(text):
    return [{"role": "user", "content": text}]


def test_the_sdk_sees_a_model_out_of_capacity_as_a_503(client):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=CAPACITY, messages=_user("hi"))

    assert caught.value.status_code == 503
    assert caught.value.code == "upstream_over_capacity"
    assert "over capacity" in caught.value.message


def test_the_sdk_gets_the_fallbacks_answer_when_a_model_is_out_of_capacity(client):
    completion = client.chat.completions.create(
        model=f"{CAPACITY}-then-llama", messages=_user("hello there")
    )

    assert completion.model == LLAMA
    assert completion.choices[0].message.content == "Echo: hello there"


@pytest.mark.parametrize("stream", [False, True])
def test_the_sdk_sees_a_used_up_allowance_as_a_429_until_midnight_utc(client, stream):
    before = time.time()
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=ALLOWANCE, messages=_user("hi"), stream=stream)
    after = time.time()

    assert caught.value.status_code == 429
    assert caught.value.code == "upstream_quota_exhausted"
    assert "daily allowance" in caught.value.message
    retry_after = int(caught.value.response.headers["retry-after"])
    assert DAY_SECONDS - int(after) % DAY_SECONDS <= retry_after
    assert retry_after <= DAY_SECONDS - int(before) % DAY_SECONDS
