"""Upstream answers, read within UPSTREAM_MAX_ANSWER_BYTES as measured after decompression.

httpx inflates a compressed answer one network read at a time, whole: 16 KiB of gzip can
inflate to 16 MiB in one call, and `aread()` keeps all of it. Here the raw bytes are
inflated in steps of DECODE_STEP bytes and counted as they come, so a 0.3 MB gzip body that
inflates to 300 MB is refused after UPSTREAM_MAX_ANSWER_BYTES with no more than a step's
worth beyond it held.

Only the encodings the shared client asks for (gzip and deflate, providers/client.py) are
read; an upstream that answers in another is refused rather than inflated without bound.
"""

import zlib

import httpx
from django.conf import settings

from gateway.errors import UpstreamError

# The most one step of inflation produces, in bytes.
DECODE_STEP = 64 * 1024


# The most one embedding of an answer may take, in bytes: 3072 floats (OpenAI's largest
# model) as indented JSON with full precision, 40 bytes each at most (8 spaces of indent, up
# to 24 characters of "-1.2345678901234567e-05", a comma and a new line). 2048 of them, the
# most one request may ask for, come to 240 MiB, where OpenAI's own answer measures
# about 31 bytes a float (186 MiB).
EMBEDDING_ANSWER_BYTES = 3072 * 40


def embeddings_answer_limit(inputs):
    """Return the largest embeddings answer read for `inputs` texts, in bytes."""
    return max(settings.UPSTREAM_MAX_ANSWER_BYTES, inputs * EMBEDDING_ANSWER_BYTES)


async def iter_answer(response, limit=None):
    """Yield the decoded body of a response opened with stream=True, in pieces of at most
    DECODE_STEP bytes; raise UpstreamError (upstream_answer_too_large) once it is over
    `limit` bytes (UPSTREAM_MAX_ANSWER_BYTES if None)."""
    if limit is None:
        limit = settings.UPSTREAM_MAX_ANSWER_BYTES
    size = 0
    try:
        # Already read, and inflated by httpx: an answer made in memory (a test's transport).
        pieces = [response.content]
    except httpx.ResponseNotRead:
        pieces = None
    if pieces is not None:
        decoders = []
        raws = _aiter(pieces)
    else:
        decoders = _decoders(response.headers.get("content-encoding", ""))
        raws = response.aiter_raw()
    async for raw in raws:
        for piece in _decode(decoders, raw):
            size += len(piece)
            if size > limit:
                raise _too_large(limit)
            yield piece
    for piece in _flush(decoders):
        size += len(piece)
        if size > limit:
            raise _too_large(limit)
        yield piece


async def _aiter(items):
    for item in items:
        yield item


async def read_answer(response, limit=None):
    """Return the decoded body of a response opened with stream=True (see iter_answer)."""
    return b"".join([piece async for piece in iter_answer(response, limit)])


def _too_large(limit):
    return UpstreamError(
        f"The provider's answer is larger than {limit} bytes.", code="upstream_answer_too_large"
    )


class _Inflater:
    """zlib inflation in bounded steps; `wbits` as zlib.decompressobj takes it."""

    def __init__(self, wbits):
        self.wbits = wbits
        self.inflater = zlib.decompressobj(wbits)
        self.started = False

    def decode(self, data):
        while data:
            try:
                piece = self.inflater.decompress(data, DECODE_STEP)
            except zlib.error:
                if self.wbits == zlib.MAX_WBITS and not self.started:
                    # "deflate" is sent both with zlib's header (as RFC 9110 says) and
                    # without it (raw deflate): httpx reads both, and so does this.
                    self.wbits = -zlib.MAX_WBITS
                    self.inflater = zlib.decompressobj(self.wbits)
                    continue
                raise _undecodable() from None
            self.started = True
            if piece:
                yield piece
            data = self.inflater.unconsumed_tail

    def flush(self):
        try:
            piece = self.inflater.flush(DECODE_STEP)
        except zlib.error:
            raise _undecodable() from None
        if piece:
            yield piece


def _undecodable():
    return UpstreamError(
        "The provider's answer could not be decompressed.", code="upstream_bad_encoding"
    )


INFLATERS = {
    "gzip": lambda: _Inflater(zlib.MAX_WBITS | 16),
    "x-gzip": lambda: _Inflater(zlib.MAX_WBITS | 16),
    "deflate": lambda: _Inflater(zlib.MAX_WBITS),
}


def _decoders(header):
    """Return the inflaters of a Content-Encoding value, in the order to apply them."""
    decoders = []
    for name in reversed([part.strip().lower() for part in header.split(",")]):
        if name in ("", "identity"):
            continue
        if name not in INFLATERS:
            raise UpstreamError(
                f"The provider answered in an encoding the gateway does not read ({name}).",
                code="upstream_bad_encoding",
            )
        decoders.append(INFLATERS[name]())
    return decoders


def _decode(decoders, data):
    if not decoders:
        if data:
            yield data
        return
    first, rest = decoders[0], decoders[1:]
    for piece in first.decode(data):
        yield from _decode(rest, piece)


def _flush(decoders):
    for index, decoder in enumerate(decoders):
        for piece in decoder.flush():
            yield from _decode(decoders[index + 1 :], piece)
