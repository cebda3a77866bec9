"""Tool calls in OpenAI's shape, made from an upstream's whole calls or streamed pieces."""

import json
import uuid


def new_tool_call_id():
    return "call_" + uuid.uuid4().hex[:24]


def arguments_text(arguments):
    """Return tool-call arguments as OpenAI's JSON string; upstreams may send an object."""
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False)


class ToolCallPieces:
    """Turn an upstream's tool calls, whole or in pieces, into OpenAI's tool-call deltas.

    Upstreams send a call whole ({"name", "arguments": {...}}, Workers AI's older shape) or
    in pieces sharing an index ({"index", "id", "function": {"name"}}, then
    {"index", "function": {"arguments": "..."}}, OpenAI's shape). Each call gets an index
    of its own in order of arrival, and an id if the upstream gave none.

    Some Workers AI models send argument pieces before the piece that names the function
    (cloudflare/ai issue #523, fixed in its provider by #572): those are held, by index,
    until the name comes, and sent with it, so that no client sees a call without a name
    or loses its first fragment.
    """

    def __init__(self):
        self.count = 0
        # Upstream index -> the index given to that call.
        self._indexes = {}
        # Upstream index -> {"id", "arguments"} of a call whose name has not come yet.
        self._waiting = {}

    def feed(self, calls):
        """Return the OpenAI deltas for a list of upstream tool-call pieces."""
        deltas = []
        for call in calls if isinstance(calls, list) else []:
            if not isinstance(call, dict):
                continue
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            name = function.get("name") or call.get("name")
            arguments = function.get("arguments", call.get("arguments"))
            upstream_index = call.get("index")
            if upstream_index is not None and upstream_index in self._indexes:
                text = arguments_text(arguments)
                if text:
                    deltas.append(
                        {"index": self._indexes[upstream_index], "function": {"arguments": text}}
                    )
                continue
            if not isinstance(name, str) or not name:
                if upstream_index is not None:
                    waiting = self._waiting.setdefault(
                        upstream_index, {"id": None, "arguments": ""}
                    )
                    waiting["id"] = waiting["id"] or call.get("id")
                    waiting["arguments"] += arguments_text(arguments)
                # Else a piece of no known call: Workers AI ends a call with an empty one.
                continue
            waiting = self._waiting.pop(upstream_index, None) or {"id": None, "arguments": ""}
            if upstream_index is not None:
                self._indexes[upstream_index] = self.count
            deltas.append(
                {
                    "index": self.count,
                    "id": call.get("id") or waiting["id"] or new_tool_call_id(),
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": waiting["arguments"] + arguments_text(arguments),
                    },
                }
            )
            self.count += 1
        return deltas


def join_tool_call_deltas(deltas):
    """Return whole OpenAI tool calls assembled from their deltas."""
    calls = {}
    for delta in deltas:
        function = delta.get("function", {})
        call = calls.setdefault(
            delta["index"],
            {"id": delta.get("id"), "type": "function", "function": {"name": "", "arguments": ""}},
        )
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""
    return [calls[index] for index in sorted(calls)]


def whole_tool_calls(calls):
    """Return an upstream's list of whole tool calls in OpenAI's shape."""
    return join_tool_call_deltas(ToolCallPieces().feed(calls))


def deltas_of_tool_calls(calls):
    """Return whole OpenAI tool calls as one delta each, for a stream made from a result."""
    return [{"index": index, **call} for index, call in enumerate(calls)]
