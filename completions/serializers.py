"""Validation of request bodies, with DRF serializers run from plain async views."""

from rest_framework import serializers

from completions.fields import (
    MessageContentField,
    StopField,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
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
)


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = MessageContentField(required=False, allow_null=True)
    name = StrictCharField(required=False, max_length=64)
    tool_call_id = StrictCharField(required=False)
    tool_calls = serializers.ListField(child=serializers.DictField(), required=False)

    def validate(self, attrs):
        # Only an assistant message that calls tools may come without content.
        if attrs.get("content") is None and not (
            attrs["role"] == "assistant" and attrs.get("tool_calls")
        ):
            raise serializers.ValidationError({"content": ["This field is required."]})
        return attrs


class StreamOptionsSerializer(serializers.Serializer):
    include_usage = StrictBooleanField(required=False, default=False)


class ChatCompletionSerializer(serializers.Serializer):
    model = StrictCharField(max_length=200)
    messages = serializers.ListField(child=MessageSerializer(), min_length=1, max_length=2048)
    temperature = StrictFloatField(required=False, min_value=0, max_value=2)
    top_p = StrictFloatField(required=False, min_value=0, max_value=1)
    max_tokens = StrictIntegerField(required=False, min_value=1)
    # The newer name of max_tokens, sent by recent SDKs.
    max_completion_tokens = StrictIntegerField(required=False, min_value=1)
    stop = StopField(required=False)
    seed = StrictIntegerField(required=False)
    presence_penalty = StrictFloatField(required=False, min_value=-2, max_value=2)
    frequency_penalty = StrictFloatField(required=False, min_value=-2, max_value=2)
    n = StrictIntegerField(required=False, min_value=1, max_value=1)
    stream = StrictBooleanField(required=False, default=False)
    stream_options = StreamOptionsSerializer(required=False)
    user = StrictCharField(required=False, max_length=256)

    def validate(self, attrs):
        if "max_completion_tokens" in attrs:
            attrs.setdefault("max_tokens", attrs.pop("max_completion_tokens"))
        if attrs.get("stream_options") and not attrs["stream"]:
            raise serializers.ValidationError(
                {"stream_options": ["Only allowed when stream is true."]}
            )
        return attrs

    def sampling_params(self):
        return {k: self.validated_data[k] for k in SAMPLING_PARAMS if k in self.validated_data}


def validate_body(serializer_class, body):
    """Return a valid serializer for the body, or raise InvalidRequest naming the parameter."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    serializer = serializer_class(data=body)
    if not serializer.is_valid():
        param, message = _first_error(serializer.errors)
        raise InvalidRequest(f"Invalid value for '{param}': {message}", param=param)
    return serializer


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
