"""A real gateway for the session: daphne in a subprocess on a free port, on a database of
its own of the run's kind (tests/live_server.py).

The fake upstream runs in the test process; the gateway reaches it over loopback, as it
would reach Cloudflare.
"""

import openai
import pytest

from tests import fake_upstream
from tests.live_server import LiveGateway

LLAMA = "@cf/meta/llama-3.1-8b-instruct"
# A Workers AI model that answers in OpenAI's shape.
NEWER = "@cf/qwen/qwen3-30b-a3b-fp8"
# Workers AI models served with the input schema of their catalogue file.
SCHEMA_LLAMA = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
GPT_OSS = "@cf/openai/gpt-oss-120b"
KIMI = "@cf/moonshotai/kimi-k2.6"
GLM = "@cf/zai-org/glm-4.7-flash"
WORKERS_AI_MODELS = (SCHEMA_LLAMA, GPT_OSS, KIMI, GLM)

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, ModelAlias, ModelFallback, Provider

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{cloudflare}", account_id="{account}",
    api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
)
llama = Model.objects.create(name="{llama}", provider=cf)
ModelAlias.objects.create(name="gpt-4o-mini", model=llama)
for name in ["@cf/test/slow", "@cf/test/fail-500", "@cf/test/cut-stream"]:
    Model.objects.create(name=name, provider=cf)
# The endpoints beyond chat (tests/integration/test_sdk_endpoints.py).
bge = Model.objects.create(
    name="@cf/baai/bge-small-en-v1.5", provider=cf, task="Text Embeddings"
)
ModelAlias.objects.create(name="text-embedding-3-small", model=bge)
Model.objects.create(name="{newer}", provider=cf)
# Workers AI models with the schemas of their catalogue files, as sync_models stores them.
from tests import workers_ai_models
for name in {workers_ai_models}:
    properties = workers_ai_models.properties(name)
    Model.objects.update_or_create(name=name, defaults=dict(
        provider=cf,
        input_schema=workers_ai_models.schema(name)["input"],
        output_schema=workers_ai_models.schema(name)["output"],
        properties=properties,
        context_window=int(properties.get("context_window", 0)) or None,
    ))
failing = Model.objects.create(name="@cf/test/fail-500-then-llama", provider=cf)
ModelFallback.objects.create(model=failing, fallback=llama, position=0)
for name, fields in [("alice", {{}}), ("bob", {{"permissions": "read"}})]:
    key, secret = ApiKey.objects.create_key(name=name, **fields)
    print(name, secret)
"""


@pytest.fixture(scope="session")
def upstream_for_gateway():
    with fake_upstream.FakeUpstream().start() as server:
        yield server


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, upstream_for_gateway):
    setup = SETUP.format(
        cloudflare=upstream_for_gateway.cloudflare_base_url,
        account=fake_upstream.CLOUDFLARE_ACCOUNT,
        llama=LLAMA,
        newer=NEWER,
        workers_ai_models=list(WORKERS_AI_MODELS),
    )
    with LiveGateway(tmp_path_factory.mktemp("gateway"), setup, on_run_stack=True) as live:
        yield live


# The official SDK as Alice (read-write); no retries, so that each test sees the first answer.
@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.api_base, api_key=gateway.printed["alice"], max_retries=0)


@pytest.fixture
def async_client(gateway):
    return openai.AsyncOpenAI(
        base_url=gateway.api_base, api_key=gateway.printed["alice"], max_retries=0
    )
