"""Lists a client sends are measured before their items are validated.

A body of 100,000 tiny messages is refused for its length at once, not after 100,000
messages have been validated on the event loop (seconds during which every other request,
/healthz included, waits). Each test sends items that are all invalid: an answer naming the
list's length, not its first item, shows that the items were never looked at.
"""

import threading

import pytest

from completions import serializers
from completions.serializers import (
    MAX_CONTENT_PARTS,
    MAX_EMBEDDING_INPUTS,
    MAX_MESSAGES,
    MAX_PROMPTS,
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    ChatCompletionSerializer,
    CompletionSerializer,
    EmbeddingSerializer,
    MessageSerializer,
    validate_body,
)
from gateway.errors import InvalidRequest
from tests.conftest import LLAMA

MANY = 100_000
USER = {"role": "user", "content": "hello there"}
# Not a message, a tool, a tool call, a content part, a prompt or an input.
INVALID = {"not": "valid"}


def _refusal(serializer_class, body):
    with pytest.raises(InvalidRequest) as refused:
        validate_body(serializer_class, body)
    return refused.value


def test_it_refuses_100000_messages_without_validating_one(monkeypatch):
    validated = 0
    run_validation = MessageSerializer.run_validation

    def counting(self, data):
        nonlocal validated
        validated += 1
        return run_validation(self, data)

    monkeypatch.setattr(MessageSerializer, "run_validation", counting)

    error = _refusal(ChatCompletionSerializer, {"model": LLAMA, "messages": [USER] * MANY})

    assert error.param == "messages"
    assert str(MAX_MESSAGES) in error.message
    assert validated == 0


def test_it_names_the_length_of_messages_that_are_all_invalid():
    error = _refusal(ChatCompletionSerializer, {"model": LLAMA, "messages": [INVALID] * MANY})

    assert error.param == "messages"
    assert str(MAX_MESSAGES) in error.message


def test_it_still_validates_each_message_of_a_list_within_the_limit():
    error = _refusal(ChatCompletionSerializer, {"model": LLAMA, "messages": [USER, INVALID]})

    assert error.param == "messages[1].role"


def test_it_refuses_too_many_tools_by_their_number():
    body = {"model": LLAMA, "messages": [USER], "tools": [INVALID] * MANY}

    error = _refusal(ChatCompletionSerializer, body)

    assert error.param == "tools"
    assert str(MAX_TOOLS) in error.message


def test_it_refuses_too_many_tool_calls_in_one_message_by_their_number():
    calls = {"role": "assistant", "content": None, "tool_calls": [INVALID] * MANY}

    error = _refusal(ChatCompletionSerializer, {"model": LLAMA, "messages": [calls]})

    assert error.param == "messages[0].tool_calls"
    assert str(MAX_TOOL_CALLS) in error.message


def test_it_refuses_too_many_content_parts_in_one_message_by_their_number():
    parts = {"role": "user", "content": [INVALID] * MANY}

    error = _refusal(ChatCompletionSerializer, {"model": LLAMA, "messages": [parts]})

    assert error.param == "messages[0].content"
    assert str(MAX_CONTENT_PARTS) in error.message


def test_it_accepts_as_many_content_parts_as_the_limit():
    part = {"type": "text", "text": "x"}
    message = {"role": "user", "content": [part] * MAX_CONTENT_PARTS}

    validate_body(ChatCompletionSerializer, {"model": LLAMA, "messages": [message]})


def test_it_refuses_too_many_prompts_by_their_number():
    error = _refusal(CompletionSerializer, {"model": LLAMA, "prompt": [INVALID] * MANY})

    assert error.param == "prompt"
    assert str(MAX_PROMPTS) in error.message


def test_it_refuses_too_many_embedding_inputs_by_their_number():
    error = _refusal(EmbeddingSerializer, {"model": LLAMA, "input": [INVALID] * MANY})

    assert error.param == "input"
    assert str(MAX_EMBEDDING_INPUTS) in error.message


def test_it_refuses_too_many_stop_sequences_by_their_number():
    body = {"model": LLAMA, "messages": [USER], "stop": [INVALID] * MANY}

    error = _refusal(ChatCompletionSerializer, body)

    assert error.param == "stop"
    assert "4" in error.message


def test_every_list_of_the_chat_body_has_a_bound():
    """A list field added later without a bound would bring the stall back."""
    unbounded = [
        f"{serializer.__class__.__name__}.{name}"
        for serializer in _serializers(serializers.ChatCompletionSerializer())
        for name, field in serializer.fields.items()
        if isinstance(field, serializers.serializers.ListField) and field.max_length is None
    ]

    assert unbounded == []


def _serializers(serializer):
    yield serializer
    for field in serializer.fields.values():
        child = getattr(field, "child", field)
        if isinstance(child, serializers.serializers.Serializer):
            yield from _serializers(child)


@pytest.mark.django_db(transaction=True)
async def test_the_api_answers_100000_messages_with_a_400_naming_messages(
    api, alice, cloudflare, upstream
):
    body = {"model": LLAMA, "messages": [INVALID] * MANY}

    response = await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=alice.headers
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == "messages"
    assert str(MAX_MESSAGES) in error["message"]
    assert upstream.requests == []


def _on_threads(monkeypatch):
    """Record the thread each message is validated on."""
    threads = []
    run_validation = MessageSerializer.run_validation

    def recording(self, data):
        threads.append(threading.get_ident())
        return run_validation(self, data)

    monkeypatch.setattr(MessageSerializer, "run_validation", recording)
    return threads


@pytest.mark.django_db(transaction=True)
async def test_a_body_of_many_items_is_validated_off_the_event_loop(
    api, alice, cloudflare, monkeypatch
):
    threads = _on_threads(monkeypatch)
    # Within every limit, but thousands of nested serializers to run.
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    history = [{"role": "assistant", "content": None, "tool_calls": [call] * 10}] * 100
    body = {"model": LLAMA, "messages": [*history, {"role": "user", "content": 1}]}

    response = await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=alice.headers
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == "messages[100].content"
    assert threads and threading.get_ident() not in threads


@pytest.mark.django_db(transaction=True)
async def test_a_body_of_a_few_items_is_validated_on_the_event_loop(
    api, alice, cloudflare, monkeypatch
):
    threads = _on_threads(monkeypatch)
    body = {"model": LLAMA, "messages": [USER] * 3}

    response = await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=alice.headers
    )

    assert response.status_code == 200, response.content
    # No thread hop for an ordinary body.
    assert set(threads) == {threading.get_ident()}
