"""pydantic-ai (pydantic-ai-slim[openai]): an Agent on OpenAIChatModel, at its defaults."""

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.embeddings import Embedder
from pydantic_ai.embeddings.openai import OpenAIEmbeddingModel
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

from tests.clients.conftest import CHAT_MODEL, ECHO, EMBEDDING_MODEL, TOOL_ANSWER, USER
from tests.clients.test_openai_python import ERRORS, error_request

CLIENT = "pydantic-ai"


class Looked(BaseModel):
    # pydantic-ai asks for structured output as a call of its own "final_result" tool at its
    # defaults; the fake model calls a tool with {"text": <the user's message>}.
    text: str


def provider(gateway, key="alice"):
    return OpenAIProvider(base_url=gateway.api_base, api_key=gateway.printed.get(key, key))


def agent(gateway, key="alice", model=CHAT_MODEL, **options):
    return Agent(OpenAIChatModel(model, provider=provider(gateway, key)), **options)


@pytest.mark.compat(CLIENT, "chat")
def test_it_chats(gateway):
    assert agent(gateway).run_sync(USER).output == ECHO


@pytest.mark.compat(CLIENT, "stream")
async def test_it_streams_with_usage(gateway):
    async with agent(gateway).run_stream(USER) as run:
        text = "".join([piece async for piece in run.stream_text(delta=True)])

    assert text == ECHO
    assert run.usage.output_tokens > 0


@pytest.mark.compat(CLIENT, "tools")
def test_it_calls_a_tool_and_answers_from_its_result(gateway):
    helper = agent(gateway)
    called = []

    @helper.tool_plain
    def lookup(text: str) -> str:
        """Look a text up."""
        called.append(text)
        return f"found {text}"

    assert helper.run_sync(USER).output == TOOL_ANSWER
    assert called == [USER]


@pytest.mark.compat(CLIENT, "structured")
def test_it_gets_structured_output_through_its_output_tool(gateway):
    assert agent(gateway, output_type=Looked).run_sync(USER).output == Looked(text=USER)


@pytest.mark.compat(CLIENT, "embeddings")
def test_it_embeds(gateway):
    embedder = Embedder(OpenAIEmbeddingModel(EMBEDDING_MODEL, provider=provider(gateway)))

    result = embedder.embed_documents_sync(["first text", "second"])

    assert [len(vector) for vector in result.embeddings] == [384, 384]


@pytest.mark.parametrize(
    "status",
    [pytest.param(s, marks=pytest.mark.compat(CLIENT, f"error {s}")) for s in ERRORS],
)
def test_it_raises_model_http_error_with_the_status(gateway, compat_detail, status):
    key, model, extra = error_request(gateway, status)
    settings = ModelSettings(**extra) if extra else None

    with pytest.raises(ModelHTTPError) as raised:
        agent(gateway, key=key, model=model).run_sync(USER, model_settings=settings)

    compat_detail(f"{type(raised.value).__name__} ({raised.value.status_code})")
    assert raised.value.status_code == status
