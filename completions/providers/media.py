"""Requests and results of the media endpoints: images, audio, moderation, reranking.

A provider turns each request into a call to its upstream (BaseProvider.generate_image,
transcribe, speak, moderate, rerank) and answers with the matching result, which
completions/media_views.py renders in OpenAI's (or, for reranking, Cohere's) format.
"""

from dataclasses import dataclass, field

from completions.providers.types import Usage


@dataclass
class ImageRequest:
    """One image from a prompt; the view fans `n` out into n of these."""

    model: str
    prompt: str
    # Pixels, or None for the model's own default size.
    width: int | None = None
    height: int | None = None
    # The model's request schema ({"type": "object", "properties": ...}), or None if unknown.
    input_schema: dict | None = None


@dataclass
class ImageResult:
    image: bytes
    # The image's media type as the upstream sent it (image/png, image/jpeg).
    content_type: str


@dataclass
class TranscriptionRequest:
    model: str
    audio: bytes
    # "transcribe" or "translate" (to English).
    task: str = "transcribe"
    # ISO-639-1 code of the spoken language, or None to let the model detect it.
    language: str | None = None
    prompt: str | None = None
    input_schema: dict | None = None


@dataclass
class Word:
    word: str
    start: float
    end: float


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str


@dataclass
class TranscriptionResult:
    text: str
    # Seconds of audio heard, or None when the upstream did not say.
    duration: float | None = None
    language: str | None = None
    words: list[Word] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)


@dataclass
class SpeechRequest:
    model: str
    text: str
    voice: str | None = None
    # The client's response_format (mp3, wav, flac, opus, aac, pcm).
    format: str = "mp3"
    input_schema: dict | None = None


@dataclass
class SpeechResult:
    audio: bytes
    content_type: str


@dataclass
class ModerationRequest:
    model: str
    text: str


@dataclass
class ModerationResult:
    flagged: bool
    # The classifier's own category names (Llama Guard's S1-S14) of an unsafe text.
    categories: list[str]
    usage: Usage | None = None


@dataclass
class RerankRequest:
    model: str
    query: str
    documents: list[str]
    top_n: int | None = None


@dataclass
class RerankResult:
    # (index into the documents, relevance score), best first.
    ranking: list[tuple[int, float]]
