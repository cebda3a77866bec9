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


class BoundedListField(serializers.ListField):
    """A list whose length is checked before its items are validated.

    DRF's ListField validates every item and only then applies max_length: a body of
    100,000 tiny messages kept the event loop busy for seconds before the refusal.
    """

    def __init__(self, *, max_length, **kwargs):
        super().__init__(max_length=max_length, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, list) and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
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
    """A string, or a list of text and image parts, as OpenAI's message content.

    Parts are {"type": "text", "text"} and {"type": "image_url", "image_url": {"url"}};
    whether the model can take images is decided once the model is known.
    """

    default_error_messages = {
        "invalid": "Must be a string or a list of content parts.",
        # Doubled braces: DRF formats error messages with str.format().
        "part": 'Each content part must be {{"type": "text", "text": "..."}} or '
        '{{"type": "image_url", "image_url": {{"url": "..."}}}}.',
        "unsupported": "Content parts of type '{type}' are not supported; send text parts.",
        "too_many": "Must hold at most {max_parts} parts.",
    }

    def __init__(self, *, max_parts, **kwargs):
        self.max_parts = max_parts
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if not isinstance(data, list) or not data:
            self.fail("invalid")
        # Measured before any part is looked at (see BoundedListField).
        if len(data) > self.max_parts:
            self.fail("too_many", max_parts=self.max_parts)
        return [self._part(part) for part in data]

    def _part(self, part):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            self.fail("part")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                self.fail("part")
            return {"type": "text", "text": part["text"]}
        if part["type"] == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                self.fail("part")
            kept = {"url": image["url"]}
            if isinstance(image.get("detail"), str):
                kept["detail"] = image["detail"]
            return {"type": "image_url", "image_url": kept}
        self.fail("unsupported", type=part["type"])

    def to_representation(self, value):
        return value


class StringsField(serializers.Field):
    """A string, or a non-empty list of strings; arrays of token ids only where asked for.

    Returns a list of inputs: strings, and with `token_ids` lists of ids too (an array of
    ints is one input, an array of such arrays one input each). `max_items` bounds the
    list's length.
    """

    default_error_messages = {
        "invalid": "Must be a string or a list of strings.",
        "tokens": "Arrays of token ids are not supported; send text.",
        "empty": "Must not be empty.",
        "too_many": "Must hold at most {max_items} items.",
    }

    def __init__(self, *, max_items, allow_empty_strings=True, token_ids=False, **kwargs):
        self.max_items = max_items
        self.allow_empty_strings = allow_empty_strings
        self.token_ids = token_ids
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [data]
        if not isinstance(data, list):
            self.fail("invalid")
        if not data:
            self.fail("empty")
        # Measured before any item is looked at (see BoundedListField).
        if len(data) > self.max_items:
            self.fail("too_many", max_items=self.max_items)
        if any(isinstance(item, (int, list)) for item in data):
            if not self.token_ids:
                self.fail("tokens")
            data = self._token_arrays(data)
        if not all(isinstance(item, (str, list)) for item in data):
            self.fail("invalid")
        if not self.allow_empty_strings and not all(data):
            self.fail("empty")
        return data

    def _token_arrays(self, data):
        if all(_is_token_id(item) for item in data):
            return [data]
        if all(isinstance(item, list) and all(map(_is_token_id, item)) for item in data):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


def _is_token_id(value):
    return isinstance(value, int) and not isinstance(value, bool)


class JSONObjectField(serializers.Field):
    """Any JSON object, taken as it is (a JSON schema, a tool's parameters)."""

    default_error_messages = {"invalid": "Must be a JSON object."}

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class ToolChoiceField(serializers.Field):
    """One of "none", "auto", "required", or {"type": "function", "function": {"name"}}."""

    default_error_messages = {
        "invalid": 'Must be "none", "auto", "required" or '
        '{{"type": "function", "function": {{"name": "..."}}}}.',
    }

    def to_internal_value(self, data):
        if data in ("none", "auto", "required"):
            return data
        if (
            isinstance(data, dict)
            and data.get("type") == "function"
            and isinstance(data.get("function"), dict)
            and isinstance(data["function"].get("name"), str)
        ):
            return {"type": "function", "function": {"name": data["function"]["name"]}}
        self.fail("invalid")

    def to_representation(self, value):
        return value
