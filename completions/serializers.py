"""Validation of request bodies, with DRF serializers run from plain async views.

Parameters the gateway cannot honour are refused with a 400 naming them rather than
silently dropped, where a client would rely on them (n > 1, logprobs, a non-empty
logit_bias); parameters that only tune generation are passed on where the provider
takes them and otherwise ignored (see the README's mapping table).
"""

import functools

from asgiref.sync import sync_to_async
from rest_framework import serializers

from completions import token_ids
from completions.fields import (
    BoundedListField,
    JSONObjectField,
    MessageContentField,
    StopField,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StringsField,
    ToolChoiceField,
)
from gateway.errors import InvalidRequest

ROLES = ["system", "developer", "user", "assistant", "tool"]
# Sampling parameters passed on to providers, by OpenAI's names.
SAMPLING_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "top_k",
    "parallel_tool_calls",
    "reasoning_effort",
)
# Messages in one chat request, and characters in one message's content (text parts
# added up): well past any model's context, short of what would tie up the gateway.
MAX_MESSAGES = 2048
MAX_MESSAGE_CHARACTERS = 1_000_000
# Characters in one stop sequence: the stream filter holds back up to that much text.
MAX_STOP_CHARACTERS = 256
# OpenAI's limit on the number of tools in one request.
MAX_TOOLS = 128
# Tool calls in one assistant message: a model calls at most one per tool it was given.
MAX_TOOL_CALLS = MAX_TOOLS
# Parts of one message's content. No client sends more than a few; the bound is for
# hostile bodies (see BoundedListField).
MAX_CONTENT_PARTS = 1024
# OpenAI's limit on the characters of a prompt_cache_key (its 400 says "maximum length 64").
MAX_PROMPT_CACHE_KEY_CHARACTERS = 64
# Prompts of one legacy completion, each sent upstream as a call of its own.
MAX_PROMPTS = 16
# OpenAI's limit on the number of inputs in one embeddings request.
MAX_EMBEDDING_INPUTS = 2048
# Items (messages, tool calls, content parts, tools, inputs) a body may hold and still be
# validated on the event loop: about 5 ms of validation (139,803 messages took 2.9 s,
# about 20 us an item). Past that it is validated in a pooled thread (avalidate_body),
# which costs a thread hop that an ordinary body does not pay.
MAX_ITEMS_ON_THE_LOOP = 256
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
ONLY_ONE_CHOICE = "Only 1 is supported; send separate requests for more choices."


class Serializer(serializers.Serializer):
    """A request object whose optional fields take null as "not given", as OpenAI's API does.

    The SDKs' types allow null for every optional parameter, and clients send it: LangChain
    sends `"temperature": null` at its defaults, and a history kept as the SDK's own
    `message.model_dump()` carries `"tool_calls": null`. Dropped before validation, a null
    gets the field's default; a required field still refuses it.
    """

    def to_internal_value(self, data):
        if isinstance(data, dict):
            fields = self.fields
            data = {
                name: value
                for name, value in data.items()
                if value is not None or name not in fields or fields[name].required
            }
        return super().to_internal_value(data)


class FunctionCallSerializer(Serializer):
    name = StrictCharField()
    # OpenAI's arguments are a JSON text, as the model wrote them.
    arguments = StrictCharField(allow_blank=True)


class ToolCallSerializer(Serializer):
    id = StrictCharField()
    type = serializers.ChoiceField(choices=["function"])
    function = FunctionCallSerializer()


