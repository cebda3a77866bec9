"""Workers AI's error codes, as a client of the gateway sees them: status, message, fallback.

The fake upstream answers a model named with "cf-<code>" with that code's documented HTTP
status and message (tests/fake_upstream.py, CLOUDFLARE_CODED_ERRORS). Where a test needs an
answer the fake does not give (a Retry-After on a 429), the upstream is httpx's
MockTransport behind the providers' one seam (get_client), as in tests/test_retries.py.
"""

import json
import logging
from datetime import UTC, datetime

import httpx
import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from completions.models import Model, ModelFallback, Provider
from completions.providers.base import BaseProvider
from completions.providers.cloudflare import CloudflareProvider
from tests import fake_upstream
from tests.clock import FakeClock
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello there"}]
CAPACITY = "@cf/test/cf-3040"
ALLOWANCES = ["@cf/test/cf-4006", "@cf/test/cf-3036"]
REFUSED_MODELS = ["@cf/test/cf-5016", "@cf/test/cf-5018", "@cf/test/cf-3041", "@cf/test/cf-3023"]
TIMEOUTS = ["@cf/test/cf-3007", "@cf/test/cf-3008"]
WRONG_ACCOUNT = "@cf/test/cf-7003"
STALE_MODELS = ["@cf/test/cf-5007", "@cf/test/cf-3042"]
TOO_LARGE = "@cf/test/cf-3006"
CODED = [
    CAPACITY,
    *ALLOWANCES,
    *REFUSED_MODELS,
    *TIMEOUTS,
    WRONG_ACCOUNT,
    *STALE_MODELS,
    TOO_LARGE,
]
# 21:00:00 UTC: three hours before the daily allowance comes back.
EVENING = datetime(2026, 11, 30, 21, 0, 0, tzinfo=UTC).timestamp()
THREE_HOURS = 3 * 3600


@pytest.fixture(autouse=True)
def coded_models(cloudflare):
    for name in CODED:
        Model.objects.create(name=name, provider=cloudflare)


@pytest.fixture(autouse=True)
def pauses(monkeypatch, settings):
    """Retries allowed (as in production), and every pause between attempts noted, not slept."""
    settings.UPSTREAM_RETRIES = 2
    settings.UPSTREAM_RETRY_MAX_SECONDS = 30
    noted = []

    async def sleep(seconds):
        noted.append(seconds)

    monkeypatch.setattr(BaseProvider, "sleep", staticmethod(sleep))
    return noted


@pytest.fixture
def evening(monkeypatch):
    clock = FakeClock(EVENING)
    monkeypatch.setattr(CloudflareProvider, "timer", clock)
    return clock


@pytest.fixture
def scripted(monkeypatch):
    """Answer every upstream call with the response a test sets; count the calls."""
    calls = []

    def use(status, code, message, headers=None):
        body = {"result": None, "success": False, "errors": [{"code": code, "message": message}]}

        def answer(request):
            calls.append(request.url.path)
            return httpx.Response(status, json=body, headers=headers)

        monkeypatch.setattr(
            "completions.providers.base.get_client",
            lambda: httpx.AsyncClient(transport=httpx.MockTransport(answer)),
        )
        return calls

    return use


def _fall_back(model_name, *fallback_names):
    model = Model.objects.get(name=model_name)
    for position, name in enumerate(fallback_names):
        ModelFallback.objects.create(
            model=model, fallback=Model.objects.get(name=name), position=position
        )


async def _chat(api, persona, model, **body):
    return await api.post(
        "/v1/chat/completions",
        data={"model": model, "messages": MESSAGES, **body},
        content_type="application/json",
        headers=persona.headers,
    )


def _models_called(upstream):
    return [r["path"].split("/ai/run/")[1] for r in upstream.requests if "/ai/run/" in r["path"]]


