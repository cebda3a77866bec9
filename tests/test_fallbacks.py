"""Fallbacks: a model's fallbacks answer, in order, when its provider fails before answering."""

import asyncio
import json
import threading
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError

from apikeys.models import ApiKey, UsageRecord
from apikeys.usage import cost_of
from apikeys.writer import DatabaseStore, writer
from completions import worst_case
from completions.models import Model, ModelFallback
from tests.conftest import LLAMA, Persona

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello there"}]
FAILING = "@cf/test/fail-500"
LIMITED = "@cf/test/rate-limited"


@pytest.fixture(autouse=True)
def _no_retries(settings):
    # Retries of the same provider are another concern (and would only slow these down).
    settings.UPSTREAM_RETRIES = 0


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


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


async def _events(response):
    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    data = [block.removeprefix("data: ") for block in raw.split("\n\n") if block]
    return [d if d == "[DONE]" else json.loads(d) for d in data]


async def test_a_fallback_answers_when_the_provider_fails(api, alice, cloudflare, upstream):
    await sync_to_async(_fall_back)(FAILING, LLAMA)

    response = await _chat(api, alice, FAILING)

    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Echo: hello there"
    # The response names the model that answered, not the one that failed.
    assert body["model"] == LLAMA
    assert _models_called(upstream) == [FAILING, LLAMA]


async def test_the_record_of_the_answer_names_the_model_that_answered_and_the_one_asked_for(
    api, alice, cloudflare
):
    await sync_to_async(_fall_back)(FAILING, LLAMA)

    await _chat(api, alice, FAILING)

    # After the failed attempt's own record.
    _, record = await _records()
    assert (record.model, record.requested_model) == (LLAMA, FAILING)
    assert record.status == UsageRecord.OK
    assert record.total_tokens == 5


async def test_a_failed_candidate_that_read_the_prompt_leaves_its_own_record_at_its_price(
    api, alice, cloudflare
):
    await sync_to_async(_fall_back)(FAILING, LLAMA)
    await Model.objects.filter(name=FAILING).aupdate(input_price=Decimal("2000"))
    await Model.objects.filter(name=LLAMA).aupdate(input_price=Decimal("1000"))

    response = await _chat(api, alice, FAILING)

    failed, answered = await _records()
    assert (failed.model, failed.status, failed.http_status) == (
        FAILING,
        UsageRecord.UPSTREAM_ERROR,
        502,
    )
    # The prompt as the gateway counts it (11 characters, 3 tokens), at the failed
    # model's own price; no answer.
    assert failed.prompt_tokens == 3
    assert failed.completion_tokens == 0
    assert failed.tokens_estimated
    assert failed.cost == failed.prompt_tokens * Decimal("2000") / 10**6
    assert (answered.model, answered.status) == (LLAMA, UsageRecord.OK)
    assert failed.request_id == answered.request_id == response["x-request-id"]
    assert failed.requested_model == answered.requested_model == FAILING


class RefusingFailedAttempts(DatabaseStore):
    """A database that refuses the records of failed attempts until `accepting` is set, as
    it would a record at fault (not as an unavailable database: the others are written)."""

    def __init__(self):
        self.accepting = threading.Event()

    def add(self, records):
        if not self.accepting.is_set() and any(
            fields["status"] == UsageRecord.UPSTREAM_ERROR for fields in records
        ):
            raise IntegrityError("refused for the test")
        return super().add(records)


@pytest.fixture
def refusing_store(settings):
    # No retry within the test: only the writing at exit writes what the writer kept.
    settings.USAGE_WRITE_RETRY_SECONDS = 600
    store = writer.store = RefusingFailedAttempts()
    yield store
    store.accepting.set()
    writer.store = DatabaseStore()
    writer.shutdown(timeout=5)
    writer.store = None


async def test_a_fallback_answers_while_the_failed_candidates_record_waits_to_be_written(
    api, alice, cloudflare, upstream, refusing_store
):
    await sync_to_async(_fall_back)(FAILING, LLAMA)

    response = await _chat(api, alice, FAILING)

    # The client waits for no write of the failed attempt's record, and no failure of it
    # reaches the client: the writer keeps the record.
    assert response.status_code == 200
    assert _models_called(upstream) == [FAILING, LLAMA]
    [answered] = await _records()
    assert answered.model == LLAMA
    # Written at exit at the latest (SIGTERM under daphne runs the same shutdown).
    refusing_store.accepting.set()
    await asyncio.to_thread(writer.shutdown, 5)
    # After the answer's record: the attempt's was written later.
    _, failed = await _records()
    assert (failed.model, failed.status) == (FAILING, UsageRecord.UPSTREAM_ERROR)
    assert failed.request_id == answered.request_id


