"""The provider kinds every contract case runs against, each on its own fake.

    cloudflare         Workers AI's older answers ({"response": ...}) on the fake upstream
    cloudflare-newer   Workers AI's OpenAI-shaped answers on the fake upstream
    openai             an OpenAI-compatible server on the fake upstream
    echo               the built-in development model, no upstream at all

Each kind says what its model answers, so the cases themselves stay the same.
"""

import json
from dataclasses import dataclass

import pytest

from completions.models import Model, Provider
from completions.providers import echo
from tests import fake_upstream
from tests.conftest import LLAMA

KINDS = ["cloudflare", "cloudflare-newer", "openai", "echo"]
NEWER_MODEL = "@cf/qwen/qwen3-30b-a3b-fp8"
ECHO_EMBEDDING = "echo-embedding"


@dataclass
class Kind:
    name: str
    chat_model: str
    embedding_model: str
    # The fakes put "Echo:" before what they repeat; the echo model repeats it bare.
    prefix: str
    dimensions: int
    # Whether the provider reports token counts for embeddings (Workers AI does not).
    counts_embedding_tokens: bool

    def answer(self, text):
        """Return what the model answers to a last user (or tool) message."""
        return f"{self.prefix}{text}"

    def usage(self, messages_text, text):
        """Return the usage the model reports: a token is a word, for every kind here."""
        prompt = len(messages_text.split())
        completion = len(self.answer(text).split())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    def vector(self, text):
        if self.name == "echo":
            return echo._vector(text)
        return fake_upstream.embedding_vector(text, self.dimensions)

    def json_answer(self, text):
        return {"echo": text}


@pytest.fixture(params=KINDS)
def kind(request, db):
    """One provider kind with a chat model and an embedding model, ready to serve."""
    if request.param.startswith("cloudflare"):
        provider = request.getfixturevalue("cloudflare")
        chat_model = LLAMA
        if request.param == "cloudflare-newer":
            Model.objects.create(name=NEWER_MODEL, provider=provider)
            chat_model = NEWER_MODEL
        return Kind(
            name=request.param,
            chat_model=chat_model,
            embedding_model="@cf/baai/bge-small-en-v1.5",
            prefix="Echo: ",
            dimensions=fake_upstream.EMBEDDING_DIMENSIONS["@cf/baai/bge-small-en-v1.5"],
            counts_embedding_tokens=False,
        )
    if request.param == "openai":
        provider = request.getfixturevalue("openai_upstream")
        Model.objects.create(name="text-embed-test", provider=provider, task=Model.TEXT_EMBEDDINGS)
        return Kind(
            name="openai",
            chat_model="gpt-test-mini",
            embedding_model="text-embed-test",
            prefix="Echo: ",
            dimensions=fake_upstream.DEFAULT_EMBEDDING_DIMENSIONS,
            counts_embedding_tokens=True,
        )
    request.getfixturevalue("no_echo_delay")
    Model.objects.create(
        name=ECHO_EMBEDDING,
        provider=Provider.objects.get(name="echo"),
        task=Model.TEXT_EMBEDDINGS,
    )
    return Kind(
        name="echo",
        chat_model="echo",
        embedding_model=ECHO_EMBEDDING,
        prefix="",
        dimensions=echo.EMBEDDING_DIMENSIONS,
        counts_embedding_tokens=True,
    )


async def post(api, persona, path, **body):
    return await api.post(
        f"/v1/{path}", data=body, content_type="application/json", headers=persona.headers
    )


async def stream_events(api, persona, path, **body):
    """POST a streamed request; return the response and its decoded data events."""
    response = await post(api, persona, path, stream=True, **body)
    raw = b"".join([chunk async for chunk in response.streaming_content])
    events = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return response, events