async def _text_of_stream(response):
    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    chunks = [json.loads(b[6:]) for b in raw.split("\n\n") if b.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@sync_to_async
def _record():
    [record] = UsageRecord.objects.all()
    return record


# 3040: out of capacity


async def test_a_model_out_of_capacity_falls_over_to_the_next_at_once(api, alice, upstream, pauses):
    await sync_to_async(_fall_back)(CAPACITY, LLAMA)

    response = await _chat(api, alice, CAPACITY)

    assert response.status_code == 200
    assert response.json()["model"] == LLAMA
    assert _models_called(upstream) == [CAPACITY, LLAMA]
    assert pauses == []


async def test_it_does_not_wait_on_retry_after_for_a_model_out_of_capacity(
    api, alice, scripted, pauses
):
    calls = scripted(
        429, 3040, "Capacity temporarily exceeded, please try again.", {"Retry-After": "2"}
    )

    response = await _chat(api, alice, LLAMA)

    assert len(calls) == 1
    assert pauses == []
    assert response.status_code == 503


async def test_a_model_out_of_capacity_with_no_fallback_left_is_a_503_saying_so(
    api, alice, upstream
):
    response = await _chat(api, alice, CAPACITY)

    assert response.status_code == 503
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_over_capacity")
    assert "over capacity" in error["message"]
    assert CAPACITY in error["message"]
    assert "Capacity temporarily exceeded" in error["message"]
    assert _models_called(upstream) == [CAPACITY]
    record = await _record()
    assert (record.status, record.http_status) == (UsageRecord.UPSTREAM_ERROR, 503)


async def test_a_stream_out_of_capacity_falls_over_before_its_first_event(api, alice, upstream):
    await sync_to_async(_fall_back)(CAPACITY, LLAMA)

    response = await _chat(api, alice, CAPACITY, stream=True)

    assert response.status_code == 200
    assert await _text_of_stream(response) == "Echo: hello there"
    assert _models_called(upstream) == [CAPACITY, LLAMA]


async def test_a_stream_out_of_capacity_with_no_fallback_is_a_503(api, alice, upstream):
    response = await _chat(api, alice, CAPACITY, stream=True)

    assert response.status_code == 503
    assert not response.streaming
    assert response.json()["error"]["code"] == "upstream_over_capacity"


# 4006 and 3036: the daily free allocation used up


@pytest.mark.parametrize("model", ALLOWANCES)
async def test_a_used_up_daily_allowance_is_a_429_until_midnight_utc(
    api, alice, upstream, evening, model
):
    response = await _chat(api, alice, model)

    assert response.status_code == 429
    assert response["Retry-After"] == str(THREE_HOURS)
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "upstream_quota_exhausted")
    assert "daily allowance" in error["message"]
    assert "cloudflare" in error["message"]
    assert "midnight UTC" in error["message"]
    assert _models_called(upstream) == [model]


async def test_the_wait_for_the_allowance_follows_the_clock(api, alice, upstream, evening):
    evening.advance(THREE_HOURS - 90)

    response = await _chat(api, alice, ALLOWANCES[0])

    assert response["Retry-After"] == "90"


@pytest.mark.parametrize("code", [4006, 3036])
async def test_a_used_up_daily_allowance_is_never_retried(
    api, alice, scripted, pauses, evening, code
):
    # Even when the upstream names a short wait: the allowance comes back at midnight.
    calls = scripted(429, code, "you have used up your daily free allocation", {"Retry-After": "1"})

    response = await _chat(api, alice, LLAMA)

    assert response.status_code == 429
    assert len(calls) == 1
    assert pauses == []
    assert response["Retry-After"] == str(THREE_HOURS)


async def test_a_used_up_allowance_skips_fallbacks_of_the_same_provider(
    api, alice, upstream, evening
):
    await sync_to_async(_fall_back)(ALLOWANCES[0], LLAMA, "@cf/test/slow")

    response = await _chat(api, alice, ALLOWANCES[0])

    assert response.status_code == 429
    assert "daily allowance" in response.json()["error"]["message"]
    assert _models_called(upstream) == [ALLOWANCES[0]]


async def test_a_used_up_allowance_skips_another_provider_on_the_same_account(
    api, alice, cloudflare, upstream, evening
):
    twin = await Provider.objects.acreate(
        name="cloudflare-twin",
        kind=Provider.CLOUDFLARE,
        base_url=cloudflare.base_url,
        account_id=cloudflare.account_id,
        api_key_env=cloudflare.api_key_env,
    )
    await Model.objects.acreate(name="@cf/meta/llama-3.2-1b-instruct", provider=twin)
    await sync_to_async(_fall_back)(ALLOWANCES[0], "@cf/meta/llama-3.2-1b-instruct")

    response = await _chat(api, alice, ALLOWANCES[0])

    assert response.status_code == 429
    assert _models_called(upstream) == [ALLOWANCES[0]]


async def test_a_used_up_allowance_falls_back_to_another_provider(
    api, alice, openai_upstream, upstream, evening
):
    await sync_to_async(_fall_back)(ALLOWANCES[0], LLAMA, "gpt-test-mini")

    response = await _chat(api, alice, ALLOWANCES[0])

    assert response.status_code == 200
    assert response.json()["model"] == "gpt-test-mini"
    assert _models_called(upstream) == [ALLOWANCES[0]]


# 5016, 5018, 3041, 3023: the account may not run the model


@pytest.mark.parametrize("model", REFUSED_MODELS)
async def test_a_model_the_account_may_not_run_is_a_502_with_cloudflares_reason(
    api, alice, upstream, caplog, model
):
    code = model.rsplit("-", 1)[1]
    cloudflare_message = fake_upstream.CLOUDFLARE_CODED_ERRORS[f"cf-{code}"][2]

    with caplog.at_level(logging.ERROR):
        response = await _chat(api, alice, model)

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "upstream_model_refused"
    assert cloudflare_message in error["message"]
    assert "credentials" not in error["message"]
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR and code in r.getMessage()]
    assert cloudflare_message in logged.getMessage()
    assert fake_upstream.CLOUDFLARE_ACCOUNT not in response.content.decode()


