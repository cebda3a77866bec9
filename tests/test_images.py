"""POST /v1/images/generations: flux's base64 JPEG, SDXL's bare PNG, n images, sizes."""

import base64
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from completions.models import Model
from tests import media_models
from tests.conftest import LLAMA
from tests.media_models import FLUX, SDXL

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def image_models(cloudflare):
    return media_models.add(cloudflare, FLUX, SDXL)


async def _generate(api, persona, **body):
    body.setdefault("model", FLUX)
    body.setdefault("prompt", "a lighthouse at dawn")
    return await api.post(
        "/v1/images/generations",
        data=body,
        content_type="application/json",
        headers=persona.headers,
    )


def _runs(upstream):
    return [r for r in upstream.requests if "/ai/run/" in r["path"]]


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


async def test_it_answers_flux_with_its_base64_jpeg(api, alice, image_models, upstream):
    response = await _generate(api, alice)

    assert response.status_code == 200
    [item] = response.json()["data"]
    assert base64.b64decode(item["b64_json"]).startswith(b"\xff\xd8")
    [sent] = _runs(upstream)
    assert sent["path"].endswith(f"/ai/run/{FLUX}")
    assert sent["json"] == {"prompt": "a lighthouse at dawn"}


async def test_it_answers_sdxl_with_the_png_it_sends_bare(api, alice, image_models):
    response = await _generate(api, alice, model=SDXL)

    assert response.status_code == 200
    [item] = response.json()["data"]
    assert base64.b64decode(item["b64_json"]).startswith(b"\x89PNG\r\n\x1a\n")


async def test_it_makes_n_images_with_one_call_each(api, alice, image_models, upstream):
    response = await _generate(api, alice, n=3)

    assert response.status_code == 200
    assert len(response.json()["data"]) == 3
    assert len(_runs(upstream)) == 3


async def test_it_sends_the_size_as_width_and_height_to_a_model_that_takes_them(
    api, alice, image_models, upstream
):
    response = await _generate(api, alice, model=SDXL, size="512x768")

    assert response.status_code == 200
    [sent] = _runs(upstream)
    assert sent["json"] == {"prompt": "a lighthouse at dawn", "width": 512, "height": 768}


async def test_it_refuses_a_size_outside_the_models_range(api, alice, image_models, upstream):
    response = await _generate(api, alice, model=SDXL, size="128x128")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "size"
    assert _runs(upstream) == []


async def test_it_refuses_a_size_for_flux_which_takes_none(api, alice, image_models, upstream):
    response = await _generate(api, alice, size="512x512")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "size"
    assert "one size" in error["message"]
    assert _runs(upstream) == []


async def test_it_takes_the_default_size_for_flux(api, alice, image_models, upstream):
    response = await _generate(api, alice, size="1024x1024")

    assert response.status_code == 200
    [sent] = _runs(upstream)
    assert "width" not in sent["json"]


async def test_it_refuses_urls_as_it_keeps_no_images(api, alice, image_models, upstream):
    response = await _generate(api, alice, response_format="url")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "response_format"
    assert "b64_json" in error["message"]
    assert _runs(upstream) == []


async def test_it_refuses_a_chat_model(api, alice, image_models):
    response = await _generate(api, alice, model=LLAMA)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_model"


async def test_it_refuses_a_read_only_key(api, bob, image_models, upstream):
    response = await _generate(api, bob)

    assert response.status_code == 403
    assert _runs(upstream) == []


async def test_it_records_the_images_made_at_the_models_price(api, alice, image_models):
    await sync_to_async(Model.objects.filter(name=FLUX).update)(unit_price=Decimal("0.0011"))

    response = await _generate(api, alice, n=2)

    assert response.status_code == 200
    [record] = await _records()
    assert record.endpoint == "/v1/images/generations"
    assert record.unit == UsageRecord.IMAGES
    assert record.units == 2
    assert record.cost == Decimal("0.0022")
    assert record.status == UsageRecord.OK


async def test_it_records_a_refusal_by_the_upstream(api, alice, image_models):
    # flux takes prompts of at most 2048 characters (its schema's maxLength).
    response = await _generate(api, alice, prompt="x" * 3000)

    assert response.status_code == 400
    [record] = await _records()
    assert record.status == UsageRecord.CLIENT_ERROR
    assert record.units == 0


async def test_it_refuses_a_size_for_a_model_whose_schema_is_not_known(
    api, alice, cloudflare, upstream
):
    await sync_to_async(Model.objects.create)(
        name=SDXL, provider=cloudflare, task=Model.TEXT_TO_IMAGE
    )

    response = await _generate(api, alice, model=SDXL, size="512x512")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "size"
    assert "sync_models" in error["message"]
    assert _runs(upstream) == []
