"""Server-sent events in OpenAI's formats: chat.completion.chunk and text_completion."""

import asyncio
import contextlib
import json
import logging
import time

from django.http import StreamingHttpResponse

from gateway import metrics
from gateway.middleware import track_stream

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def sse(payload):
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def sse_response(events, on_abandon):
    """Answer with an async iterator of SSE events, each sent as soon as it is yielded.

    `on_abandon(dropped)` is awaited instead of the events if the response is closed before
    its first event was asked for (see EventStreamResponse).
    """
    return EventStreamResponse(events, on_abandon)


# Tasks ending the events of closed responses, kept from garbage collection until done.
_ending = set()


class EventStreamResponse(StreamingHttpResponse):
    """A text/event-stream answer whose events end when the response is closed.

    Django closes a response once it is done with it, but not the async generators inside
    it: when a client goes away mid-stream, a server whose send() was interrupted leaves
    the events generator, and the upstream request inside it, suspended until garbage
    collection. close() ends it at once instead, so that its `finally` closes the upstream
    and records the usage. A response closed before its first event was asked for (the
    client left between the head and the body) never ran its generator, whose `finally`
    would not run either: `on_abandon(dropped=False)` ends the stream in its place, without
    reading the upstream any further. One made and then dropped for another answer (a
    middleware failed after the view) is ended by drop(), `on_abandon(dropped=True)`.
    close() may be called from a worker thread (Django's ASGI handler does so), so the
    stream is ended on the event loop that runs it.
    """

    def __init__(self, events, on_abandon):
        self._events = _Events(events, on_end=self._ended, on_abandon=on_abandon)
        self._open = True
        metrics.OPEN_STREAMS.inc()
        self._loop = asyncio.get_running_loop()
        self._closing = False
        super().__init__(self._events, content_type="text/event-stream")
        self["Cache-Control"] = "no-cache"
        # Tells nginx not to buffer the stream (see deploy notes).
        self["X-Accel-Buffering"] = "no"
        # Closed by the middleware if the request is cancelled before this is sent, or
        # dropped if another response is sent instead.
        track_stream(self)

    def _ended(self):
        if self._open:
            self._open = False
            metrics.OPEN_STREAMS.dec()

    def close(self):
        super().close()
        self._end()

    def drop(self):
        """End a stream that will never be sent: the request was answered otherwise."""
        self._events.dropped = True
        self.close()

    def _end(self):
        self._ended()
        if self._closing or self._events.finished:
            return
        self._closing = True
        # A closed loop has nothing left running to end.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._end_events)

    def _end_events(self):
        task = self._loop.create_task(self._events.aclose())
        _ending.add(task)
        task.add_done_callback(_ending.discard)


class _Events:
    """An async iterator of events that remembers whether its first event was asked for."""

    def __init__(self, events, on_end, on_abandon):
        self.events = events
        self.started = False
        self.on_end = on_end
        self.on_abandon = on_abandon
        # Whether the response was dropped for another answer rather than closed.
        self.dropped = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        self.started = True
        try:
            return await self.events.__anext__()
        except BaseException:
            # The last event was sent, or the stream failed or was cancelled.
            self.on_end()
            raise

    @property
    def finished(self):
        # An async generator that has returned or was closed has no frame left.
        return getattr(self.events, "ag_frame", True) is None

    async def aclose(self):
        """End the events; if they never started, end their stream with `on_abandon`."""
        self.on_end()
        if self.finished:
            return
        try:
            if not self.started:
                # Closing a generator that never ran skips its `finally` clauses: the
                # stream it was handed is ended, and its usage recorded, by on_abandon.
                self.started = True
                await self.events.aclose()
                await self.on_abandon(self.dropped)
                return
            await self.events.aclose()
        except RuntimeError:
            # Still running in the task that serves it, which ends it itself.
            pass
        except Exception:
            logger.exception("Ending an abandoned event stream failed")


class Chunks:
    """Build the events of one streamed answer; subclasses give the object's shape."""

    object = ""

    def __init__(self, completion_id, model, include_usage):
        self.completion_id = completion_id
        # The name the client asked for, or the fallback's that answered.
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())

    def _chunk(self, choices, **extra):
        return sse(
            {
                "id": self.completion_id,
                "object": self.object,
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )

    def _choice(self, fields, finish_reason=None):
        choice = {"index": 0, **fields, "logprobs": None, "finish_reason": finish_reason}
        # With include_usage, OpenAI sends "usage": null on every chunk but the last.
        extra = {"usage": None} if self.include_usage else {}
        return self._chunk([choice], **extra)

    def opening(self):
        """Return the events sent before the model's first token."""
        return []

    def content(self, text):
        raise NotImplementedError

    def tool_calls(self, deltas):
        raise NotImplementedError

    def reasoning(self, text):
        """Return the event of a piece of reasoning, or None where the object has no place."""
        return None

    def finish(self, finish_reason):
        raise NotImplementedError

    def usage(self, usage):
        return self._chunk([], usage=usage.as_dict())

    def error(self, error):
        return sse(error.as_dict())

    def done(self):
        return DONE


class ChatChunks(Chunks):
    """Build chat.completion.chunk events: the role first, then content or tool-call deltas."""

    object = "chat.completion.chunk"

    def opening(self):
        return [self._choice({"delta": {"role": "assistant", "content": ""}})]

    def content(self, text):
        return self._choice({"delta": {"content": text}})

    def tool_calls(self, deltas):
        return self._choice({"delta": {"tool_calls": deltas}})

    def reasoning(self, text):
        # Where vLLM, DeepSeek and LiteLLM put it, and the Vercel AI SDK's
        # openai-compatible provider reads it (its reasoningText).
        return self._choice({"delta": {"reasoning_content": text}})

    def finish(self, finish_reason):
        return self._choice({"delta": {}}, finish_reason)


class TextCompletionChunks(Chunks):
    """Build legacy text_completion events; with echo, the prompt comes first."""

    object = "text_completion"

    def __init__(self, completion_id, model, include_usage, echo_prompt=""):
        super().__init__(completion_id, model, include_usage)
        self.echo_prompt = echo_prompt

    def opening(self):
        return [self.content(self.echo_prompt)] if self.echo_prompt else []

    def content(self, text):
        return self._choice({"text": text})

    def tool_calls(self, deltas):
        raise AssertionError("A legacy completion has no tools; no provider sends their deltas.")

    def finish(self, finish_reason):
        return self._choice({"text": ""}, finish_reason)
