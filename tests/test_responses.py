"""POST /v1/responses (OpenAI's Responses API), translated to and from chat completions,
and the stored responses behind previous_response_id, GET and DELETE /v1/responses/{id}."""

import datetime
import json

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from apikeys.models import UsageRecord
from completions.models import Model, StoredResponse
from tests import workers_ai_models
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
}
WEATHER_FUNCTION = {key: value for key, value in WEATHER.items() if key != "type"}
SCHEMA = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
KIMI = "@cf/moonshotai/kimi-k2.6"


async def _create(api, persona, **body):
    body.setdefault("model", LLAMA)
    return await api.post(
        "/v1/responses", data=body, content_type="application/json", headers=persona.headers
    )


def _sent(upstream):
    return [r["json"] for r in upstream.requests if "/ai/run/" in r["path"]]


def _events(body):
    """Return the (event name, data) pairs of a text/event-stream body."""
    events = []
    for block in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            events.append((lines.get("event"), json.loads(lines["data"])))
    return events


async def _stream(api, persona, **body):
    response = await _create(api, persona, stream=True, **body)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    return _events(b"".join([part async for part in response.streaming_content]))


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


@sync_to_async
def _stored(response_id):
    return StoredResponse.objects.filter(id=response_id).first()


async def test_it_answers_a_string_input_with_a_response_object(api, alice, cloudflare, upstream):
    response = await _create(api, alice, input="hello there world")

    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("resp_")
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert body["model"] == LLAMA
    [message] = body["output"]
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["id"].startswith("msg_")
    assert message["content"] == [
        {
            "type": "output_text",
            "text": "Echo: hello there world",
            "annotations": [],
            "logprobs": [],
        }
    ]
    assert body["usage"] == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }
    assert _sent(upstream)[0]["messages"] == [{"role": "user", "content": "hello there world"}]


async def test_it_sends_instructions_first_and_the_item_list_as_messages(
    api, alice, cloudflare, upstream
):
    response = await _create(
        api,
        alice,
        instructions="Be brief.",
        input=[
            {"role": "user", "content": "first question"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "first answer"}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "second question"}],
            },
        ],
        max_output_tokens=50,
        temperature=0.5,
        top_p=0.9,
    )

    assert response.status_code == 200
    assert response.json()["instructions"] == "Be brief."
    [sent] = _sent(upstream)
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (50, 0.5, 0.9)


async def test_it_sends_input_images_as_image_parts_to_a_model_that_takes_them(
    api, alice, openai_upstream, upstream
):
    await Model.objects.filter(name="gpt-test-mini").aupdate(accepts_images=True)
    image = "data:image/png;base64,iVBORw0KGgo="
    content = [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": image, "detail": "low"},
    ]

    response = await _create(
        api, alice, model="gpt-test-mini", input=[{"role": "user", "content": content}]
    )

    assert response.status_code == 200
    [sent] = [r["json"] for r in upstream.requests if r["path"].endswith("/chat/completions")]
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
            ],
        }
    ]


async def test_it_refuses_an_input_image_for_a_model_that_takes_none(
    api, alice, cloudflare, upstream
):
    content = [{"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]

    response = await _create(api, alice, input=[{"role": "user", "content": content}])

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"
    assert _sent(upstream) == []


async def test_it_answers_with_a_function_call_and_takes_its_output_back(
    api, alice, cloudflare, upstream
):
    first = await _create(api, alice, input="Paris", tools=[WEATHER])

    [call] = first.json()["output"]
    assert call["type"] == "function_call"
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"text": "Paris"}
    assert call["call_id"] and call["id"].startswith("fc_")
    assert _sent(upstream)[0]["tools"][0]["function"]["name"] == "get_weather"

    second = await _create(
        api,
        alice,
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Paris"},
            call,
            {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"},
        ],
    )

    assert second.status_code == 200
    assert second.json()["output"][0]["content"][0]["text"] == "Echo: sunny"
    messages = _sent(upstream)[1]["messages"]
    assert messages[1]["role"] == "assistant"
    assert messages[1]["tool_calls"][0]["id"] == call["call_id"]
    assert messages[2] == {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny"}


async def test_it_sends_a_named_tool_choice_as_chat_completions_names_it(
    api, alice, openai_upstream, upstream
):
    await _create(
        api,
        alice,
        model="gpt-test-mini",
        input="Paris",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    )

    [sent] = [r["json"] for r in upstream.requests if r["path"].endswith("/chat/completions")]
    assert sent["tools"] == [{"type": "function", "function": WEATHER_FUNCTION}]
    assert sent["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }


async def test_it_passes_chat_settings_on_and_echoes_its_metadata(
    api, alice, openai_upstream, upstream
):
    response = await _create(
        api,
        alice,
        model="gpt-test-mini",
        input="hello",
        tools=[WEATHER],
        parallel_tool_calls=False,
        user="user-42",
        text={"format": {"type": "json_object"}},
        metadata={"ticket": "T-1"},
    )

    [sent] = [r["json"] for r in upstream.requests if r["path"].endswith("/chat/completions")]
    assert (sent["parallel_tool_calls"], sent["user"]) == (False, "user-42")
    assert sent["response_format"] == {"type": "json_object"}
    body = response.json()
    assert body["metadata"] == {"ticket": "T-1"}
    assert (body["parallel_tool_calls"], body["user"]) == (False, "user-42")
    fetched = await api.get(f"/v1/responses/{body['id']}", headers=alice.headers)
    assert fetched.json()["metadata"] == {"ticket": "T-1"}


async def test_it_holds_the_answer_to_a_json_schema_from_text_format(
    api, alice, cloudflare, upstream
):
    response = await _create(
        api,
        alice,
        input="Tell me",
        text={"format": {"type": "json_schema", "name": "echo", "schema": SCHEMA}},
    )

    assert _sent(upstream)[0]["response_format"] == {"type": "json_schema", "json_schema": SCHEMA}
    body = response.json()
    assert json.loads(body["output"][0]["content"][0]["text"]) == {"echo": "Tell me"}
    assert body["text"]["format"]["type"] == "json_schema"


async def test_it_streams_openais_typed_events_in_order(api, alice, cloudflare, upstream):
    events = await _stream(api, alice, input="one two three")

    names = [name for name, _ in events]
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    deltas = [data for name, data in events if name == "response.output_text.delta"]
    assert "".join(d["delta"] for d in deltas) == "Echo: one two three"
    item_id = events[2][1]["item"]["id"]
    assert {d["item_id"] for d in deltas} == {item_id}
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed"
    assert completed["output"][0]["content"][0]["text"] == "Echo: one two three"
    assert completed["usage"]["output_tokens"] == 4
    assert completed["id"] == events[0][1]["response"]["id"]


async def test_it_streams_a_function_call_as_argument_deltas(api, alice, cloudflare, upstream):
    events = await _stream(api, alice, input="Paris", tools=[WEATHER])

    added = [data for name, data in events if name == "response.output_item.added"]
    assert [a["item"]["type"] for a in added] == ["function_call"]
    deltas = [d["delta"] for name, d in events if name == "response.function_call_arguments.delta"]
    [done] = [d for name, d in events if name == "response.function_call_arguments.done"]
    assert json.loads("".join(deltas)) == json.loads(done["arguments"]) == {"text": "Paris"}
    [call] = events[-1][1]["response"]["output"]
    assert (call["name"], call["call_id"]) == ("get_weather", added[0]["item"]["call_id"])


async def test_it_streams_reasoning_as_a_reasoning_item_before_the_message(
    api, alice, cloudflare, upstream
):
    await sync_to_async(_workers_ai_model)(cloudflare, KIMI)

    events = await _stream(api, alice, model=KIMI, input="hello there", reasoning={"effort": "low"})

    assert _sent(upstream)[0]["reasoning_effort"] == "low"
    output = events[-1][1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message"]
    assert output[0]["content"] == [
        {"type": "reasoning_text", "text": "Reasoning about: hello there"}
    ]
    reasoning = [d["delta"] for name, d in events if name == "response.reasoning_text.delta"]
    assert "".join(reasoning) == "Reasoning about: hello there"


async def test_it_says_a_response_cut_at_max_output_tokens_is_incomplete(api, alice, cloudflare):
    response = await _create(api, alice, input="one two three four", max_output_tokens=2)

    body = response.json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert body["output"][0]["content"][0]["text"] == "Echo: one"


async def test_it_ends_a_stream_cut_at_max_output_tokens_with_response_incomplete(
    api, alice, cloudflare
):
    events = await _stream(api, alice, input="one two three four", max_output_tokens=2)

    name, data = events[-1]
    assert name == "response.incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_it_ends_a_stream_the_upstream_cut_with_an_error_and_keeps_nothing(
    api, alice, cloudflare
):
    events = await _stream(api, alice, model="@cf/test/cut-stream", input="a b c d e f")

    assert [name for name, _ in events[-2:]] == ["error", "response.failed"]
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == events[-2][1]["message"]
    assert await _stored(failed["id"]) is None
    [record] = await _records()
    assert record.status == UsageRecord.UPSTREAM_ERROR


async def test_it_continues_a_conversation_from_a_previous_response(
    api, alice, cloudflare, upstream
):
    first = await _create(api, alice, input="Paris", tools=[WEATHER], instructions="Be brief.")
    call = first.json()["output"][0]

    second = await _create(
        api,
        alice,
        tools=[WEATHER],
        previous_response_id=first.json()["id"],
        input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}],
    )

    assert second.status_code == 200
    assert second.json()["previous_response_id"] == first.json()["id"]
    assert second.json()["output"][0]["content"][0]["text"] == "Echo: sunny"
    # The instructions of the first response are not carried over, as OpenAI does.
    assert _sent(upstream)[1]["messages"] == [
        {"role": "user", "content": "Paris"},
        {
            "role": "assistant",
            # Workers AI takes an empty string where chat has none.
            "content": "",
            "tool_calls": [
                {
                    "id": call["call_id"],
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny"},
    ]


async def test_it_continues_from_a_streamed_response(api, alice, cloudflare, upstream):
    events = await _stream(api, alice, input="first words")
    first_id = events[-1][1]["response"]["id"]

    response = await _create(api, alice, previous_response_id=first_id, input="more words")

    assert response.status_code == 200
    assert _sent(upstream)[1]["messages"] == [
        {"role": "user", "content": "first words"},
        {"role": "assistant", "content": "Echo: first words"},
        {"role": "user", "content": "more words"},
    ]


async def test_it_keeps_nothing_with_store_false(api, alice, cloudflare):
    response = await _create(api, alice, input="forget me", store=False)

    assert response.status_code == 200
    assert response.json()["store"] is False
    assert await _stored(response.json()["id"]) is None
    follow = await _create(api, alice, input="again", previous_response_id=response.json()["id"])
    assert follow.status_code == 404
    assert follow.json()["error"]["param"] == "previous_response_id"


async def test_it_retrieves_and_deletes_a_stored_response(api, alice, cloudflare):
    created = (await _create(api, alice, input="keep me")).json()

    fetched = await api.get(f"/v1/responses/{created['id']}", headers=alice.headers)
    assert fetched.status_code == 200
    assert fetched.json() == created

    deleted = await api.delete(f"/v1/responses/{created['id']}", headers=alice.headers)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": created["id"], "object": "response.deleted", "deleted": True}
    again = await api.get(f"/v1/responses/{created['id']}", headers=alice.headers)
    assert again.status_code == 404


async def test_it_answers_another_keys_response_as_not_found(api, alice, carol, cloudflare):
    created = (await _create(api, alice, input="mine")).json()

    fetched = await api.get(f"/v1/responses/{created['id']}", headers=carol.headers)
    deleted = await api.delete(f"/v1/responses/{created['id']}", headers=carol.headers)
    continued = await _create(api, carol, input="x", previous_response_id=created["id"])

    assert (fetched.status_code, deleted.status_code, continued.status_code) == (404, 404, 404)
    assert await _stored(created["id"]) is not None


async def test_it_refuses_a_read_key(api, bob, cloudflare):
    response = await _create(api, bob, input="hello")

    assert response.status_code == 403
    assert await _records() == []


async def test_it_leaves_one_usage_record_per_request(api, alice, cloudflare):
    await _create(api, alice, input="one two")
    await _stream(api, alice, input="three four")

    records = await _records()
    assert [(r.endpoint, r.stream, r.status) for r in records] == [
        ("/v1/responses", False, UsageRecord.OK),
        ("/v1/responses", True, UsageRecord.OK),
    ]
    assert [(r.prompt_tokens, r.completion_tokens) for r in records] == [(2, 3), (2, 3)]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
        ({"background": True}, "background"),
        ({"conversation": "conv_123"}, "conversation"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"tools": [{"type": "function", "name": "no spaces allowed"}]}, "tools[0].name"),
        ({"reasoning": {"effort": "enormous"}}, "reasoning.effort"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
    ],
)
async def test_it_refuses_what_it_cannot_honour_naming_the_parameter(
    api, alice, cloudflare, upstream, body, param
):
    body.setdefault("input", "hello")
    response = await _create(api, alice, **body)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert _sent(upstream) == []


async def test_clear_responses_removes_those_past_the_retention(api, alice, cloudflare, settings):
    created = (await _create(api, alice, input="old")).json()
    settings.RESPONSES_RETENTION_DAYS = 1
    await sync_to_async(_age)(created["id"], days=2)

    await sync_to_async(call_command)("clear_responses")

    assert await _stored(created["id"]) is None


def _age(response_id, days):
    StoredResponse.objects.filter(id=response_id).update(
        created_at=StoredResponse.objects.get(id=response_id).created_at
        - datetime.timedelta(days=days)
    )


def _workers_ai_model(provider, name):
    properties = workers_ai_models.properties(name)
    Model.objects.update_or_create(
        name=name,
        defaults={
            "provider": provider,
            "input_schema": workers_ai_models.schema(name)["input"],
            "output_schema": workers_ai_models.schema(name)["output"],
            "properties": properties,
        },
    )
