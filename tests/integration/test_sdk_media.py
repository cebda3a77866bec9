"""The official openai SDK against daphne for the media endpoints and embedding dimensions.

Each call leaves a usage record priced in its unit, and a read-only key is refused (403).
"""

import base64

import openai
import pytest

from tests import fake_upstream
from tests.fake_upstream import tiny_mp3
from tests.live_server import LiveGateway
from tests.media_models import (
    AURA,
    EMBEDDING_GEMMA,
    FLUX,
    LLAMA_GUARD,
    SDXL,
    WHISPER_TURBO,
)

pytestmark = pytest.mark.integration

SETUP = """
from decimal import Decimal
from apikeys.models import ApiKey
from completions.models import Model, Provider
from tests import media_models

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{cloudflare}", account_id="{account}",
    api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
)
media_models.add(cf, "{flux}", "{sdxl}", unit_price=Decimal("0.001"))
media_models.add(cf, "{whisper}", unit_price=Decimal("0.0000085"))
media_models.add(cf, "{aura}", unit_price=Decimal("0.000015"))
media_models.add(cf, "{guard}", input_price=Decimal("0.48"), output_price=Decimal("0.03"))
media_models.add(
    cf, "{gemma}", shortens_embeddings=True, input_price=Decimal("0.012")
)
for name, fields in [("alice", {{}}), ("bob", {{"permissions": "read"}})]:
    key, secret = ApiKey.objects.create_key(name=name, **fields)
    print(name, secret)
"""


@pytest.fixture(scope="module")
def media_gateway(tmp_path_factory):
    with fake_upstream.FakeUpstream().start() as upstream:
        setup = SETUP.format(
            cloudflare=upstream.cloudflare_base_url,
            account=fake_upstream.CLOUDFLARE_ACCOUNT,
            flux=FLUX,
            sdxl=SDXL,
            whisper=WHISPER_TURBO,
            aura=AURA,
            guard=LLAMA_GUARD,
            gemma=EMBEDDING_GEMMA,
        )
        folder = tmp_path_factory.mktemp("media-gateway")
        with LiveGateway(folder, setup, on_run_stack=True) as live:
            yield live


def _client(media_gateway, persona):
    return openai.OpenAI(
        base_url=media_gateway.api_base, api_key=media_gateway.printed[persona], max_retries=0
    )


@pytest.fixture
def alice(media_gateway):
    return _client(media_gateway, "alice")


@pytest.fixture
def bob(media_gateway):
    return _client(media_gateway, "bob")


@pytest.fixture
def last_record(media_gateway):
    return lambda: media_gateway.usage_records()[-1]


def _cost(record):
    return float(record["cost"])


def test_it_generates_images(alice, last_record):
    images = alice.images.generate(model=SDXL, prompt="a red fox", n=2, size="512x512")

    assert len(images.data) == 2
    assert base64.b64decode(images.data[0].b64_json).startswith(b"\x89PNG")
    record = last_record()
    assert (record["endpoint"], record["unit"], record["units"]) == (
        "/v1/images/generations",
        "images",
        2,
    )
    assert _cost(record) == pytest.approx(0.002)


def test_it_refuses_image_urls_with_a_400(alice):
    with pytest.raises(openai.BadRequestError) as raised:
        alice.images.generate(model=FLUX, prompt="a red fox", response_format="url")

    assert raised.value.body["param"] == "response_format"


def test_it_transcribes_an_upload(alice, last_record):
    transcription = alice.audio.transcriptions.create(
        model=WHISPER_TURBO, file=("speech.mp3", b"one two three four", "audio/mpeg")
    )

    assert transcription.text == "one two three four"
    record = last_record()
    assert (record["endpoint"], record["unit"], record["units"]) == (
        "/v1/audio/transcriptions",
        "audio_seconds",
        2,
    )
    assert _cost(record) == pytest.approx(0.000017)


def test_it_transcribes_with_timestamps(alice):
    transcription = alice.audio.transcriptions.create(
        model=WHISPER_TURBO,
        file=("speech.mp3", b"one two", "audio/mpeg"),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )

    assert transcription.duration == 1.0
    assert [w.word for w in transcription.words] == ["one", "two"]
    assert transcription.segments[0].text == "one two"


def test_it_translates_an_upload(alice, last_record):
    translation = alice.audio.translations.create(
        model=WHISPER_TURBO, file=("speech.mp3", b"bonjour", "audio/mpeg")
    )

    assert translation.text == "English: bonjour"
    record = last_record()
    assert (record["endpoint"], record["unit"]) == ("/v1/audio/translations", "audio_seconds")
    assert _cost(record) > 0


def test_it_speaks(alice, last_record):
    speech = alice.audio.speech.create(model=AURA, voice="alloy", input="Hello there")

    assert speech.content == tiny_mp3()
    assert speech.response.headers["content-type"] == "audio/mpeg"
    record = last_record()
    assert (record["endpoint"], record["unit"], record["units"]) == (
        "/v1/audio/speech",
        "characters",
        11,
    )
    assert _cost(record) == pytest.approx(0.000165)


def test_it_moderates(alice, last_record):
    moderation = alice.moderations.create(model=LLAMA_GUARD, input=["lovely", "I hate you"])

    assert [r.flagged for r in moderation.results] == [False, True]
    assert moderation.results[1].categories.hate is True
    assert moderation.results[1].category_scores.hate == 1.0
    record = last_record()
    assert (record["endpoint"], record["unit"]) == ("/v1/moderations", "tokens")
    assert _cost(record) > 0


def test_it_shortens_embeddings_of_a_matryoshka_model(alice, last_record):
    embeddings = alice.embeddings.create(model=EMBEDDING_GEMMA, input="hello", dimensions=8)

    vector = embeddings.data[0].embedding
    assert len(vector) == 8
    assert sum(x * x for x in vector) == pytest.approx(1.0)
    record = last_record()
    assert (record["endpoint"], record["unit"]) == ("/v1/embeddings", "tokens")
    assert _cost(record) > 0


def test_it_refuses_every_media_call_to_a_read_only_key(bob):
    upload = ("speech.mp3", b"one", "audio/mpeg")
    calls = [
        lambda: bob.images.generate(model=FLUX, prompt="x"),
        lambda: bob.audio.transcriptions.create(model=WHISPER_TURBO, file=upload),
        lambda: bob.audio.translations.create(model=WHISPER_TURBO, file=upload),
        lambda: bob.audio.speech.create(model=AURA, voice="alloy", input="x"),
        lambda: bob.moderations.create(model=LLAMA_GUARD, input="x"),
        lambda: bob.embeddings.create(model=EMBEDDING_GEMMA, input="x", dimensions=8),
    ]
    for call in calls:
        with pytest.raises(openai.PermissionDeniedError):
            call()
