"""Server-sent events from an upstream, each read within the stream's deadlines."""

import asyncio
import json
import math
import re
from dataclasses import dataclass

import httpx
from django.conf import settings

from completions.providers.answers import iter_answer
from completions.providers.timeouts import first_byte_timeout, read_timeout, timed_out
from gateway.errors import UpstreamError, UpstreamTimeout


@dataclass
class StreamDeadlines:
    """When a stream's first event and its end are due, in the event loop's time."""

    first_event: float
    end: float


async def iter_sse_data(response):
    """Yield the data of each server-sent event until [DONE].

    A stream that ends before [DONE] was cut by the upstream: that is an error, since
    the answer and its usage are incomplete. Each read is bounded in time (see
    BaseProvider.open_stream); a timeout is an UpstreamTimeout.
    """
    loop = asyncio.get_running_loop()
    deadlines = getattr(response, "deadlines", None) or StreamDeadlines(
        first_event=loop.time() + first_byte_timeout(),
        end=loop.time() + settings.UPSTREAM_STREAM_TIMEOUT,
    )
    started = False
    lines = _sse_lines(response)
    try:
        while True:
            if not started:
                deadline = min(deadlines.first_event, deadlines.end)
            else:
                deadline = min(loop.time() + read_timeout(), deadlines.end)
            try:
                async with asyncio.timeout_at(deadline):
                    line = await anext(lines)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UpstreamTimeout(_stream_timeout_message(started, deadlines, loop)) from None
            if not line.startswith("data:"):
                # Comments (": keep-alive"), event names and blank lines: the upstream is
                # alive, but no event has come.
                continue
            started = True
            data = line[5:].strip()
            if data == "[DONE]":
                return
            yield data
    except httpx.TransportError as exc:
        if timed_out(exc):
            raise UpstreamTimeout("The provider's stream stalled.") from None
    finally:
        await lines.aclose()
    raise UpstreamError("The provider's stream ended before it was complete.", code="stream_cut")


# SSE ends lines with CRLF, LF or CR, and nothing else: str.splitlines(), which httpx's
# aiter_lines() uses, also splits on U+2028, U+0085 and others that JSON text may hold.
_LINE_END = re.compile(rb"\r\n|\r|\n")

# The longest line an upstream may send, in bytes: one event is a token or a few.
MAX_SSE_LINE_BYTES = 1024 * 1024


async def _sse_lines(response):
    """Yield the lines of an event stream, split where SSE splits them, as text."""
    pending = b""
    # No bound on the whole: a stream is passed on as it comes, and bounded in time.
    async for chunk in iter_answer(response, limit=math.inf):
        *lines, pending = _LINE_END.split(pending + chunk)
        for line in lines:
            yield line.decode("utf-8", "replace")
        if len(pending) > MAX_SSE_LINE_BYTES:
            raise UpstreamError(
                f"The provider sent a stream event larger than {MAX_SSE_LINE_BYTES} bytes.",
                code="upstream_answer_too_large",
            )
    if pending:
        yield pending.decode("utf-8", "replace")


def _stream_timeout_message(started, deadlines, loop):
    if loop.time() >= deadlines.end:
        return (
            "The provider's stream went on longer than "
            f"{settings.UPSTREAM_STREAM_TIMEOUT:g} seconds."
        )
    if not started:
        return f"The provider's stream did not start within {first_byte_timeout():g} seconds."
    return f"The provider's stream stalled: no event for {read_timeout():g} seconds."


def parse_event(data):
    """Decode one event's JSON, or fail as an upstream error."""
    try:
        return json.loads(data)
    except ValueError:
        raise UpstreamError(
            "The provider sent a stream event that is not valid JSON.", code="invalid_stream_event"
        ) from None
