"""POST /v1/audio/transcriptions, /v1/audio/translations (multipart) and /v1/audio/speech.

The fake upstream hears an audio file's bytes as text, half a second a word.
"""

import base64
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile

from apikeys.models import UsageRecord
from completions.models import Model
from tests import media_models
from tests.conftest import LLAMA
from tests.fake_upstream import tiny_mp3
from tests.media_models import AURA, MELOTTS, WHISPER, WHISPER_TURBO

pytestmark = pytest.mark.django_db(transaction=True)

SPOKEN = b"hello there general kenobi"


@pytest.fixture
def audio_models(cloudflare):
    return media_models.add(cloudflare, WHISPER, WHISPER_TURBO, MELOTTS, AURA)


async def _transcribe(api, persona, path="transcriptions", audio=SPOKEN, **fields):
    fields.setdefault("model", WHISPER_TURBO)
    if audio is not None:
        fields["file"] = SimpleUploadedFile("speech.mp3", audio, content_type="audio/mpeg")
    return await api.post(f"/v1/audio/{path}", data=fields, headers=persona.headers)


async def _speak(api, persona, **body):
    body.setdefault("model", AURA)
    body.setdefault("input", "Good morning")
    body.setdefault("voice", "alloy")
    return await api.post(
        "/v1/audio/speech", data=body, content_type="application/json", headers=persona.headers
    )


def _runs(upstream):
    return [r for r in upstream.requests if "/ai/run/" in r["path"]]


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


async def test_it_sends_whisper_turbo_the_file_in_base64(api, alice, audio_models, upstream):
    response = await _transcribe(api, alice, language="en", prompt="Star Wars")

    assert response.status_code == 200
    assert response.json()["text"] == "hello there general kenobi"
    [sent] = _runs(upstream)
    assert sent["json"] == {
        "audio": base64.b64encode(SPOKEN).decode(),
        "language": "en",
        "initial_prompt": "Star Wars",
    }


async def test_it_sends_whisper_the_file_as_a_byte_array(api, alice, audio_models, upstream):
    response = await _transcribe(api, alice, model=WHISPER)

    assert response.status_code == 200
    assert response.json()["text"] == "hello there general kenobi"
    [sent] = _runs(upstream)
    assert sent["json"] == {"audio": list(SPOKEN)}


async def test_it_answers_text_as_plain_text(api, alice, audio_models):
    response = await _transcribe(api, alice, response_format="text")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().strip() == "hello there general kenobi"


async def test_it_answers_verbose_json_with_segments_and_words(api, alice, audio_models):
    response = await _transcribe(api, alice, response_format="verbose_json")

    body = response.json()
    assert body["task"] == "transcribe"
    assert body["duration"] == 2.0
    assert body["language"] == "en"
    [segment] = body["segments"]
    assert (segment["start"], segment["end"]) == (0.0, 2.0)
    assert [w["word"] for w in body["words"]] == ["hello", "there", "general", "kenobi"]
    assert body["words"][1] == {"word": "there", "start": 0.5, "end": 1.0}


async def test_it_answers_whispers_words_in_verbose_json(api, alice, audio_models):
    response = await _transcribe(api, alice, model=WHISPER, response_format="verbose_json")

    body = response.json()
    assert body["segments"] == []
    assert len(body["words"]) == 4
    assert body["duration"] == 2.0


async def test_it_answers_srt_and_vtt_subtitles(api, alice, audio_models):
    srt = await _transcribe(api, alice, response_format="srt")
    vtt = await _transcribe(api, alice, response_format="vtt")

    assert srt.content.decode() == (
        "1\n00:00:00,000 --> 00:00:02,000\nhello there general kenobi\n"
    )
    assert vtt.content.decode() == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nhello there general kenobi\n"
    )


async def test_it_translates_with_whisper_turbos_translate_task(api, alice, audio_models, upstream):
    response = await _transcribe(api, alice, path="translations", audio=b"bonjour le monde")

    assert response.status_code == 200
    assert response.json()["text"] == "English: bonjour le monde"
    [sent] = _runs(upstream)
    assert sent["json"]["task"] == "translate"