async def test_a_model_the_account_may_not_run_falls_back(api, alice, upstream):
    await sync_to_async(_fall_back)("@cf/test/cf-5016", LLAMA)

    response = await _chat(api, alice, "@cf/test/cf-5016")

    assert response.status_code == 200
    assert _models_called(upstream) == ["@cf/test/cf-5016", LLAMA]


# 3007, 3008: Workers AI timed out


@pytest.mark.parametrize("model", TIMEOUTS)
async def test_a_timeout_at_workers_ai_is_a_504(api, alice, upstream, model):
    response = await _chat(api, alice, model)

    assert response.status_code == 504
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_timeout")
    assert "cloudflare" in error["message"]
    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR


@pytest.mark.parametrize("model", TIMEOUTS)
async def test_a_timeout_at_workers_ai_falls_back(api, alice, upstream, model):
    await sync_to_async(_fall_back)(model, LLAMA)

    response = await _chat(api, alice, model, stream=True)

    assert response.status_code == 200
    assert await _text_of_stream(response) == "Echo: hello there"
    assert _models_called(upstream) == [model, LLAMA]


# 7003 and 404: the account id or URL is wrong


async def test_an_unroutable_account_is_a_502_saying_the_account_looks_wrong(
    api, alice, upstream, caplog
):
    with caplog.at_level(logging.ERROR):
        response = await _chat(api, alice, WRONG_ACCOUNT)

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_misconfigured"
    assert "cloudflare" in error["message"]
    assert "account id" in error["message"]
    assert "Could not route" in error["message"]
    assert fake_upstream.CLOUDFLARE_ACCOUNT not in response.content.decode()
    assert any("7003" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_a_path_workers_ai_does_not_have_is_a_502_not_the_clients_404(
    api, alice, cloudflare, upstream
):
    # The fake's answer to a path it has no route for: a 404 with a generic code.
    await Provider.objects.filter(pk=cloudflare.pk).aupdate(
        base_url=f"{cloudflare.base_url}/nowhere"
    )

    response = await _chat(api, alice, LLAMA)

    assert response.status_code == 502
    assert "account id" in response.json()["error"]["message"]


# 5007, 3042: the gateway's catalogue names a model Workers AI does not have


@pytest.mark.parametrize("model", STALE_MODELS)
async def test_a_model_workers_ai_does_not_have_is_a_502_for_the_operator(
    api, alice, upstream, caplog, model
):
    with caplog.at_level(logging.ERROR):
        response = await _chat(api, alice, model)

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_model_unknown"
    assert model in error["message"]
    assert "sync_models" in error["message"]
    assert any(model in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_a_model_workers_ai_does_not_have_falls_back(api, alice, upstream):
    await sync_to_async(_fall_back)(STALE_MODELS[0], LLAMA)

    response = await _chat(api, alice, STALE_MODELS[0])

    assert response.status_code == 200
    assert _models_called(upstream) == [STALE_MODELS[0], LLAMA]


# The client's own errors stay the client's


async def test_a_request_too_large_is_a_413_and_does_not_fall_back(api, alice, upstream):
    await sync_to_async(_fall_back)(TOO_LARGE, LLAMA)

    response = await _chat(api, alice, TOO_LARGE)

    assert response.status_code == 413
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")
    assert "Request is too large" in error["message"]
    assert _models_called(upstream) == [TOO_LARGE]
    record = await _record()
    assert record.status == UsageRecord.CLIENT_ERROR


async def test_bad_input_stays_the_clients_400_with_cloudflares_message(api, alice, upstream):
    response = await _chat(api, alice, "@cf/test/bad-request")

    assert response.status_code == 400
    assert "context too long" in response.json()["error"]["message"]


@pytest.mark.parametrize("code", [5006, 8001])
async def test_an_input_refused_by_code_stays_the_clients_400(api, alice, scripted, code):
    scripted(400, code, "AiError: Bad input: Error: oneOf at '/' not met")

    response = await _chat(api, alice, LLAMA)

    assert response.status_code == 400
    assert "oneOf at '/' not met" in response.json()["error"]["message"]


async def test_refused_credentials_still_read_as_refused_credentials(
    api, alice, upstream, monkeypatch
):
    monkeypatch.setenv("GATEWAY_PROVIDER_TEST_CF_TOKEN", "cf-wrong-token")

    response = await _chat(api, alice, LLAMA)

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_auth_failed"
    assert "refused the gateway's credentials" in error["message"]


async def test_a_429_with_no_code_of_workers_ai_is_still_retried_after_its_wait(
    api, alice, scripted, pauses
):
    calls = scripted(429, 1, "busy", {"Retry-After": "2"})

    response = await _chat(api, alice, LLAMA)

    assert len(calls) == 3
    assert pauses == [2.0, 2.0]
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "upstream_rate_limited"
