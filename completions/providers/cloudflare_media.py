"""Workers AI's media tasks: the bodies CloudflareProvider sends and how it reads answers.

All through POST /ai/run/{model} ([doc] workers-ai-rest.md section 6; each model's request
and answer schemas in its catalogue entry):

    Text-to-Image   flux-1-schnell {prompt, steps} -> {"image": base64 JPEG}; it refuses
                    fields its schema lacks (width, height). SDXL {prompt, width, height
                    256-2048, ...} -> a bare image/png body, no JSON envelope.
    Speech to text  whisper {"audio": [0-255 ints]} -> {text, words, vtt};
                    whisper-large-v3-turbo {"audio": base64, task, language,
                    initial_prompt} -> {text, segments: [{start, end, text, words}],
                    transcription_info: {language, duration}, vtt}.
    Text to speech  melotts {prompt, lang} -> {"audio": base64 MP3} (or bare audio/mpeg);
                    aura-1 {text, speaker, encoding, container} -> bare audio (MP3 unless
                    asked otherwise).
    Moderation      llama-guard-3-8b {messages, response_format: json_object} ->
                    {response: {safe, categories: ["S1", ...]} | "unsafe\\nS1,S2", usage}.
    Reranking       bge-reranker-base {query, contexts: [{text}], top_k} ->
                    {response: [{id, score}]}.
"""

import base64
import binascii

from completions.providers.media import (
    ImageResult,
    ModerationResult,
    RerankResult,
    Segment,
    SpeechResult,
    TranscriptionResult,
    Word,
)
from completions.providers.types import Usage
from gateway.errors import InvalidRequest, UpstreamError


def schema_fields(input_schema, field=None):
    """Return the properties of the request schema's object form (the one with `field`).

    whisper's schema is oneOf [binary string, {audio}]; the others are one object.
    """
    if not isinstance(input_schema, dict):
        return {}
    forms = input_schema.get("oneOf") or input_schema.get("anyOf") or [input_schema]
    for form in forms:
        properties = form.get("properties") if isinstance(form, dict) else None
        if isinstance(properties, dict) and (field is None or field in properties):
            return properties
    return {}


def image_body(request):
    body = {"prompt": request.prompt}
    if request.width is None:
        return body
    fields = schema_fields(request.input_schema)
    if not fields:
        raise InvalidRequest(
            f"The sizes the model '{request.model}' takes are not known (its schema is not "
            "stored: run sync_models); leave 'size' out.",
            param="size",
        )
    if "width" not in fields or "height" not in fields:
        # flux-1-schnell's schema has additionalProperties: false, and Workers AI answers
        # a width with a 400 ([3p] in workers-ai-rest.md section 6).
        raise InvalidRequest(
            f"The model '{request.model}' makes images of one size only; "
            "leave 'size' out or set it to 'auto' or '1024x1024'.",
            param="size",
        )
    for name, pixels in (("width", request.width), ("height", request.height)):
        low = fields[name].get("minimum")
        high = fields[name].get("maximum")
        if (low is not None and pixels < low) or (high is not None and pixels > high):
            raise InvalidRequest(
                f"The model '{request.model}' takes a {name} from {low} to {high} pixels; "
                f"'size' asks for {pixels}.",
                param="size",
            )
    return {**body, "width": request.width, "height": request.height}


def read_image(result, binary):
    """Return the ImageResult of an answer: flux's {"image": base64} or SDXL's bare PNG."""
    if binary is not None:
        content, content_type = binary
        return ImageResult(image=content, content_type=content_type or "image/png")
    encoded = result.get("image")
    image = _b64decode(encoded) if isinstance(encoded, str) else None
    if not image:
        raise UpstreamError("The provider answered without an image.")
    # flux-1-schnell's image is a JPEG ([doc] section 6); told by its first bytes all the same.
    content_type = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
    return ImageResult(image=image, content_type=content_type)


def transcription_body(request):
    fields = schema_fields(request.input_schema, "audio")
    if fields.get("audio", {}).get("type") == "array":
        # whisper and whisper-tiny-en: the file's bytes as a list of 0-255 integers.
        return {"audio": list(request.audio)}
    body = {"audio": base64.b64encode(request.audio).decode()}
    if request.task == "translate":
        if fields and "task" not in fields:
            raise InvalidRequest(
                f"The model '{request.model}' does not translate audio; use "
                "/v1/audio/transcriptions, or a model that translates.",
                param="model",
                code="unsupported_model",
            )
        body["task"] = "translate"
    if request.language and (not fields or "language" in fields):
        body["language"] = request.language
    if request.prompt and (not fields or "initial_prompt" in fields):
        body["initial_prompt"] = request.prompt
    return body


