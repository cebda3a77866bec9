"""The official openai SDK's Responses API (client.responses) against daphne serving the gateway."""

import openai
import pydantic
import pytest

from tests.integration.conftest import GPT_OSS, LLAMA

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city.",
    "parameters": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}


class Echo(pydantic.BaseModel):
    echo: str


def test_it_answers_a_response_with_the_sdks_output_text_and_usage(client, gateway):
    response = client.responses.create(
        model=LLAMA, instructions="Be brief.", input="hello gateway", max_output_tokens=50
    )

    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == "Echo: hello gateway"
    # The fake counts words: 4 in the prompt (instructions included), 3 in the answer.
    assert (response.usage.input_tokens, response.usage.output_tokens) == (4, 3)
    record = gateway.usage_records()[-1]
    assert (record["endpoint"], record["model"], record["total_tokens"]) == (
        "/v1/responses",
        LLAMA,
        7,
    )


def test_it_runs_a_tool_call_and_continues_from_the_previous_response(client):
    first = client.responses.create(model=LLAMA, input="Paris", tools=[WEATHER])

    [call] = first.output
    assert (call.type, call.name, call.arguments) == (
        "function_call",
        "get_weather",
        '{"text": "Paris"}',
    )

    second = client.responses.create(
        model=LLAMA,
        tools=[WEATHER],
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )

    assert second.previous_response_id == first.id
    assert second.output_text == "Echo: sunny"


def test_it_streams_a_tool_call_and_continues_from_the_streamed_response(client):
    with client.responses.stream(model=LLAMA, input="Paris", tools=[WEATHER]) as stream:
        events = list(stream)
        first = stream.get_final_response()

    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-1] == "response.completed"
    [call] = first.output
    assert (call.type, call.name) == ("function_call", "get_weather")

    with client.responses.stream(
        model=LLAMA,
        tools=[WEATHER],
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        second = stream.get_final_response()

    assert text == second.output_text == "Echo: sunny"
    assert second.usage.output_tokens == 2


def test_it_parses_a_structured_answer_into_the_clients_type(client):
    response = client.responses.parse(model=LLAMA, input="Tell me", text_format=Echo)

    assert response.output_parsed == Echo(echo="Tell me")


def test_it_streams_gpt_oss_reasoning_before_the_answer(client):
    with client.responses.stream(
        model=GPT_OSS, input="hello there", reasoning={"effort": "low"}
    ) as stream:
        response = stream.get_final_response()

    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text.startswith("Reasoning about: hello there")
    assert response.output_text == "Echo: hello there"


def test_it_retrieves_and_deletes_a_stored_response(client):
    created = client.responses.create(model=LLAMA, input="keep me")

    assert client.responses.retrieve(created.id).output_text == "Echo: keep me"
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_it_refuses_a_read_key_and_a_built_in_tool(gateway, client):
    bob = openai.OpenAI(base_url=gateway.api_base, api_key=gateway.printed["bob"], max_retries=0)

    with pytest.raises(openai.PermissionDeniedError):
        bob.responses.create(model=LLAMA, input="hello")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=LLAMA, input="hello", tools=[{"type": "web_search"}])
    assert refused.value.body["param"] == "tools[0].type"
