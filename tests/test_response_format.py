"""response_format: OpenAI's JSON modes mapped to Workers AI's, and passed through.

That every provider kind answers JSON as a string, streamed or not, is checked in
tests/contract/; these are the mappings on the way to the upstream.
"""

import json

import pytest

from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Tell me about India."}]
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "capital": {"type": "string"}},
    "required": ["name", "capital"],
}


async def _chat(api, persona, **body):
    body.setdefault("model", LLAMA)
    body.setdefault("messages", MESSAGES)
    return await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=persona.headers
    )


def _sent(upstream):
    [sent] = [r for r in upstream.requests if "/ai/run/" in r["path"]]
    return sent["json"]


async def test_it_sends_json_object_mode_to_workers_ai(api, alice, cloudflare, upstream):
    await _chat(api, alice, response_format={"type": "json_object"})

    assert _sent(upstream)["response_format"] == {"type": "json_object"}


async def test_it_sends_workers_ai_the_schema_itself(api, alice, cloudflare, upstream):
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "country", "schema": SCHEMA, "strict": True},
    }

    response = await _chat(api, alice, response_format=response_format)

    # OpenAI wraps the schema with a name; Workers AI takes the schema as json_schema.
    assert _sent(upstream)["response_format"] == {"type": "json_schema", "json_schema": SCHEMA}
    content = response.json()["choices"][0]["message"]["content"]
    assert json.loads(content) == {"echo": "Tell me about India."}


async def test_it_sends_nothing_for_plain_text(api, alice, cloudflare, upstream):
    await _chat(api, alice, response_format={"type": "text"})

    assert "response_format" not in _sent(upstream)


async def test_it_asks_workers_ai_without_streaming_in_json_mode(api, alice, cloudflare, upstream):
    response = await _chat(api, alice, response_format={"type": "json_object"}, stream=True)

    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert response.status_code == 200
    assert raw.endswith("data: [DONE]\n\n")
    # Workers AI's JSON mode does not stream: the answer comes whole, then is streamed.
    assert _sent(upstream)["stream"] is False


async def test_it_passes_response_format_through_to_an_openai_compatible_server(
    api, alice, openai_upstream, upstream
):
    response_format = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}

    response = await _chat(api, alice, model="gpt-test-mini", response_format=response_format)

    [sent] = [r for r in upstream.requests if r["path"].endswith("/chat/completions")]
    assert sent["json"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "c", "schema": SCHEMA},
    }
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {
        "echo": "Tell me about India."
    }


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "response_format.json_schema"),
        (
            {"type": "json_schema", "json_schema": {"name": "c", "schema": "object"}},
            "response_format.json_schema.schema",
        ),
        ("json", "response_format"),
    ],
)
async def test_it_refuses_a_malformed_response_format_naming_it(
    api, alice, cloudflare, upstream, response_format, param
):
    response = await _chat(api, alice, response_format=response_format)

    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith(param)
    assert upstream.requests == []
