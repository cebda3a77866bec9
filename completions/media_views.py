"""The media endpoints: images, transcriptions and translations, speech, moderations, rerank.

The same pipeline as completions/views.py: authenticate, authorize and limit
(gateway/decorators.py) -> validate (media_serializers.py, multipart.py for audio uploads)
-> find the model by its capability (registry.py) -> call the provider (providers/media.py)
-> record usage in the endpoint's unit (apikeys/usage.py): images, audio seconds,
characters, documents; moderations in the classifier's tokens.

A call that fails after its provider may have read the input (a 5xx, a timeout after the
request was sent: the error's `prompt_spent`), or that the client leaves while it runs, is
charged its input as the text endpoints charge a prompt: the audio's seconds as the upload
bounds them, the characters to speak, the documents to rank, the classifier's prompts as
the gateway counts them. An image is charged only once made. A refusal before the model
ran is charged nothing. Every record of a media endpoint is in the endpoint's unit.
"""

import asyncio
import base64
import io
import math
import time
import uuid
import wave

from django.http import HttpResponse, JsonResponse

from apikeys.models import UsageRecord
from apikeys.throttling import hold_seconds
from apikeys.usage import UsageMeter
from completions import worst_case
from completions.fallbacks import call_with_fallbacks
from completions.media_serializers import (
    ImageSerializer,
    ModerationSerializer,
    RerankSerializer,
    SpeechSerializer,
    TranscriptionSerializer,
)
from completions.multipart import form_body
from completions.providers.base import Usage, estimate_tokens
from completions.providers.media import (
    ImageRequest,
    ModerationRequest,
    RerankRequest,
    SpeechRequest,
    TranscriptionRequest,
)
from completions.registry import fallback_chain, resolve_model
from completions.serializers import validate_body
from completions.views import MAX_PARALLEL_CALLS, _all, reserve
from gateway.decorators import api_endpoint, json_body
from gateway.errors import GatewayError, InvalidRequest


@api_endpoint(methods=["POST"], write=True)
async def image_generations(request):
    data = validate_body(ImageSerializer, json_body(request)).validated_data
    if data["response_format"] == "url":
        raise InvalidRequest(
            "The gateway keeps no images to link to; set 'response_format' to 'b64_json'.",
            param="response_format",
        )
    model = await resolve_model(data["model"], request.api_key, "images")
    size = data["size"] or (None, None)
    meter = UsageMeter(
        request, model, "/v1/images/generations", False, requested_model=data["model"]
    )
    meter.counted(0, UsageRecord.IMAGES)

    def image_for(candidate):
        return ImageRequest(
            model=candidate.name,
            prompt=data["prompt"],
            width=size[0],
            height=size[1],
            input_schema=candidate.input_schema,
        )

    async def call(provider, candidate):
        made = []

        async def one():
            result = await provider.generate_image(image_for(candidate))
            made.append(result)
            return result

        # The images made before another failed were paid for upstream, whatever the
        # failure: they are charged.
        images = _all(one() for _ in range(data["n"]))
        return await _charged(images, meter, made.__len__, made=True)

    candidates = fallback_chain(model, request.api_key, "images")
    rounds = math.ceil(data["n"] / MAX_PARALLEL_CALLS)
    await reserve(
        request,
        meter,
        worst_case.units(candidates, data["n"]),
        hold_seconds(False, len(candidates), rounds),
    )
    _, _, results = await call_with_fallbacks(candidates, meter, call)
    meter.counted(len(results), UsageRecord.IMAGES)
    await meter.save()
    return JsonResponse(
        {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(result.image).decode()} for result in results],
        }
    )


@api_endpoint(methods=["POST"], write=True)
async def audio_transcriptions(request):
    return await _transcribe(request, "transcribe", "transcriptions")


@api_endpoint(methods=["POST"], write=True)
async def audio_translations(request):
    return await _transcribe(request, "translate", "translations")