def read_transcription(result):
    text = result.get("text")
    if not isinstance(text, str):
        raise UpstreamError("The provider answered without a transcription.")
    segments = []
    words = _words(result.get("words"))
    for number, segment in enumerate(_dicts(result.get("segments"))):
        start, end = _seconds(segment.get("start")), _seconds(segment.get("end"))
        segments.append(
            Segment(id=number, start=start, end=end, text=str(segment.get("text") or ""))
        )
        # whisper-large-v3-turbo gives words only inside its segments.
        words.extend(_words(segment.get("words")))
    info = result.get("transcription_info")
    info = info if isinstance(info, dict) else {}
    duration = info.get("duration")
    if not isinstance(duration, int | float) or isinstance(duration, bool):
        # whisper says nothing of the length: the end of the last word or segment.
        ends = [w.end for w in words] + [s.end for s in segments]
        duration = max(ends) if ends else None
    language = info.get("language")
    return TranscriptionResult(
        text=text.strip(),
        duration=duration,
        language=language if isinstance(language, str) else None,
        words=words,
        segments=segments,
    )


# OpenAI's response_format -> Deepgram's {encoding, container} on aura-1 ([types] in
# workers-ai-rest.md section 6; its schema's enums), and the content type of the answer.
AURA_FORMATS = {
    "mp3": ({"encoding": "mp3"}, "audio/mpeg"),
    "wav": ({"encoding": "linear16", "container": "wav"}, "audio/wav"),
    "flac": ({"encoding": "flac"}, "audio/flac"),
    "opus": ({"encoding": "opus", "container": "ogg"}, "audio/ogg"),
    "aac": ({"encoding": "aac"}, "audio/aac"),
    "pcm": ({"encoding": "linear16", "container": "none"}, "audio/pcm"),
}
# OpenAI's voices: a client that names one (the SDK requires a voice) gets the model's
# default speaker, as none of them is a Workers AI speaker.
OPENAI_VOICES = {
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
}


def speech_body(request):
    """Return the body and the content type of the audio asked for."""
    fields = schema_fields(request.input_schema)
    if "prompt" in fields:
        # melotts: MP3 only, no voices; `lang` left at its default, English.
        if request.format != "mp3":
            raise InvalidRequest(
                f"The model '{request.model}' speaks MP3 only; set 'response_format' to 'mp3'.",
                param="response_format",
            )
        return {"prompt": request.text}, "audio/mpeg"
    encoding, content_type = AURA_FORMATS[request.format]
    body = {"text": request.text}
    if request.format != "mp3":
        body.update(encoding)
    speakers = fields.get("speaker", {}).get("enum") or []
    voice = request.voice
    if voice and voice not in OPENAI_VOICES:
        if speakers and voice not in speakers:
            raise InvalidRequest(
                f"The model '{request.model}' has no voice '{voice}'; its voices are "
                f"{', '.join(speakers)} (OpenAI's voice names give its default).",
                param="voice",
            )
        body["speaker"] = voice
    return body, content_type


def read_speech(result, binary, content_type):
    if binary is not None:
        content, sent_type = binary
        return SpeechResult(audio=content, content_type=sent_type or content_type)
    encoded = result.get("audio")
    audio = _b64decode(encoded) if isinstance(encoded, str) else None
    if not audio:
        raise UpstreamError("The provider answered without audio.")
    return SpeechResult(audio=audio, content_type=content_type)


def moderation_body(request):
    return {
        "messages": [{"role": "user", "content": request.text}],
        "response_format": {"type": "json_object"},
    }


def read_moderation(result):
    """Read Llama Guard's verdict: {safe, categories} in JSON mode, else "safe" or
    "unsafe\\nS1,S10" (Llama Guard 3's own output format)."""
    response = result.get("response")
    usage = Usage.reported(result.get("usage"))
    if isinstance(response, dict) and isinstance(response.get("safe"), bool):
        categories = [c for c in response.get("categories") or [] if isinstance(c, str)]
        return ModerationResult(flagged=not response["safe"], categories=categories, usage=usage)
    if isinstance(response, str) and response.strip():
        verdict, _, listed = response.strip().partition("\n")
        if verdict.strip().lower() in ("safe", "unsafe"):
            categories = [c.strip() for c in listed.split(",") if c.strip()]
            return ModerationResult(
                flagged=verdict.strip().lower() == "unsafe", categories=categories, usage=usage
            )
    raise UpstreamError("The provider answered the moderation without a verdict.")


def rerank_body(request):
    body = {"query": request.query, "contexts": [{"text": text} for text in request.documents]}
    if request.top_n is not None:
        body["top_k"] = request.top_n
    return body


def read_rerank(result, count):
    ranking = []
    for item in _dicts(result.get("response")):
        index, score = item.get("id"), item.get("score")
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index < count
            or not isinstance(score, int | float)
        ):
            raise UpstreamError("The provider answered the ranking with an unknown document.")
        ranking.append((index, float(score)))
    ranking.sort(key=lambda pair: pair[1], reverse=True)
    return RerankResult(ranking=ranking)


def _b64decode(text):
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _dicts(items):
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _seconds(value):
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _words(items):
    return [
        Word(
            word=str(item.get("word") or "").strip(),
            start=_seconds(item.get("start")),
            end=_seconds(item.get("end")),
        )
        for item in _dicts(items)
    ]
