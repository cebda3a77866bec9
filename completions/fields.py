"""DRF fields that take JSON values as they are, like OpenAI's API does.

DRF's own fields coerce ("0.5" becomes 0.5, 1 becomes True); a gateway that did so would
accept bodies that the real API refuses, so clients would break when moved.
"""

from rest_framework import serializers


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StopField(serializers.Field):
    """A string, or a list of up to four strings."""

    default_error_messages = {
        "invalid": "Must be a string or a list of up to 4 strings.",
    }

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [data]
        if (
            not isinstance(data, list)
            or len(data) > 4
            or not all(isinstance(s, str) and s for s in data)
        ):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class MessageContentField(serializers.Field):
    """A string, or a list of text parts: [{"type": "text", "text": "..."}]."""

    default_error_messages = {
        "invalid": "Must be a string or a list of text parts.",
        # Doubled braces: DRF formats error messages with str.format().
        "part": 'Each content part must be {{"type": "text", "text": "..."}}.',
        "unsupported": "Content parts of type '{type}' are not supported; send text parts.",
    }

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if not isinstance(data, list) or not data:
            self.fail("invalid")
        for part in data:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                self.fail("part")
            if part["type"] != "text":
                self.fail("unsupported", type=part["type"])
            if not isinstance(part.get("text"), str):
                self.fail("part")
        return [{"type": "text", "text": part["text"]} for part in data]

    def to_representation(self, value):
        return value
