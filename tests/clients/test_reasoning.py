"""Reasoning text, plain and streamed, in the fields the clients read.

The gateway passes a reasoning model's text on as `choices[0].message.reasoning_content`
and, streamed, `choices[0].delta.reasoning_content`: the Vercel AI SDK reads it as
`reasoningText`, LiteLLM as `reasoning_content`, pydantic-ai as a ThinkingPart, and the
official SDKs keep it as an extra field of the message. The fake upstream's reasoning model
(REASONING_MODEL in tests/clients/conftest.py) reasons "Reasoning about: <the message>", then
goes on thinking (the fake's medium effort).
"""

import litellm
import openai
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ThinkingPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.clients.conftest import REASONING_MODEL, USER
from tests.clients.node_clients import run_scenarios

REASONING = f"Reasoning about: {USER}"


def _reasons(text):
    return isinstance(text, str) and text.startswith(REASONING)


MESSAGES = [{"role": "user", "content": USER}]
# What a failure says in the README's table.
MISSING = "no reasoning text reached the client"
STREAMED_MISSING = "no reasoning text reached the client in a stream"


@pytest.fixture(scope="module")
def node_results(gateway):
    return run_scenarios(gateway, ["ai.reasoning", "ai.reasoning-stream", "openai.reasoning"])


def _value(result):
    assert result["ok"], result["error"]
    return result["value"]


@pytest.mark.compat("openai-python", "reasoning")
def test_openai_python_keeps_the_reasoning_as_an_extra_field(gateway):
    client = openai.OpenAI(base_url=gateway.api_base, api_key=gateway.printed["alice"])

    message = client.chat.completions.create(model=REASONING_MODEL, messages=MESSAGES)
    chunks = client.chat.completions.create(model=REASONING_MODEL, messages=MESSAGES, stream=True)
    streamed = "".join(
        (chunk.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for chunk in chunks
        if chunk.choices
    )

    assert _reasons(message.choices[0].message.model_extra.get("reasoning_content")), MISSING
    assert _reasons(streamed), STREAMED_MISSING


@pytest.mark.compat("openai-node", "reasoning")
def test_openai_node_keeps_the_reasoning_on_the_message(node_results):
    assert _reasons(_value(node_results["openai.reasoning"])["reasoning"]), MISSING


@pytest.mark.compat("ai-sdk", "reasoning")
def test_the_ai_sdk_reads_reasoning_text_plain_and_streamed(node_results):
    assert _reasons(_value(node_results["ai.reasoning"])["reasoning"]), MISSING
    assert _reasons(_value(node_results["ai.reasoning-stream"])["reasoning"]), STREAMED_MISSING


@pytest.mark.compat("litellm", "reasoning")
def test_litellm_reads_reasoning_content_plain_and_streamed(gateway):
    params = {
        "model": f"openai/{REASONING_MODEL}",
        "api_base": gateway.api_base,
        "api_key": gateway.printed["alice"],
        "messages": MESSAGES,
    }

    message = litellm.completion(**params).choices[0].message
    streamed = "".join(
        getattr(chunk.choices[0].delta, "reasoning_content", None) or ""
        for chunk in litellm.completion(**params, stream=True)
        if chunk.choices
    )

    assert _reasons(getattr(message, "reasoning_content", None)), MISSING
    assert _reasons(streamed), STREAMED_MISSING


@pytest.mark.compat("pydantic-ai", "reasoning")
def test_pydantic_ai_reads_the_reasoning_as_a_thinking_part(gateway):
    provider = OpenAIProvider(base_url=gateway.api_base, api_key=gateway.printed["alice"])
    agent = Agent(OpenAIChatModel(REASONING_MODEL, provider=provider))

    response = agent.run_sync(USER).all_messages()[-1]

    thinking = [part.content for part in response.parts if isinstance(part, ThinkingPart)]
    assert len(thinking) == 1 and _reasons(thinking[0]), MISSING