class MessageSerializer(Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = MessageContentField(required=False, allow_null=True, max_parts=MAX_CONTENT_PARTS)
    name = StrictCharField(required=False, max_length=64)
    tool_call_id = StrictCharField(required=False)
    tool_calls = BoundedListField(
        child=ToolCallSerializer(), required=False, max_length=MAX_TOOL_CALLS
    )

    def validate_content(self, value):
        parts = [value] if isinstance(value, str) else value or []
        length = sum(
            len(part) if isinstance(part, str) else len(part.get("text", "")) for part in parts
        )
        if length > MAX_MESSAGE_CHARACTERS:
            raise serializers.ValidationError(
                f"Too long: {length} characters, at most {MAX_MESSAGE_CHARACTERS}."
            )
        return value

    def validate(self, attrs):
        # Only an assistant message that calls tools may come without content.
        if attrs.get("content") is None and not (
            attrs["role"] == "assistant" and attrs.get("tool_calls")
        ):
            raise serializers.ValidationError({"content": ["This field is required."]})
        if attrs["role"] == "tool" and not attrs.get("tool_call_id"):
            raise serializers.ValidationError(
                {"tool_call_id": ["A tool message needs the id of the call it answers."]}
            )
        return attrs


class FunctionSerializer(Serializer):
    name = serializers.RegexField(TOOL_NAME_PATTERN)
    description = StrictCharField(required=False, allow_blank=True)
    parameters = JSONObjectField(required=False)
    strict = StrictBooleanField(required=False, allow_null=True)


class ToolSerializer(Serializer):
    type = serializers.ChoiceField(choices=["function"])
    function = FunctionSerializer()


class JSONSchemaSerializer(Serializer):
    name = serializers.RegexField(TOOL_NAME_PATTERN)
    description = StrictCharField(required=False, allow_blank=True)
    schema = JSONObjectField(required=False, default=dict)
    strict = StrictBooleanField(required=False, allow_null=True)


class ResponseFormatSerializer(Serializer):
    type = serializers.ChoiceField(choices=["text", "json_object", "json_schema"])
    json_schema = JSONSchemaSerializer(required=False)

    def validate(self, attrs):
        if attrs["type"] == "json_schema" and "json_schema" not in attrs:
            raise serializers.ValidationError({"json_schema": ["This field is required."]})
        if attrs["type"] != "json_schema":
            attrs.pop("json_schema", None)
        return attrs


class StreamOptionsSerializer(Serializer):
    include_usage = StrictBooleanField(required=False, default=False)


class GenerationSerializer(Serializer):
    """The fields chat and legacy completions share."""

    model = StrictCharField(max_length=200)
    temperature = StrictFloatField(required=False, min_value=0, max_value=2)
    top_p = StrictFloatField(required=False, min_value=0, max_value=1)
    # Workers AI's, not OpenAI's; vLLM and llama.cpp take it too.
    top_k = StrictIntegerField(required=False, min_value=1)
    max_tokens = StrictIntegerField(required=False, min_value=1)
    stop = StopField(required=False)
    seed = StrictIntegerField(required=False)
    presence_penalty = StrictFloatField(required=False, min_value=-2, max_value=2)
    frequency_penalty = StrictFloatField(required=False, min_value=-2, max_value=2)
    n = StrictIntegerField(
        required=False, min_value=1, max_value=1, error_messages={"max_value": ONLY_ONE_CHOICE}
    )
    logit_bias = JSONObjectField(required=False, allow_null=True)
    stream = StrictBooleanField(required=False, default=False)
    stream_options = StreamOptionsSerializer(required=False)
    user = StrictCharField(required=False, max_length=256)

    def validate_stop(self, value):
        if any(len(stop) > MAX_STOP_CHARACTERS for stop in value):
            raise serializers.ValidationError(
                f"Each stop sequence may have at most {MAX_STOP_CHARACTERS} characters."
            )
        return value

    def validate_logit_bias(self, value):
        if value:
            raise serializers.ValidationError("Not supported; send an empty object or none.")
        return value

    def validate(self, attrs):
        if attrs.get("stream_options") and not attrs["stream"]:
            raise serializers.ValidationError(
                {"stream_options": ["Only allowed when stream is true."]}
            )
        return attrs

    @property
    def include_usage(self):
        return self.validated_data.get("stream_options", {}).get("include_usage", False)

    def sampling_params(self):
        return {k: self.validated_data[k] for k in SAMPLING_PARAMS if k in self.validated_data}


class ChatCompletionSerializer(GenerationSerializer):
    messages = BoundedListField(child=MessageSerializer(), min_length=1, max_length=MAX_MESSAGES)
    # The newer name of max_tokens, sent by recent SDKs.
    max_completion_tokens = StrictIntegerField(required=False, min_value=1)
    tools = BoundedListField(child=ToolSerializer(), required=False, max_length=MAX_TOOLS)
    tool_choice = ToolChoiceField(required=False)
    # Whether the model may call several tools in one turn: passed to OpenAI-compatible
    # servers; on Workers AI the model decides, so it is not sent there.
    parallel_tool_calls = StrictBooleanField(required=False)
    response_format = ResponseFormatSerializer(required=False)
    # How much a reasoning model thinks before answering; sent where the model's schema
    # takes it, else dropped (a model that does not reason has nothing to tune).
    reasoning_effort = serializers.ChoiceField(
        choices=["none", "minimal", "low", "medium", "high", "xhigh"], required=False
    )
    # Groups requests that share a prompt prefix, for upstream prompt caching (see
    # completions/affinity.py); empty or null is the same as none.
    prompt_cache_key = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=MAX_PROMPT_CACHE_KEY_CHARACTERS,
    )
    logprobs = StrictBooleanField(required=False, allow_null=True)
    top_logprobs = StrictIntegerField(required=False, allow_null=True)

    def validate_logprobs(self, value):
        if value:
            raise serializers.ValidationError("Log probabilities are not supported.")
        return value

    def validate_top_logprobs(self, value):
        if value:
            raise serializers.ValidationError("Log probabilities are not supported.")
        return value

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if "max_completion_tokens" in attrs:
            attrs.setdefault("max_tokens", attrs.pop("max_completion_tokens"))
        choice = attrs.get("tool_choice")
        if choice is not None and not attrs.get("tools") and choice != "none":
            raise serializers.ValidationError(
                {"tool_choice": ["Only allowed when tools are given."]}
            )
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            if not any(tool["function"]["name"] == name for tool in attrs["tools"]):
                raise serializers.ValidationError(
                    {"tool_choice": [f"No tool named '{name}' is among the tools."]}
                )
        return attrs


