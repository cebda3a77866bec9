"""A key with limits of its own, and the chats the tests of limits send with it."""

from asgiref.sync import sync_to_async

from apikeys.models import ApiKey
from tests.conftest import LLAMA

# The fake upstream counts words: 3 prompt tokens, 4 completion tokens ("Echo: hello there
# world").
MESSAGES = [{"role": "user", "content": "hello there world"}]
# The max_tokens the chats below send, unless told otherwise: all of the answer's 4 words.
MAX_TOKENS = 4
# What such a chat reserves against a token window (completions/worst_case.py): 128 tokens of
# prompt estimate (its JSON's bytes and PROMPT_OVERHEAD_TOKENS) and MAX_TOKENS.
WORST_TOKENS = 132


async def new_key(**fields):
    """Create the key "dave" with these fields; return the headers that authenticate as it."""
    _, secret = await sync_to_async(ApiKey.objects.create_key)(name="dave", **fields)
    return {"Authorization": f"Bearer {secret}"}


async def chat(api, headers, model=LLAMA, **body):
    """Send MESSAGES to a model through Django's async test client; return the response."""
    return await api.post(
        "/v1/chat/completions",
        data={"model": model, "messages": MESSAGES, "max_tokens": MAX_TOKENS, **body},
        content_type="application/json",
        headers=headers,
    )


async def read_stream(response):
    """Return the whole body of a streamed response as text."""
    return b"".join([chunk async for chunk in response.streaming_content]).decode()