async def test_a_streams_failed_candidate_leaves_its_own_record(api, alice, cloudflare):
    await sync_to_async(_fall_back)(FAILING, LLAMA)

    response = await _chat(api, alice, FAILING, stream=True)
    await _events(response)

    failed, answered = await _records()
    assert (failed.model, failed.status, failed.stream) == (
        FAILING,
        UsageRecord.UPSTREAM_ERROR,
        True,
    )
    assert failed.prompt_tokens == 3
    assert (answered.model, answered.status) == (LLAMA, UsageRecord.OK)


async def test_a_candidate_that_refused_before_reading_the_prompt_leaves_no_record(
    api, alice, cloudflare
):
    # Workers AI's 3040 (a 429, out of capacity): the model never ran.
    await sync_to_async(_fall_back)(LIMITED, LLAMA)

    await _chat(api, alice, LIMITED)

    [record] = await _records()
    assert (record.model, record.status) == (LLAMA, UsageRecord.OK)


async def test_fallbacks_are_tried_in_order_of_position(api, alice, cloudflare, upstream):
    await sync_to_async(_fall_back)(FAILING, LIMITED, LLAMA)

    response = await _chat(api, alice, FAILING)

    assert response.status_code == 200
    assert _models_called(upstream) == [FAILING, LIMITED, LLAMA]


async def test_a_rate_limited_provider_falls_back(api, alice, cloudflare, upstream):
    await sync_to_async(_fall_back)(LIMITED, LLAMA)

    response = await _chat(api, alice, LIMITED)

    assert response.status_code == 200
    assert _models_called(upstream) == [LIMITED, LLAMA]


async def test_a_provider_that_times_out_falls_back(api, alice, cloudflare, upstream, settings):
    # Far below the hang's 30 s; far above what the fallback takes on a loaded machine,
    # since it bounds the fallback's call too.
    settings.UPSTREAM_TIMEOUT = 2
    await sync_to_async(_fall_back)("@cf/test/hang", LLAMA)

    response = await _chat(api, alice, "@cf/test/hang")

    assert response.status_code == 200
    assert response.json()["model"] == LLAMA


async def test_a_refused_request_does_not_fall_back(api, alice, cloudflare, upstream):
    await sync_to_async(_fall_back)("@cf/test/bad-request", LLAMA)

    response = await _chat(api, alice, "@cf/test/bad-request")

    assert response.status_code == 400
    assert _models_called(upstream) == ["@cf/test/bad-request"]
    [record] = await _records()
    assert record.status == UsageRecord.CLIENT_ERROR


async def test_when_every_model_fails_the_last_error_is_answered_and_recorded(
    api, alice, cloudflare, upstream
):
    await sync_to_async(_fall_back)(FAILING, LIMITED)

    response = await _chat(api, alice, FAILING)

    # The rate-limited model answers Workers AI's 3040: out of capacity, a 503.
    assert response.status_code == 503
    assert _models_called(upstream) == [FAILING, LIMITED]
    # The failed attempt that read the prompt, then the request's own record.
    _, record = await _records()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.http_status == 503
    # Of the model whose error it records, under the name the client asked for.
    assert (record.model, record.requested_model) == (LIMITED, FAILING)


async def test_a_stream_falls_back_before_its_first_event(api, alice, cloudflare, upstream):
    await sync_to_async(_fall_back)(FAILING, LLAMA)

    response = await _chat(api, alice, FAILING, stream=True)

    assert response.status_code == 200
    events = await _events(response)
    chunks = events[:-1]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == (
        "Echo: hello there"
    )
    assert {c["model"] for c in chunks} == {LLAMA}
    _, record = await _records()
    assert (record.model, record.requested_model, record.stream) == (LLAMA, FAILING, True)


async def test_a_stream_cut_after_its_first_event_does_not_fall_back(
    api, alice, cloudflare, upstream
):
    await sync_to_async(_fall_back)("@cf/test/cut-stream", LLAMA)

    response = await _chat(api, alice, "@cf/test/cut-stream", stream=True)

    events = await _events(response)
    assert "error" in events[-2]
    assert events[-1] == "[DONE]"
    assert _models_called(upstream) == ["@cf/test/cut-stream"]


async def test_a_fallback_can_be_on_another_provider(
    api, alice, cloudflare, openai_upstream, upstream
):
    await sync_to_async(_fall_back)(FAILING, "gpt-test-mini")

    response = await _chat(api, alice, FAILING)

    assert response.status_code == 200
    assert response.json()["model"] == "gpt-test-mini"
    _, record = await _records()
    assert (record.model, record.provider) == ("gpt-test-mini", "openai-fake")


