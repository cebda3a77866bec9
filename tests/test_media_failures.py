"""A media request whose provider failed after taking it still leaves a usage record: its
status the error's, its unit the endpoint's, and what the provider may have consumed of
the input charged at the model's price (the seconds of a WAV upload, which its header
tells; nothing for a compressed one, whose length the gateway cannot tell; the characters
to speak, the documents to rank, the classifier's prompt); an image that was
not made costs nothing. A refusal before the model ran (a 4xx) is charged nothing.

The fake upstream answers 500 to a model named with "fail-500", 400 to "bad-request".
"""

import io
import wave
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile

from apikeys.models import UsageRecord
from completions.models import Model
from tests import workers_ai_models
from tests.media_models import AURA, FLUX, LLAMA_GUARD, RERANKER, WHISPER_TURBO

pytestmark = pytest.mark.django_db(transaction=True)

SPOKEN = b"hello there general kenobi"
UNIT_PRICE = Decimal("0.01")


def _failing(provider, like, fault="fail-500"):
    """Create a model that has the schemas of the fixture model `like` and fails so."""
    entry = workers_ai_models.entry(like)
    return Model.objects.create(
        name=f"@cf/test/{like.rsplit('/', 1)[-1]}-{fault}",
        provider=provider,
        task=entry["task"]["name"],
        input_schema=entry["schema"]["input"],
        output_schema=entry["schema"]["output"],
        unit_price=UNIT_PRICE,
        input_price=Decimal("1000"),
        output_price=Decimal("1000"),
    )


@sync_to_async
def _record():
    [record] = UsageRecord.objects.all()
    return record


async def _post(api, persona, path, **body):
    return await api.post(path, data=body, content_type="application/json", headers=persona.headers)


def _wav(seconds, rate=16_000):
    """A mono 16-bit PCM WAV file of silence lasting `seconds`."""
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\0\0" * int(seconds * rate))
    return out.getvalue()


async def _transcribe(api, persona, model, upload):
    return await api.post(
        "/v1/audio/transcriptions",
        data={"model": model.name, "file": upload},
        headers=persona.headers,
    )


async def test_a_wav_transcription_the_provider_failed_is_charged_the_seconds_of_its_upload(
    api, alice, cloudflare
):
    model = await sync_to_async(_failing)(cloudflare, WHISPER_TURBO)
    upload = SimpleUploadedFile("speech.wav", _wav(3.2), content_type="audio/wav")

    response = await _transcribe(api, alice, model, upload)

    assert response.status_code == 502
    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.unit == UsageRecord.AUDIO_SECONDS
    # Started seconds, as a transcription that succeeds is billed.
    assert record.units == 4
    assert record.cost == 4 * UNIT_PRICE


async def test_a_compressed_transcription_the_provider_failed_is_recorded_at_no_charge(
    api, alice, cloudflare
):
    # An upper bound from the upload's size (500 bytes a second) would charge a 128 kbit/s
    # mp3 sixteen times its length: what cannot be told is not charged.
    model = await sync_to_async(_failing)(cloudflare, WHISPER_TURBO)
    upload = SimpleUploadedFile("speech.mp3", SPOKEN, content_type="audio/mpeg")

    response = await _transcribe(api, alice, model, upload)

    assert response.status_code == 502
    record = await _record()
    assert (record.status, record.unit) == (UsageRecord.UPSTREAM_ERROR, UsageRecord.AUDIO_SECONDS)
    assert (record.units, record.cost) == (0, 0)


async def test_speech_the_provider_failed_is_charged_its_characters(api, alice, cloudflare):
    model = await sync_to_async(_failing)(cloudflare, AURA)

    response = await _post(
        api, alice, "/v1/audio/speech", model=model.name, input="Good morning", voice="alloy"
    )

    assert response.status_code == 502
    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert (record.unit, record.units) == (UsageRecord.CHARACTERS, len("Good morning"))
    assert record.cost == len("Good morning") * UNIT_PRICE


async def test_a_rerank_the_provider_failed_is_charged_its_documents(api, alice, cloudflare):
    model = await sync_to_async(_failing)(cloudflare, RERANKER)

    response = await _post(
        api, alice, "/v1/rerank", model=model.name, query="paris", documents=["a", "b", "c"]
    )

    assert response.status_code == 502
    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert (record.unit, record.units) == (UsageRecord.DOCUMENTS, 3)
    assert record.cost == 3 * UNIT_PRICE


async def test_a_moderation_the_provider_failed_is_charged_its_prompts(api, alice, cloudflare):
    model = await sync_to_async(_failing)(cloudflare, LLAMA_GUARD)
    texts = ["one two three", "four five"]

    response = await _post(api, alice, "/v1/moderations", model=model.name, input=texts)

    assert response.status_code == 502
    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.unit == UsageRecord.TOKENS
    # As the gateway counts them: 13 and 9 characters, 4 and 3 tokens.
    assert record.prompt_tokens == 4 + 3
    assert record.tokens_estimated
    assert record.cost > 0


async def test_an_image_the_provider_failed_is_recorded_in_images_and_costs_nothing(
    api, alice, cloudflare
):
    model = await sync_to_async(_failing)(cloudflare, FLUX)

    response = await _post(
        api, alice, "/v1/images/generations", model=model.name, prompt="a lighthouse", n=2
    )

    assert response.status_code == 502
    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert (record.unit, record.units, record.cost) == (UsageRecord.IMAGES, 0, 0)


async def test_a_transcription_the_provider_refused_is_charged_nothing(api, alice, cloudflare):
    model = await sync_to_async(_failing)(cloudflare, WHISPER_TURBO, fault="bad-request")
    upload = SimpleUploadedFile("speech.wav", _wav(3.2), content_type="audio/wav")

    response = await _transcribe(api, alice, model, upload)

    assert response.status_code == 400
    record = await _record()
    assert record.status == UsageRecord.CLIENT_ERROR
    assert (record.unit, record.units, record.cost) == (UsageRecord.AUDIO_SECONDS, 0, 0)