async def test_it_refuses_to_translate_with_whisper_which_cannot(
    api, alice, audio_models, upstream
):
    response = await _transcribe(api, alice, path="translations", model=WHISPER)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model"
    assert "translations" in error["message"]
    assert _runs(upstream) == []


async def test_it_refuses_a_form_without_a_file(api, alice, audio_models, upstream):
    response = await _transcribe(api, alice, audio=None)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"
    assert _runs(upstream) == []


async def test_it_refuses_json_for_an_upload(api, alice, audio_models):
    response = await api.post(
        "/v1/audio/transcriptions",
        data={"model": WHISPER_TURBO},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_content_type"


async def test_it_refuses_a_file_larger_than_the_body_limit_with_a_413(
    api, alice, audio_models, upstream, settings
):
    settings.MAX_REQUEST_BYTES = 2048

    response = await _transcribe(api, alice, audio=b"word " * 1000)

    assert response.status_code == 413
    assert _runs(upstream) == []


async def test_it_refuses_a_model_that_does_not_hear(api, alice, audio_models):
    response = await _transcribe(api, alice, model=LLAMA)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_model"


async def test_it_records_the_seconds_heard_at_the_price_per_second(api, alice, audio_models):
    # The catalogue's $0.00051 per audio minute, per second.
    await sync_to_async(Model.objects.filter(name=WHISPER_TURBO).update)(
        unit_price=Decimal("0.0000085")
    )

    await _transcribe(api, alice, audio=b"one two three four five six seven")

    [record] = await _records()
    assert record.endpoint == "/v1/audio/transcriptions"
    assert record.unit == UsageRecord.AUDIO_SECONDS
    # Seven words of half a second: 3.5 seconds, counted as 4.
    assert record.units == 4
    assert record.cost == Decimal("0.000034")


async def test_it_refuses_transcriptions_and_speech_to_a_read_only_key(
    api, bob, audio_models, upstream
):
    assert (await _transcribe(api, bob)).status_code == 403
    assert (await _transcribe(api, bob, path="translations")).status_code == 403
    assert (await _speak(api, bob)).status_code == 403
    assert _runs(upstream) == []


async def test_it_answers_aura_speech_as_mp3_bytes(api, alice, audio_models, upstream):
    response = await _speak(api, alice)

    assert response.status_code == 200
    assert response["Content-Type"] == "audio/mpeg"
    assert response.content == tiny_mp3()
    [sent] = _runs(upstream)
    # OpenAI's voice names leave aura-1 at its default speaker.
    assert sent["json"] == {"text": "Good morning"}


async def test_it_sends_an_aura_voice_and_format(api, alice, audio_models, upstream):
    response = await _speak(api, alice, voice="luna", response_format="flac")

    assert response.status_code == 200
    assert response["Content-Type"] == "audio/flac"
    [sent] = _runs(upstream)
    assert sent["json"] == {"text": "Good morning", "speaker": "luna", "encoding": "flac"}


async def test_it_refuses_a_voice_the_model_does_not_have(api, alice, audio_models, upstream):
    response = await _speak(api, alice, voice="hal9000")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "voice"
    assert "luna" in error["message"]
    assert _runs(upstream) == []


async def test_it_answers_melotts_speech_decoded_from_base64(api, alice, audio_models, upstream):
    response = await _speak(api, alice, model=MELOTTS)

    assert response.status_code == 200
    assert response["Content-Type"] == "audio/mpeg"
    assert response.content == tiny_mp3()
    [sent] = _runs(upstream)
    assert sent["json"] == {"prompt": "Good morning"}


async def test_it_refuses_formats_other_than_mp3_for_melotts(api, alice, audio_models):
    response = await _speak(api, alice, model=MELOTTS, response_format="wav")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "response_format"


async def test_it_records_the_characters_spoken(api, alice, audio_models):
    await sync_to_async(Model.objects.filter(name=AURA).update)(unit_price=Decimal("0.000015"))

    await _speak(api, alice, input="Twenty characters!!")

    [record] = await _records()
    assert record.endpoint == "/v1/audio/speech"
    assert record.unit == UsageRecord.CHARACTERS
    assert record.units == 19
    assert record.cost == Decimal("0.000285")