async def test_a_disabled_fallback_is_skipped(api, alice, cloudflare, upstream):
    await sync_to_async(_fall_back)(FAILING, "@cf/test/slow", LLAMA)
    await Model.objects.filter(name="@cf/test/slow").aupdate(enabled=False)

    await _chat(api, alice, FAILING)

    assert _models_called(upstream) == [FAILING, LLAMA]


async def test_a_fallback_outside_the_keys_models_is_skipped(api, cloudflare, upstream):
    key, secret = await sync_to_async(ApiKey.objects.create_key)(
        name="dave", allowed_models=[FAILING]
    )
    await sync_to_async(_fall_back)(FAILING, LLAMA)

    response = await _chat(api, Persona(key, secret), FAILING)

    assert response.status_code == 502
    assert _models_called(upstream) == [FAILING]


async def test_a_fallback_that_takes_no_images_is_skipped_for_an_image(
    api, alice, cloudflare, upstream
):
    await Model.objects.filter(name=FAILING).aupdate(accepts_images=True)
    await sync_to_async(_fall_back)(FAILING, LLAMA)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}

    response = await _chat(api, alice, FAILING, messages=[{"role": "user", "content": [image]}])

    assert response.status_code == 502
    assert _models_called(upstream) == [FAILING]


def test_the_admin_adds_fallbacks_inline_in_order(admin_client, cloudflare):
    model = Model.objects.get(name=FAILING)
    page = admin_client.get(f"/admin/completions/model/{model.pk}/change/")
    assert "fallback_links-TOTAL_FORMS" in page.content.decode()

    response = admin_client.post(
        f"/admin/completions/model/{model.pk}/change/",
        {
            "name": model.name,
            "provider": model.provider_id,
            "task": model.task,
            "description": "",
            "enabled": "on",
            "aliases-TOTAL_FORMS": "0",
            "aliases-INITIAL_FORMS": "0",
            "fallback_links-TOTAL_FORMS": "2",
            "fallback_links-INITIAL_FORMS": "0",
            "fallback_links-0-position": "2",
            "fallback_links-0-fallback": Model.objects.get(name=LLAMA).pk,
            "fallback_links-1-position": "1",
            "fallback_links-1-fallback": Model.objects.get(name=LIMITED).pk,
        },
    )

    assert response.status_code == 302
    links = ModelFallback.objects.filter(model=model).order_by("position")
    assert [link.fallback.name for link in links] == [LIMITED, LLAMA]


@pytest.mark.parametrize(
    ("model_name", "fallback_name", "message"),
    [
        (FAILING, FAILING, "its own fallback"),
        (FAILING, "@cf/baai/bge-small-en-v1.5", "must do what the model does"),
        ("@cf/baai/bge-small-en-v1.5", LLAMA, "another space"),
    ],
)
def test_the_admin_refuses_a_fallback_that_cannot_stand_in(
    admin_client, cloudflare, model_name, fallback_name, message
):
    model = Model.objects.get(name=model_name)

    response = admin_client.post(
        f"/admin/completions/model/{model.pk}/change/",
        {
            "name": model.name,
            "provider": model.provider_id,
            "task": model.task,
            "description": "",
            "enabled": "on",
            "aliases-TOTAL_FORMS": "0",
            "aliases-INITIAL_FORMS": "0",
            "fallback_links-TOTAL_FORMS": "1",
            "fallback_links-INITIAL_FORMS": "0",
            "fallback_links-0-position": "0",
            "fallback_links-0-fallback": Model.objects.get(name=fallback_name).pk,
        },
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ModelFallback.objects.exists()


def test_a_chat_with_fallbacks_reserves_the_prompts_of_the_candidates_that_may_fail(cloudflare):
    failing, llama = Model.objects.get(name=FAILING), Model.objects.get(name=LLAMA)
    failing.input_price, failing.output_price = Decimal("2000"), Decimal("2000")
    llama.input_price, llama.output_price = Decimal("1000"), Decimal("1000")
    data = {"messages": MESSAGES, "max_tokens": 10}
    prompt = worst_case.chat_prompt_tokens(data)

    worst = worst_case.chat(data, [failing, llama])

    # The dearer way: the failing model's prompt and then Llama's answer, rather than the
    # failing model's whole answer.
    assert worst.tokens == prompt + prompt + 10
    assert worst.cost == cost_of(failing, prompt, 0) + cost_of(llama, prompt, 10)