async def _transcribe(request, task, capability):
    fields, audio = form_body(request)
    data = validate_body(TranscriptionSerializer, fields).validated_data
    model = await resolve_model(data["model"], request.api_key, capability)
    meter = UsageMeter(
        request, model, f"/v1/audio/{capability}", False, requested_model=data["model"]
    )
    meter.counted(0, UsageRecord.AUDIO_SECONDS)
    # What a call that fails after sending the upload pays: the seconds a WAV file's
    # header tells, else nothing. The upload's size bounds a compressed file's length only
    # loosely (at 500 bytes a second, a 128 kbit/s mp3 would pay 16 times its length).
    # A header may claim more data than the file holds: never past the upload's bound.
    heard = min(_wav_seconds(audio), worst_case.audio_seconds(len(audio)))

    async def call(provider, candidate):
        transcription = provider.transcribe(
            TranscriptionRequest(
                model=candidate.name,
                audio=audio,
                task=task,
                language=data.get("language"),
                prompt=data.get("prompt"),
                input_schema=candidate.input_schema,
            )
        )
        return await _charged(transcription, meter, lambda: heard)

    candidates = fallback_chain(model, request.api_key, capability)
    # The most seconds the upload may hold is what is reserved.
    most = worst_case.audio_seconds(len(audio))
    await reserve(
        request, meter, worst_case.units(candidates, most), hold_seconds(False, len(candidates))
    )
    _, _, result = await call_with_fallbacks(candidates, meter, call)
    # Whole seconds, rounded up, as audio is billed by the started second; 0 when the model
    # said nothing of the length.
    seconds = math.ceil(result.duration) if result.duration else 0
    meter.counted(seconds, UsageRecord.AUDIO_SECONDS)
    await meter.save()
    return _transcription_response(result, data["response_format"], task, seconds)


def _wav_seconds(audio):
    """Return the started seconds of a WAV upload (frames over frame rate, from its
    header), or 0 for any other kind of file."""
    try:
        with wave.open(io.BytesIO(audio)) as wav:
            return math.ceil(wav.getnframes() / wav.getframerate())
    except (wave.Error, EOFError, ZeroDivisionError):
        return 0


def _transcription_response(result, response_format, task, seconds):
    if response_format == "text":
        return HttpResponse(result.text + "\n", content_type="text/plain; charset=utf-8")
    if response_format in ("srt", "vtt"):
        return HttpResponse(
            _subtitles(result, response_format), content_type="text/plain; charset=utf-8"
        )
    usage = {"type": "duration", "seconds": seconds}
    if response_format == "json":
        return JsonResponse({"text": result.text, "usage": usage})
    body = {
        "task": task,
        "language": result.language or "",
        "duration": result.duration or 0,
        "text": result.text,
        "segments": [
            {"id": s.id, "start": s.start, "end": s.end, "text": s.text} for s in result.segments
        ],
        "usage": usage,
    }
    if result.words:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in result.words]
    return JsonResponse(body)


# Words of one subtitle cue, for a model that times words but not segments (whisper).
WORDS_PER_CUE = 8


def _subtitles(result, kind):
    """Return the transcription as SubRip (srt) or WebVTT (vtt) text."""
    cues = [(s.start, s.end, s.text.strip()) for s in result.segments]
    if not cues and result.words:
        for start in range(0, len(result.words), WORDS_PER_CUE):
            group = result.words[start : start + WORDS_PER_CUE]
            cues.append((group[0].start, group[-1].end, " ".join(w.word for w in group)))
    if not cues:
        cues = [(0.0, result.duration or 0.0, result.text)]
    separator = "," if kind == "srt" else "."
    lines = ["WEBVTT", ""] if kind == "vtt" else []
    for number, (start, end, text) in enumerate(cues, start=1):
        if kind == "srt":
            lines.append(str(number))
        lines.append(f"{_timestamp(start, separator)} --> {_timestamp(end, separator)}")
        lines.extend([text, ""])
    return "\n".join(lines)


def _timestamp(seconds, separator):
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"


@api_endpoint(methods=["POST"], write=True)
async def audio_speech(request):
    data = validate_body(SpeechSerializer, json_body(request)).validated_data
    model = await resolve_model(data["model"], request.api_key, "speech")
    meter = UsageMeter(request, model, "/v1/audio/speech", False, requested_model=data["model"])
    meter.counted(0, UsageRecord.CHARACTERS)
    characters = len(data["input"])

    async def call(provider, candidate):
        speech = provider.speak(
            SpeechRequest(
                model=candidate.name,
                text=data["input"],
                voice=data["voice"],
                format=data["response_format"],
                input_schema=candidate.input_schema,
            )
        )
        return await _charged(speech, meter, lambda: characters)

    candidates = fallback_chain(model, request.api_key, "speech")
    await reserve(
        request,
        meter,
        worst_case.units(candidates, characters),
        hold_seconds(False, len(candidates)),
    )
    _, _, result = await call_with_fallbacks(candidates, meter, call)
    meter.counted(characters, UsageRecord.CHARACTERS)
    await meter.save()
    return HttpResponse(result.audio, content_type=result.content_type)


