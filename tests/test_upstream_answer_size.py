"""Upstream answers are read within UPSTREAM_MAX_ANSWER_BYTES, measured once inflated: a huge
answer or a gzip bomb is a 502, and reading stops near the limit.

The upstream here is a small aiohttp server of the test's own, which streams what it sends
(nothing huge is built in memory) and counts what it managed to send.
"""

import json
import random
import tracemalloc
import zlib

import pytest
from aiohttp import web

from completions.models import Model, Provider
from completions.providers.answers import EMBEDDING_ANSWER_BYTES, embeddings_answer_limit

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024
LIMIT = 1 * MiB
MESSAGES = [{"role": "user", "content": "hello"}]
# Bytes of zeros the gzip bomb inflates to.
BOMB_BYTES = 256 * MiB


class HostileUpstream:
    """An OpenAI-compatible upstream whose answers are as large as a test asks."""

    def __init__(self):
        self.sent = 0
        self.answer = None

    async def handle(self, request):
        return await self.answer(request)

    async def huge_json(self, request, size=200 * MiB):
        """Answer a JSON object of `size` bytes, 64 KiB at a time."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await self._write(response, b'{"padding": "')
        piece = b"a" * 64 * 1024
        while self.sent < size:
            await self._write(response, piece)
        await self._write(response, b'"}')
        return response

    async def gzip_bomb(self, request):
        """Answer zeros gzipped, BOMB_BYTES once inflated, compressed as they are sent."""
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )
        await response.prepare(request)
        compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        zeros = bytes(MiB)
        for _ in range(BOMB_BYTES // MiB):
            await self._write(response, compressor.compress(zeros))
        await self._write(response, compressor.flush())
        return response

    async def huge_event(self, request):
        """Start a stream, then send one event of 8 MiB."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        start = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}
        await self._write(response, f"data: {json.dumps(start)}\n\n".encode())
        await self._write(response, b'data: {"padding": "')
        piece = b"a" * 64 * 1024
        while self.sent < 8 * MiB:
            await self._write(response, piece)
        await self._write(response, b'"}\n\n')
        return response

    async def brotli(self, request):
        return web.Response(
            body=b"\x0b\x02\x80{}\x03",
            headers={"Content-Type": "application/json", "Content-Encoding": "br"},
        )

    async def embeddings(self, request):
        """Answer as many 3072-float embeddings as asked for, in OpenAI's indented JSON."""
        inputs = (await request.json())["input"]
        rng = random.Random(7)
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": [rng.uniform(-0.1, 0.1) for _ in range(3072)],
            }
            for index in range(len(inputs))
        ]
        body = {"object": "list", "data": data, "model": "big-embedder", "usage": {}}
        return web.Response(
            body=json.dumps(body, indent=2).encode(), content_type="application/json"
        )

    async def _write(self, response, data):
        try:
            await response.write(data)
        except ConnectionError:
            raise
        self.sent += len(data)


@pytest.fixture
async def hostile(monkeypatch, settings):
    settings.UPSTREAM_MAX_ANSWER_BYTES = LIMIT
    settings.UPSTREAM_RETRIES = 0
    monkeypatch.setenv("GATEWAY_PROVIDER_TEST_OPENAI_KEY", "sk-test")
    server = HostileUpstream()
    app = web.Application(client_max_size=64 * MiB)
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    provider = await Provider.objects.acreate(
        name="hostile",
        kind=Provider.OPENAI,
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key_env="GATEWAY_PROVIDER_TEST_OPENAI_KEY",
    )
    await Model.objects.acreate(name="hostile-chat", provider=provider)
    await Model.objects.acreate(name="big-embedder", provider=provider, task=Model.TEXT_EMBEDDINGS)
    yield server
    await runner.cleanup()


async def _chat(api, persona, **body):
    return await api.post(
        "/v1/chat/completions",
        data={"model": "hostile-chat", "messages": MESSAGES, **body},
        content_type="application/json",
        headers=persona.headers,
    )


def _assert_too_large(response):
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "upstream_answer_too_large"


async def test_it_answers_502_to_an_answer_over_the_limit_and_stops_reading(api, alice, hostile):
    hostile.answer = hostile.huge_json

    response = await _chat(api, alice)

    _assert_too_large(response)
    # Of 200 MiB, what loopback's socket buffers hold beyond the limit at most.
    assert hostile.sent < 32 * MiB


async def test_it_answers_502_to_a_gzip_bomb_without_inflating_it(api, alice, hostile):
    hostile.answer = hostile.gzip_bomb
    tracemalloc.start()
    try:
        response = await _chat(api, alice)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    _assert_too_large(response)
    # The bomb inflates to 256 MiB; the gateway held a few steps of it beyond 1 MiB.
    assert peak < 32 * MiB


async def test_it_ends_a_stream_with_an_event_over_the_limit_with_an_error_event(
    api, alice, hostile
):
    hostile.answer = hostile.huge_event

    response = await _chat(api, alice, stream=True)

    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    events = [event.removeprefix("data: ") for event in raw.split("\n\n") if event]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "upstream_answer_too_large"
    assert hostile.sent < 32 * MiB


async def test_it_refuses_an_answer_in_an_encoding_it_does_not_read(api, alice, hostile):
    hostile.answer = hostile.brotli

    response = await _chat(api, alice)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_bad_encoding"


async def test_an_embeddings_answer_may_exceed_the_limit_by_its_inputs(api, alice, hostile):
    # 16 embeddings of 3072 floats as indented JSON: about 1.7 MiB, over the 1 MiB limit.
    hostile.answer = hostile.embeddings

    response = await api.post(
        "/v1/embeddings",
        data={"model": "big-embedder", "input": ["hello"] * 16},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 200
    assert len(response.json()["data"]) == 16
    assert len(response.json()["data"][0]["embedding"]) == 3072


def test_the_largest_embeddings_answer_fits_by_default(settings):
    settings.UPSTREAM_MAX_ANSWER_BYTES = 32 * MiB
    # Two embeddings as OpenAI writes them (indented by 2, floats at full precision), of
    # the longest floats JSON writes; the second one's share is what each adds.
    vector = [-1.2345678901234567e-05] * 3072
    items = [{"object": "embedding", "index": 2047, "embedding": vector}]
    one = len(json.dumps({"object": "list", "data": items}, indent=2))
    two = len(json.dumps({"object": "list", "data": items * 2}, indent=2))

    assert two - one <= EMBEDDING_ANSWER_BYTES
    assert embeddings_answer_limit(2048) >= one + 2047 * (two - one)
