"""Server-sent events in OpenAI's chat.completion.chunk format."""

import json
import time

from django.http import StreamingHttpResponse

DONE = b"data: [DONE]\n\n"


def sse(payload):
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def sse_response(events):
    """Answer with an async iterator of SSE events, each sent as soon as it is yielded."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Tells nginx not to buffer the stream (see deploy notes).
    response["X-Accel-Buffering"] = "no"
    return response


class ChatChunks:
    """Build the events of one streamed chat completion."""

    def __init__(self, completion_id, model, include_usage):
        self.completion_id = completion_id
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())

    def _chunk(self, choices, **extra):
        return sse(
            {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )

    def _delta(self, delta, finish_reason=None):
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        # With include_usage, OpenAI sends "usage": null on every chunk but the last.
        extra = {"usage": None} if self.include_usage else {}
        return self._chunk([choice], **extra)

    def role(self):
        return self._delta({"role": "assistant", "content": ""})

    def content(self, text):
        return self._delta({"content": text})

    def finish(self, finish_reason):
        return self._delta({}, finish_reason)

    def usage(self, usage):
        return self._chunk([], usage=usage.as_dict())

    def error(self, error):
        return sse(error.as_dict())

    def done(self):
        return DONE
