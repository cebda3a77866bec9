"""Health, readiness, Prometheus metrics and structured logs."""

import json
import logging
import logging.config
import sys

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache
from prometheus_client.parser import text_string_to_metric_families

from gateway.logs import JsonFormatter, RequestIdFilter, request_id_var
from gateway.memo import cache_kind

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "@cf/meta/llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "hi"}]}


def _sample(text, name, **labels):
    """Return the sum of the series of `name` whose labels include these, in Prometheus text."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def _metrics(api):
    response = await api.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


async def test_healthz_answers_without_a_key(api):
    response = await api.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_says_the_database_and_cache_answer(api):
    response = await api.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "cache": "ok",
        # Which kind: tests/test_readiness.py.
        "cache_kind": cache_kind(),
    }


async def test_readyz_answers_503_naming_a_cache_that_fails(api, monkeypatch):
    async def broken(*args, **kwargs):
        raise ConnectionError("cache is down")

    monkeypatch.setattr(cache, "aset", broken)

    response = await api.get("/readyz")

    assert response.status_code == 503
    assert response.json()["cache"] == "unavailable"
    assert response.json()["database"] == "ok"


async def test_metrics_count_requests_tokens_and_first_tokens_by_model(api, alice, cloudflare):
    model = "@cf/meta/llama-3.1-8b-instruct"
    before = await _metrics(api)

    await api.post(
        "/v1/chat/completions", data=BODY, content_type="application/json", headers=alice.headers
    )
    stream = await api.post(
        "/v1/chat/completions",
        data={**BODY, "stream": True},
        content_type="application/json",
        headers=alice.headers,
    )
    during = await _metrics(api)
    [chunk async for chunk in stream.streaming_content]
    after = await _metrics(api)

    def grew(name, **labels):
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert grew("gateway_requests_total", endpoint="v1/chat/completions", status="200") == 2
    assert grew("gateway_model_requests_total", model=model, status="ok") == 2
    # The fake answers "Echo: hi": 2 completion tokens a call.
    assert grew("gateway_tokens_total", model=model, kind="completion") == 4
    assert grew("gateway_time_to_first_token_seconds_count", model=model) == 2
    open_streams = [_sample(m, "gateway_open_streams") for m in (before, during, after)]
    assert open_streams[1] == open_streams[0] + 1
    assert open_streams[2] == open_streams[0]


async def test_metrics_count_upstream_errors_by_provider(api, alice, cloudflare):
    before = await _metrics(api)

    await api.post(
        "/v1/chat/completions",
        data={**BODY, "model": "@cf/test/fail-500"},
        content_type="application/json",
        headers=alice.headers,
    )
    after = await _metrics(api)

    name = "gateway_upstream_errors_total"
    assert (
        _sample(after, name, provider="cloudflare")
        == _sample(before, name, provider="cloudflare") + 1
    )


async def test_metrics_ask_for_the_metrics_token_when_one_is_set(api, settings):
    settings.METRICS_TOKEN = "scrape-secret"

    refused = await api.get("/metrics")
    allowed = await api.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})

    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    assert allowed.status_code == 200


def test_json_logs_carry_the_request_id_and_extra_fields():
    record = logging.LogRecord("gateway", logging.INFO, __file__, 1, "served %s", ("x",), None)
    record.model = "echo"
    token = request_id_var.set("req_abc")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)

    entry = json.loads(JsonFormatter().format(record))

    assert entry["message"] == "served x"
    assert entry["request_id"] == "req_abc"
    assert entry["model"] == "echo"
    assert entry["level"] == "INFO"


async def test_log_lines_of_a_request_carry_its_id(api, alice, cloudflare, caplog):
    caplog.handler.addFilter(RequestIdFilter())

    response = await api.post(
        "/v1/chat/completions",
        data={**BODY, "model": "@cf/test/fail-500"},
        content_type="application/json",
        headers=alice.headers,
    )

    ids = {getattr(r, "request_id", None) for r in caplog.records if r.levelno >= logging.WARNING}
    assert response["x-request-id"] in ids


# A line that would pass for a record of its own in text logs.
FORGED = "2026-11-30 09:00:00,000 INFO gateway [-] key bob granted admin"


def _text_formatter():
    """Return the formatter of LOG_FORMAT=text, as the settings configure it."""
    configurator = logging.config.DictConfigurator(settings.LOGGING)
    # A copy: the configurator takes "()" out of the dictionary it is given.
    return configurator.configure_formatter(dict(settings.LOGGING["formatters"]["text"]))


async def test_text_logs_keep_an_upstream_message_on_one_line(
    api, alice, cloudflare, monkeypatch, caplog
):
    # Workers AI's 5016 (model refused to the account) is logged at ERROR with its message.
    message = f"Denied\r\n{FORGED}\x1b[2K\u2028{FORGED}"

    def answer(request):
        errors = [{"code": 5016, "message": message}]
        return httpx.Response(403, json={"result": None, "success": False, "errors": errors})

    monkeypatch.setattr(
        "completions.providers.base.get_client",
        lambda: httpx.AsyncClient(transport=httpx.MockTransport(answer)),
    )

    response = await api.post(
        "/v1/chat/completions", data=BODY, content_type="application/json", headers=alice.headers
    )

    assert response.status_code == 502
    [line] = [_text_formatter().format(r) for r in caplog.records if "Denied" in r.getMessage()]
    assert "Denied\\r\\n2026-11-30" in line
    assert not {"\r", "\n", "\x1b", "\u2028"} & set(line)


def test_text_logs_indent_every_line_of_a_traceback():
    try:
        raise ValueError(f"upstream said\n{FORGED}")
    except ValueError:
        record = logging.LogRecord("gateway", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    record.request_id = None
    # Another handler (pytest's, an e-mail handler) may format the record first.
    logging.Formatter().format(record)

    first, *rest = _text_formatter().format(record).splitlines()

    assert first.endswith("failed")
    assert rest
    # Only a record starts at the beginning of a line; its traceback is set in.
    assert all(line.startswith(" ") for line in rest)
