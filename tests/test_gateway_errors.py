"""A failure of the gateway's own (a bug, not the provider's failure): recorded with the
status gateway_error and counted in gateway_internal_errors_total, not as the provider's;
a stream it cuts after its head ends with an error event and [DONE].

The bug is injected where the gateway reads the upstream's usage (Usage.reported), which a
stream reaches only at its last event, after the head and the answer's text.
"""

import json

import pytest
from prometheus_client import REGISTRY

from apikeys.models import UsageRecord
from completions.providers.base import Usage
from tests.limited_keys import chat, new_key, read_stream

pytestmark = pytest.mark.django_db(transaction=True)


class Bug(Exception):
    """A failure no code of the gateway's expects."""


@pytest.fixture
def bug(monkeypatch):
    def reported(raw):
        # Only for a usage object: a stream's events before its last carry none.
        if raw is not None:
            raise Bug("a bug of the gateway's")

    monkeypatch.setattr(Usage, "reported", reported)


def _count(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0


async def _record():
    (record,) = [record async for record in UsageRecord.objects.all()]
    return record


async def test_a_gateway_bug_is_recorded_as_the_gateways_error_not_the_providers(
    api, cloudflare, bug
):
    headers = await new_key()
    ours = _count("gateway_internal_errors_total", code="Bug")
    theirs = _count("gateway_upstream_errors_total", provider="cloudflare", code="Bug")

    with pytest.raises(Bug):
        # Django's test client raises what the view raised; a client gets a 500.
        await chat(api, headers)

    record = await _record()
    assert record.status == UsageRecord.GATEWAY_ERROR
    assert record.http_status == 500
    assert _count("gateway_internal_errors_total", code="Bug") == ours + 1
    assert _count("gateway_upstream_errors_total", provider="cloudflare", code="Bug") == theirs


async def test_a_stream_a_gateway_bug_cuts_after_its_head_ends_with_an_error_and_done(
    api, cloudflare, bug
):
    headers = await new_key()
    ours = _count("gateway_internal_errors_total", code="Bug")

    response = await chat(api, headers, stream=True)
    events = [
        line[6:] for line in (await read_stream(response)).splitlines() if line.startswith("data: ")
    ]

    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error"
    # Nothing of the bug itself reaches the client.
    assert "bug" not in error["message"]
    assert any("Echo" in event for event in events[:-2])
    record = await _record()
    assert record.status == UsageRecord.GATEWAY_ERROR
    assert record.stream is True
    assert _count("gateway_internal_errors_total", code="Bug") == ours + 1
