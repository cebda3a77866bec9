"""Validation of the media endpoints' bodies, with OpenAI's (and Cohere's) parameter names.

Images, speech, moderations and rerank take JSON; transcriptions and translations take a
multipart form (completions/multipart.py), whose values all arrive as strings.
"""

import re

from rest_framework import serializers

from completions.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StringsField,
)

# OpenAI takes at most 10 images a request (dall-e-2's n).
MAX_IMAGES = 10
# OpenAI's prompt limit for dall-e-3 and gpt-image-1, in characters; Workers AI's models
# take less (flux-1-schnell 2048), which their schema makes the provider refuse.
MAX_IMAGE_PROMPT = 32_000
SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
# The size a model that takes no width and height makes, and OpenAI's default.
DEFAULT_SIZE = "1024x1024"
# OpenAI's limit on the text of one speech request, in characters.
MAX_SPEECH_CHARACTERS = 4096
SPEECH_FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
TRANSCRIPTION_FORMATS = ["json", "text", "srt", "verbose_json", "vtt"]
# Inputs of one moderation request, each a call to the classifier.
MAX_MODERATION_INPUTS = 32
# Documents of one rerank request (Cohere's documented limit is 1000).
MAX_RERANK_DOCUMENTS = 1000


class ImageSerializer(serializers.Serializer):
    model = StrictCharField(max_length=200)
    prompt = StrictCharField(max_length=MAX_IMAGE_PROMPT)
    n = StrictIntegerField(required=False, default=1, min_value=1, max_value=MAX_IMAGES)
    size = StrictCharField(required=False, allow_null=True, default=None)
    response_format = serializers.ChoiceField(
        choices=["b64_json", "url"], required=False, allow_null=True, default=None
    )
    # Taken and not used: Workers AI's models have no quality or style settings.
    quality = StrictCharField(required=False, allow_null=True)
    style = StrictCharField(required=False, allow_null=True)
    user = StrictCharField(required=False, max_length=256)

    def validate_size(self, size):
        """Return (width, height) in pixels, or None for the model's own size."""
        if size in (None, "auto", DEFAULT_SIZE):
            return None
        match = SIZE.match(size)
        if not match:
            raise serializers.ValidationError("Must be 'auto' or WIDTHxHEIGHT, like 1024x1024.")
        return int(match[1]), int(match[2])


class SpeechSerializer(serializers.Serializer):
    model = StrictCharField(max_length=200)
    input = StrictCharField(max_length=MAX_SPEECH_CHARACTERS)
    voice = StrictCharField(max_length=100)
    response_format = serializers.ChoiceField(choices=SPEECH_FORMATS, required=False, default="mp3")
    # Taken and not used: no Workers AI speech model sets its pace.
    speed = serializers.FloatField(required=False, min_value=0.25, max_value=4.0)
    instructions = StrictCharField(required=False, allow_blank=True)


class TranscriptionSerializer(serializers.Serializer):
    """The form fields of a transcription or translation; the file is checked apart."""

    model = serializers.CharField(max_length=200)
    language = serializers.CharField(required=False, max_length=20)
    prompt = serializers.CharField(required=False, allow_blank=True)
    response_format = serializers.ChoiceField(
        choices=TRANSCRIPTION_FORMATS, required=False, default="json"
    )
    # Taken and not used: Workers AI's whisper models take no temperature.
    temperature = serializers.FloatField(required=False, min_value=0, max_value=1)


class ModerationSerializer(serializers.Serializer):
    model = StrictCharField(max_length=200)
    input = StringsField(max_items=MAX_MODERATION_INPUTS)


class DocumentField(serializers.Field):
    """A rerank document: a string, or {"text": ...} as Cohere and Jina also take."""

    default_error_messages = {"invalid": "Must be a string or an object with a 'text' string."}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            data = data.get("text")
        if not isinstance(data, str) or not data:
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class RerankSerializer(serializers.Serializer):
    model = StrictCharField(max_length=200)
    query = StrictCharField()
    documents = serializers.ListField(
        child=DocumentField(), min_length=1, max_length=MAX_RERANK_DOCUMENTS
    )
    top_n = StrictIntegerField(required=False, min_value=1)
    return_documents = StrictBooleanField(required=False, default=False)