# Llama Guard 3's hazard categories (its model card, MLCommons' taxonomy) and the OpenAI
# moderation categories each one flags. S5 defamation, S6 specialized advice, S7 privacy,
# S8 intellectual property and S13 elections have no OpenAI counterpart: they flag the
# input and set no category.
LLAMA_GUARD_CATEGORIES = {
    "S1": ["violence", "illicit/violent"],  # violent crimes
    "S2": ["illicit"],  # non-violent crimes
    "S3": ["sexual", "illicit"],  # sex-related crimes
    "S4": ["sexual/minors"],  # child sexual exploitation
    "S5": [],  # defamation
    "S6": [],  # specialized advice
    "S7": [],  # privacy
    "S8": [],  # intellectual property
    "S9": ["illicit/violent", "violence"],  # indiscriminate weapons
    "S10": ["hate"],  # hate
    "S11": ["self-harm"],  # suicide and self-harm
    "S12": ["sexual"],  # sexual content
    "S13": [],  # elections
    "S14": ["illicit"],  # code interpreter abuse
}
OPENAI_CATEGORIES = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
]


@api_endpoint(methods=["POST"], write=True)
async def moderations(request):
    data = validate_body(ModerationSerializer, json_body(request)).validated_data
    model = await resolve_model(data["model"], request.api_key, "moderations")
    # Each text's tokens as the gateway counts them, paid for if its call fails after
    # the classifier may have read it.
    prompt_tokens = [estimate_tokens(text) for text in data["input"]]
    meter = UsageMeter(
        request,
        model,
        "/v1/moderations",
        False,
        requested_model=data["model"],
        prompt_tokens=sum(prompt_tokens),
    )

    async def call(provider, candidate):
        return await _all(
            [
                provider.moderate(ModerationRequest(model=candidate.name, text=text))
                for text in data["input"]
            ],
            meter,
            prompt_tokens,
        )

    candidates = fallback_chain(model, request.api_key, "moderations")
    rounds = math.ceil(len(data["input"]) / MAX_PARALLEL_CALLS)
    await reserve(
        request,
        meter,
        worst_case.moderations(data["input"], candidates),
        hold_seconds(False, len(candidates), rounds),
    )
    answered, _, results = await call_with_fallbacks(candidates, meter, call)
    # A classifier that reports no usage is charged the gateway's count, as a failed call is.
    usage = Usage()
    for tokens, result in zip(prompt_tokens, results, strict=True):
        usage += result.usage or Usage(prompt_tokens=tokens, estimated=True)
    meter.succeeded(usage)
    await meter.save()
    return JsonResponse(
        {
            "id": "modr-" + uuid.uuid4().hex,
            "model": data["model"] if answered == model else answered.name,
            "results": [_moderation_result(result) for result in results],
        }
    )


def _moderation_result(result):
    flagged = set()
    for category in result.categories:
        flagged.update(LLAMA_GUARD_CATEGORIES.get(category.strip().upper(), []))
    return {
        "flagged": result.flagged,
        "categories": {name: name in flagged for name in OPENAI_CATEGORIES},
        # Llama Guard gives a verdict, not scores: 1.0 for a category it names, else 0.0.
        "category_scores": {name: float(name in flagged) for name in OPENAI_CATEGORIES},
        "category_applied_input_types": {
            name: ["text"] if name in flagged else [] for name in OPENAI_CATEGORIES
        },
    }


@api_endpoint(methods=["POST"], write=True)
async def rerank(request):
    data = validate_body(RerankSerializer, json_body(request)).validated_data
    model = await resolve_model(data["model"], request.api_key, "rerank")
    documents = data["documents"]
    meter = UsageMeter(request, model, "/v1/rerank", False, requested_model=data["model"])
    meter.counted(0, UsageRecord.DOCUMENTS)

    async def call(provider, candidate):
        ranking = provider.rerank(
            RerankRequest(
                model=candidate.name,
                query=data["query"],
                documents=documents,
                top_n=data.get("top_n"),
            )
        )
        return await _charged(ranking, meter, lambda: len(documents))

    await reserve(request, meter, worst_case.units([model], len(documents)), hold_seconds(False))
    # No fallbacks: another reranker's scores are on another scale.
    _, _, result = await call_with_fallbacks([model], meter, call)
    meter.counted(len(documents), UsageRecord.DOCUMENTS)
    await meter.save()
    ranking = result.ranking[: data["top_n"]] if data.get("top_n") else result.ranking
    results = []
    for index, score in ranking:
        item = {"index": index, "relevance_score": score}
        if data["return_documents"]:
            item["document"] = {"text": documents[index]}
        results.append(item)
    return JsonResponse(
        {
            "id": "rerank-" + uuid.uuid4().hex,
            "model": data["model"],
            "results": results,
            "usage": {"documents": len(documents)},
        }
    )


async def _charged(call, meter, consumed, made=False):
    """Await a media call; if it fails after its provider may have read the input, or the
    client leaves while it runs, first count `consumed()` of the meter's unit on it.

    With `made`, consumed() counts what was made (images), charged whatever the failure.
    """
    try:
        return await call
    except asyncio.CancelledError:
        meter.counted(consumed(), meter.unit)
        raise
    except GatewayError as error:
        meter.counted(consumed() if made or error.prompt_spent else 0, meter.unit)
        raise