class CompletionSerializer(GenerationSerializer):
    prompt = StringsField(max_items=MAX_PROMPTS)
    suffix = StrictCharField(required=False, allow_null=True, allow_blank=True)
    # OpenAI's default for legacy completions; a client that wants more says so.
    max_tokens = StrictIntegerField(required=False, min_value=1, default=16)
    echo = StrictBooleanField(required=False, default=False)
    best_of = StrictIntegerField(
        required=False, min_value=1, max_value=1, error_messages={"max_value": ONLY_ONE_CHOICE}
    )
    logprobs = StrictIntegerField(required=False, allow_null=True)

    def validate_logprobs(self, value):
        if value:
            raise serializers.ValidationError("Log probabilities are not supported.")
        return value

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if attrs["stream"] and len(attrs["prompt"]) > 1:
            raise serializers.ValidationError(
                {"prompt": ["A streamed completion takes one prompt; send one request each."]}
            )
        return attrs


class EmbeddingSerializer(Serializer):
    model = StrictCharField(max_length=200)
    # Token ids are decoded to text here (completions/token_ids.py): LangChain sends them.
    input = StringsField(max_items=MAX_EMBEDDING_INPUTS, allow_empty_strings=False, token_ids=True)
    encoding_format = serializers.ChoiceField(
        choices=["float", "base64"], required=False, default="float"
    )
    dimensions = StrictIntegerField(required=False, min_value=1)
    user = StrictCharField(required=False, max_length=256)

    def validate(self, attrs):
        try:
            attrs["input"] = [
                text if isinstance(text, str) else token_ids.decode(text, attrs["model"])
                for text in attrs["input"]
            ]
        except token_ids.UndecodableTokens as error:
            raise serializers.ValidationError({"input": [str(error)]}) from None
        return attrs


async def avalidate_body(serializer_class, body):
    """Return a valid serializer for the body, or raise InvalidRequest naming the parameter.

    A body of many items is validated in a pooled thread, not on the event loop: within
    every limit, 2048 messages of 30 tool calls each still take seconds to validate (each
    call is a nested serializer), and every other request would wait for them.
    """
    if isinstance(body, dict) and _items(body) > MAX_ITEMS_ON_THE_LOOP:
        return await sync_to_async(_validate, thread_sensitive=False)(
            serializer_class, body, shared_fields=False
        )
    return validate_body(serializer_class, body)


def validate_body(serializer_class, body):
    """Return a valid serializer for the body, or raise InvalidRequest naming the parameter."""
    return _validate(serializer_class, body, shared_fields=True)


def _validate(serializer_class, body, *, shared_fields):
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    serializer = serializer_class(data=body)
    if shared_fields:
        # DRF deep-copies every declared field, nested ones included, for each serializer
        # it makes: a third of a chat request's time. The fields keep no state of a
        # validation (errors and data stay on the serializer), so one instance's fields
        # serve them all; such validation runs on the event loop, one at a time. A body
        # validated in a thread has fields of its own: the copy is small beside its items.
        serializer.fields = _field_holder(serializer_class).fields
    if not serializer.is_valid():
        param, message = _first_error(serializer.errors)
        raise InvalidRequest(f"Invalid value for '{param}': {message}", param=param)
    return serializer


def _items(body):
    """Count the items a validation of the body would walk, looking at none of them.

    Lists past their limit count for nothing: they are refused before their items are
    validated.
    """
    count = 0
    for name, limit in (("messages", MAX_MESSAGES), ("tools", MAX_TOOLS)):
        items = body.get(name)
        if isinstance(items, list) and len(items) <= limit:
            count += len(items)
            for item in items if name == "messages" else ():
                if isinstance(item, dict):
                    count += sum(
                        len(value)
                        for value in (item.get("tool_calls"), item.get("content"))
                        if isinstance(value, list)
                    )
    for name in ("input", "prompt"):
        if isinstance(body.get(name), list):
            count += len(body[name])
    return count


@functools.cache
def _field_holder(serializer_class):
    return serializer_class()


def _first_error(errors, path=""):
    """Return (parameter path, message) of the first error, as messages[0].content."""
    if isinstance(errors, dict):
        name, value = next(iter(errors.items()))
        if name == "non_field_errors":
            return path or None, _first_error(value, path)[1]
        if isinstance(name, int):
            return _first_error(value, f"{path}[{name}]")
        return _first_error(value, f"{path}.{name}" if path else name)
    if isinstance(errors, list):
        if errors and all(isinstance(e, str) for e in errors):
            return path, str(errors[0])
        for index, item in enumerate(errors):
            if item:
                return _first_error(item, f"{path}[{index}]")
    return path, str(errors)
