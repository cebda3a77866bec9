"""The Responses API's answer: a chat answer's pieces as Response output items and events.

ResponseEvents takes what a provider streams (completions/providers/types.py `Delta`: text,
reasoning, tool-call pieces) and builds OpenAI's Response object and the typed events of its
stream, the shapes the `openai` SDK parses (openai/types/responses/):

    response.created, response.in_progress
    per output item: response.output_item.added, then
        message:       response.content_part.added, response.output_text.delta...,
                       response.output_text.done, response.content_part.done
        reasoning:     the same with reasoning_text (OpenAI's shape for open-weight models)
        function_call: response.function_call_arguments.delta..., .done
    and response.output_item.done
    response.completed (response.incomplete when cut at max_output_tokens), with usage

Every event carries the stream's sequence_number, counting from 0. It keeps the interface
of completions/streaming.py's Chunks, so that the chat view's stream machinery (fallbacks,
usage, cancellation) runs it; an answer that did not stream is fed through it too.
"""

import json
import time
import uuid

# Why a response stopped short, by chat's finish_reason.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponseEvents:
    include_usage = False

    def __init__(self, response_id, model, data, meter):
        self.response_id = response_id
        # The name the client asked for, or the fallback's that answered.
        self.model = model
        # The validated request, whose settings the Response object repeats.
        self.data = data
        # The request's UsageMeter, whose usage the finished response reports.
        self.meter = meter
        self.created_at = int(time.time())
        self.sequence = 0
        self.output = []
        # Output index of the item being written, and of each tool call by its delta index.
        self.current = None
        self.calls = {}
        self.status = "in_progress"
        self.incomplete_reason = None
        self.completed_at = None
        self.closing = []

    def response(self):
        """Return the Response object as it stands."""
        data = self.data
        text_format = (data.get("text") or {}).get("format") or {"type": "text"}
        reasoning = data.get("reasoning") or {}
        usage = self.meter.usage if self.status != "in_progress" else None
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "completed_at": self.completed_at,
            "error": None,
            "incomplete_details": (
                {"reason": self.incomplete_reason} if self.incomplete_reason else None
            ),
            "instructions": data.get("instructions"),
            "max_output_tokens": data.get("max_output_tokens"),
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": data.get("parallel_tool_calls", True),
            "previous_response_id": data.get("previous_response_id"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": None},
            "store": data["store"],
            "temperature": data.get("temperature"),
            "text": {"format": text_format},
            "tool_choice": data.get("tool_choice", "auto"),
            "tools": data.get("tools", []),
            "top_p": data.get("top_p"),
            "truncation": "disabled",
            "usage": _usage(usage) if usage is not None else None,
            "user": data.get("user"),
            "metadata": data.get("metadata") or {},
        }

    def _event(self, kind, **fields):
        payload = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        data = json.dumps(payload, separators=(",", ":"))
        return f"event: {kind}\ndata: {data}\n\n".encode()

    def opening(self):
        return [
            self._event("response.created", response=self.response()),
            self._event("response.in_progress", response=self.response()),
        ]

    def feed(self, delta):
        """Take one Delta whole; return its events as bytes."""
        events = b""
        if delta.reasoning:
            events += self.reasoning(delta.reasoning)
        if delta.text:
            events += self.content(delta.text)
        if delta.tool_calls:
            events += self.tool_calls(delta.tool_calls)
        return events

    def reasoning(self, text):
        return self._text("reasoning", "reasoning_text", text)

    def content(self, text):
        return self._text("message", "output_text", text)

    def _text(self, kind, part_kind, text):
        events = []
        if self.current is None or self.output[self.current]["type"] != kind:
            events += self._close_current()
            events += self._add_text_item(kind, part_kind)
        index = self.current
        item = self.output[index]
        item["content"][0]["text"] += text
        delta_kind = (
            "response.output_text.delta" if kind == "message" else ("response.reasoning_text.delta")
        )
        extra = {"logprobs": []} if kind == "message" else {}
        events.append(
            self._event(
                delta_kind,
                item_id=item["id"],
                output_index=index,
                content_index=0,
                delta=text,
                **extra,
            )
        )
        return b"".join(events)

    def _add_text_item(self, kind, part_kind):
        if kind == "message":
            item = {
                "id": "msg_" + uuid.uuid4().hex,
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        else:
            item = {
                "id": "rs_" + uuid.uuid4().hex,
                "type": "reasoning",
                "status": "in_progress",
                "summary": [],
                "content": [],
            }
            part = {"type": "reasoning_text", "text": ""}
        index = self._add(item)
        events = [self._added_event(index)]
        events.append(
            self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        )
        item["content"].append(part)
        return events

    def _add(self, item):
        self.output.append(item)
        self.current = len(self.output) - 1
        return self.current

    def _added_event(self, index):
        return self._event(
            "response.output_item.added", output_index=index, item=self.output[index]
        )

    def tool_calls(self, deltas):
        events = []
        for delta in deltas:
            function = delta.get("function") or {}
            index = self.calls.get(delta["index"])
            if index is None:
                events += self._close_current()
                item = {
                    "id": "fc_" + uuid.uuid4().hex,
                    "type": "function_call",
                    "status": "in_progress",
                    "call_id": delta.get("id") or "",
                    "name": function.get("name") or "",
                    "arguments": "",
                }
                index = self.calls[delta["index"]] = self._add(item)
                events.append(self._added_event(index))
            item = self.output[index]
            arguments = function.get("arguments") or ""
            if arguments:
                item["arguments"] += arguments
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=arguments,
                    )
                )
        return b"".join(events)

    def _close_current(self):
        if self.current is None:
            return []
        index, self.current = self.current, None
        return self._close(index)

    def _close(self, index):
        item = self.output[index]
        if item["status"] != "in_progress":
            return []
        events = []
        item["status"] = "incomplete" if self.incomplete_reason else "completed"
        if item["type"] == "function_call":
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        else:
            part = item["content"][0]
            kind = "output_text" if item["type"] == "message" else "reasoning_text"
            extra = {"logprobs": []} if item["type"] == "message" else {}
            events.append(
                self._event(
                    f"response.{kind}.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=part["text"],
                    **extra,
                )
            )
            events.append(
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def conclude(self, finish_reason):
        """End the response: close its items, set its status; return the Response object.

        The closing events are kept for finish(), which sends them.
        """
        if self.status == "in_progress":
            self.incomplete_reason = INCOMPLETE_REASONS.get(finish_reason)
            self.current = None
            for index in range(len(self.output)):
                self.closing += self._close(index)
            self.status = "incomplete" if self.incomplete_reason else "completed"
            self.completed_at = int(time.time())
        return self.response()

    def finish(self, finish_reason):
        self.conclude(finish_reason)
        kind = "response.incomplete" if self.status == "incomplete" else "response.completed"
        last = self._event(kind, response=self.response())
        return b"".join([*self.closing, last])

    def usage(self, usage):
        raise AssertionError("The usage goes in response.completed; include_usage is False.")

    def error(self, error):
        """Return the events of a stream that failed once started: error, response.failed."""
        self.status = "failed"
        code = getattr(error, "code", None) or "server_error"
        failed = self.response()
        failed["error"] = {"code": code, "message": str(error)}
        return self._event(
            "error", code=code, message=str(error), param=getattr(error, "param", None)
        ) + self._event("response.failed", response=failed)

    def done(self):
        # A Responses stream ends with its last event; it has no [DONE].
        return b""


def _usage(usage):
    """Return the Responses usage object of a Usage."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        # Not reported apart by chat upstreams: part of output_tokens.
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }
