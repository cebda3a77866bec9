"""The usage writer under daphne, with a database that is locked for a while
(tests/usage_stores.py's LockedDatabase, named in USAGE_WRITER_STORE).

A stream whose record cannot be written ends all the same, with an error event and
[DONE], and the record is written once the database is free again, or at the latest when
the process is stopped with SIGTERM.
"""

import json
import time

import httpx
import pytest

from tests import fake_upstream
from tests.live_server import LiveGateway

LLAMA = "@cf/meta/llama-3.1-8b-instruct"
BODY = {"model": LLAMA, "stream": True, "messages": [{"role": "user", "content": "hello"}]}

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, Provider

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{base_url}", account_id="{account}",
    api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
)
Model.objects.create(name="{llama}", provider=cf)
key, secret = ApiKey.objects.create_key(name="alice")
print("secret", secret)
"""

pytestmark = pytest.mark.integration


def _live(upstream, folder, locked_seconds, retry_seconds):
    setup = SETUP.format(
        base_url=upstream.cloudflare_base_url, account=fake_upstream.CLOUDFLARE_ACCOUNT, llama=LLAMA
    )
    return LiveGateway(
        folder,
        setup,
        GATEWAY_PROVIDER_TEST_CF_TOKEN=fake_upstream.CLOUDFLARE_TOKEN,
        DJANGO_SETTINGS_MODULE="tests.settings_usage_store",
        TEST_USAGE_WRITER_STORE="tests.usage_stores.LockedDatabase",
        TEST_USAGE_LOCKED_SECONDS=str(locked_seconds),
        USAGE_WRITE_RETRY_SECONDS=str(retry_seconds),
    )


def _stream(live):
    """Stream a chat to its end; return the request id and the data of its events."""
    headers = {"Authorization": f"Bearer {live.printed['secret']}"}
    # A stream that never ends fails here on the read timeout (seconds), not by hanging.
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST", f"{live.base_url}/v1/chat/completions", json=BODY, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        return response.headers["x-request-id"], events


def test_a_stream_whose_record_cannot_be_written_ends_with_an_error_and_done(upstream, tmp_path):
    with _live(upstream, tmp_path, locked_seconds=1.5, retry_seconds=0.3) as live:
        request_id, events = _stream(live)

        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["type"] == "server_error"
        assert error["message"] == "The gateway failed to handle the request."
        # The answer itself came before the failure.
        text = "".join(
            json.loads(event)["choices"][0]["delta"].get("content", "")
            for event in events[:-2]
            if "choices" in json.loads(event)
        )
        assert text == "Echo: hello"
        # Written once the database is free again, as the answer it had.
        record = live.usage_record(request_id, timeout=10)
        assert record["status"] == "ok"
        assert (record["prompt_tokens"], record["completion_tokens"]) == (1, 2)


def test_records_still_held_at_sigterm_are_written_before_the_process_ends(upstream, tmp_path):
    # No retry before the process is stopped: only the writing at exit can save the record.
    live = _live(upstream, tmp_path, locked_seconds=0.5, retry_seconds=600)
    with live:
        request_id, events = _stream(live)
        assert "error" in json.loads(events[-2])
        # The database is free again, but nothing writes to it until the exit.
        time.sleep(1)
        assert live.usage_records() == []
    # Leaving the block sends daphne SIGTERM and waits for it to end.

    (record,) = live.usage_records()
    assert record["request_id"] == request_id
    assert record["status"] == "ok"
