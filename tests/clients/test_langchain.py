"""LangChain's langchain-openai (ChatOpenAI, OpenAIEmbeddings), at its defaults."""

import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from tests.clients.conftest import CHAT_MODEL, ECHO, EMBEDDING_MODEL, TOOL_ANSWER, USER
from tests.clients.test_openai_python import ERRORS, error_request

CLIENT = "langchain"


class Echo(BaseModel):
    echo: str


@tool
def lookup(text: str) -> str:
    """Look a text up."""
    return f"found {text}"


def chat_model(gateway, key="alice", **settings):
    secret = gateway.printed.get(key, key)
    return ChatOpenAI(model=CHAT_MODEL, base_url=gateway.api_base, api_key=secret, **settings)


@pytest.mark.compat(CLIENT, "chat")
def test_it_chats(gateway):
    assert chat_model(gateway).invoke(USER).content == ECHO


@pytest.mark.compat(CLIENT, "stream")
def test_it_streams_with_usage_once_asked(gateway, compat_detail):
    compat_detail("usage needs stream_usage=True (off by default for a server other than OpenAI's)")
    at_defaults = list(chat_model(gateway).stream(USER))
    chunks = list(chat_model(gateway, stream_usage=True).stream(USER))

    assert "".join(chunk.content for chunk in at_defaults) == ECHO
    assert "".join(chunk.content for chunk in chunks) == ECHO
    assert sum(chunk.usage_metadata["total_tokens"] for chunk in chunks if chunk.usage_metadata)


@pytest.mark.compat(CLIENT, "tools")
def test_it_calls_a_tool_and_answers_from_its_result(gateway):
    model = chat_model(gateway).bind_tools([lookup])
    messages = [HumanMessage(USER)]
    answer = model.invoke(messages)
    [call] = answer.tool_calls
    messages += [answer, ToolMessage(lookup.invoke(call["args"]), tool_call_id=call["id"])]

    final = model.invoke(messages)

    assert call["name"] == "lookup"
    assert final.content == TOOL_ANSWER


@pytest.mark.compat(CLIENT, "structured")
def test_it_gets_structured_output(gateway):
    assert chat_model(gateway).with_structured_output(Echo).invoke(USER) == Echo(echo=USER)


@pytest.mark.compat(CLIENT, "embeddings")
def test_it_embeds_sending_token_ids_at_its_defaults(gateway, compat_detail):
    compat_detail("sends tiktoken cl100k ids, decoded by the gateway")
    embeddings = OpenAIEmbeddings(
        model=EMBEDDING_MODEL, base_url=gateway.api_base, api_key=gateway.printed["alice"]
    )

    vectors = embeddings.embed_documents(["first text", "second"])

    assert [len(vector) for vector in vectors] == [384, 384]


@pytest.mark.parametrize(
    "status",
    [pytest.param(s, marks=pytest.mark.compat(CLIENT, f"error {s}")) for s in ERRORS],
)
def test_it_raises_a_subclass_of_the_openai_error_class(gateway, compat_detail, status):
    key, model, extra = error_request(gateway, status)
    client = ChatOpenAI(model=model, base_url=gateway.api_base, api_key=key, **extra)

    with pytest.raises(openai.APIStatusError) as raised:
        client.invoke(USER)

    compat_detail(type(raised.value).__name__)
    assert isinstance(raised.value, ERRORS[status])
