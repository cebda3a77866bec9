"""The OpenAPI document of /v1, and a fuzzer (schemathesis) driving a running gateway with it.

The fuzzer sends what the document allows (positive cases) and what it does not (negative
cases) to daphne serving the gateway, with a real key; every answer must be no 5xx, have a
documented status and content type, match its documented schema and carry the documented
headers. Half of the model-running cases name a model the gateway serves (the development
echo model, or models on the fake upstream), so that generated bodies reach the providers
rather than stopping at 404. Examples per operation are bounded to keep the run short.
"""

import json
import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import DOCUMENT
from tests import fake_upstream, media_models
from tests.client import Client
from tests.live_server import LiveGateway

LLAMA = "@cf/meta/llama-3.1-8b-instruct"
BGE = "@cf/baai/bge-small-en-v1.5"
# Models a case may be pointed at, per path.
SERVED = {
    "/v1/chat/completions": ["echo", LLAMA],
    "/v1/completions": ["echo", LLAMA],
    "/v1/embeddings": [BGE],
    "/v1/responses": ["echo", LLAMA],
    "/v1/images/generations": [media_models.FLUX, media_models.SDXL],
    "/v1/audio/transcriptions": [media_models.WHISPER, media_models.WHISPER_TURBO],
    "/v1/audio/translations": [media_models.WHISPER_TURBO],
    "/v1/audio/speech": [media_models.AURA, media_models.MELOTTS],
    "/v1/moderations": [media_models.LLAMA_GUARD],
    "/v1/rerank": [media_models.RERANKER],
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Examples per operation: about half a minute for the whole surface.
MAX_EXAMPLES = 100

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, Provider

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{base_url}", account_id="{account}",
    api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
)
Model.objects.create(name="{llama}", provider=cf)
Model.objects.create(name="{bge}", provider=cf, task="Text Embeddings")
from tests import media_models
media_models.add(cf, *{media})
key, secret = ApiKey.objects.create_key(name="fuzzer", rate_limit="100000/s")
print("secret", secret)
"""


def test_the_document_is_served_as_written_without_a_key(db):
    response = Client().get("/v1/openapi.json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    document = response.json()
    assert document == json.loads(json.dumps(DOCUMENT))
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/v1/models",
        "/v1/models/{model}",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/images/generations",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/audio/speech",
        "/v1/moderations",
        "/v1/rerank",
        "/v1/key",
        "/v1/usage",
    }


def test_the_document_is_valid_openapi():
    # Loading validates it against the OpenAPI 3.1 meta-schema.
    schema = schemathesis.openapi.from_dict(DOCUMENT)

    assert len(list(schema.get_all_operations())) == 16


@pytest.fixture(scope="module")
def live(upstream, tmp_path_factory):
    setup = SETUP.format(
        base_url=upstream.cloudflare_base_url,
        account=fake_upstream.CLOUDFLARE_ACCOUNT,
        llama=LLAMA,
        bge=BGE,
        media=sorted({name for names in SERVED.values() for name in names} - {"echo", LLAMA, BGE}),
    )
    folder = tmp_path_factory.mktemp("openapi")
    with LiveGateway(
        folder, setup, GATEWAY_PROVIDER_TEST_CF_TOKEN=fake_upstream.CLOUDFLARE_TOKEN
    ) as gateway:
        yield gateway


# The document the gateway serves (test_the_document_is_served_as_written checks it is this
# one), fuzzed against the running server that serves it.
schema = schemathesis.openapi.from_dict(
    DOCUMENT, config=schemathesis.Config.from_dict({"generation": {"mode": "all"}})
)


@pytest.mark.integration
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_running_gateway_keeps_to_its_document(case, live):
    if case.media_type == "multipart/form-data" and not case.body:
        # A multipart body with no parts never reaches the gateway: daphne's HTTP server
        # (twisted.web.http.Request, parsePOSTFormSubmission on by default) parses form
        # uploads itself and answers one that is not a multipart message with a bare 400.
        return
    served = SERVED.get(case.operation.path)
    if served and isinstance(case.body, dict):
        # Stable per body, so that a failure found by shrinking is reproduced as found.
        choice = zlib.crc32(repr(sorted(case.body, key=str)).encode()) % (2 * len(served))
        if choice < len(served):
            case.body["model"] = served[choice]

    case.call_and_validate(
        base_url=live.base_url,
        headers={"Authorization": f"Bearer {live.printed['secret']}"},
        checks=CHECKS,
        timeout=30,
    )
