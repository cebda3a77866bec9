"""openai for Node and the Vercel AI SDK (`ai` with `@ai-sdk/openai-compatible`), at their
defaults, each scenario run by tests/clients/node/run.mjs."""

import pytest

from tests.clients.conftest import CHAT_MODEL, ECHO, EMBEDDING_MODEL, TOOL_ANSWER, USER
from tests.clients.node_clients import run_scenarios

STATUSES = [401, 403, 404, 429, 400]
SCENARIOS = [
    *(
        f"openai.{name}"
        for name in ["models", "chat", "stream", "tools", "structured", "embeddings"]
    ),
    *(f"ai.{name}" for name in ["chat", "stream", "stream-defaults", "tools", "structured"]),
    "ai.embeddings",
    *(f"openai.error-{status}" for status in STATUSES),
    *(f"ai.error-{status}" for status in STATUSES),
]
# Milliseconds a refused request may take: no retry is worth more than that.
PROMPT_REFUSAL_MS = 5000
# The AI SDK retries a 429 twice, after 2 and 4 s, whatever the server says.
AI_SDK_RETRIES_MS = 6000 + PROMPT_REFUSAL_MS


@pytest.fixture(scope="module")
def results(gateway):
    return run_scenarios(gateway, SCENARIOS)


def value(results, scenario):
    result = results[scenario]
    assert result["ok"], result["error"]
    return result["value"]


@pytest.mark.compat("openai-node", "models")
def test_openai_node_lists_the_models(results):
    assert {CHAT_MODEL, EMBEDDING_MODEL} <= set(value(results, "openai.models"))


@pytest.mark.compat("openai-node", "chat")
def test_openai_node_chats(results):
    assert value(results, "openai.chat") == ECHO


@pytest.mark.compat("openai-node", "stream")
def test_openai_node_streams_with_usage(results):
    streamed = value(results, "openai.stream")

    assert streamed["text"] == ECHO
    assert streamed["usage"]["total_tokens"] > 0


@pytest.mark.compat("openai-node", "tools")
def test_openai_node_calls_a_tool_and_answers_from_its_result(results):
    assert value(results, "openai.tools") == {"called": ["lookup"], "answer": TOOL_ANSWER}


@pytest.mark.compat("openai-node", "structured")
def test_openai_node_gets_structured_output(results):
    assert value(results, "openai.structured") == {"echo": USER}


@pytest.mark.compat("openai-node", "embeddings")
def test_openai_node_embeds_in_base64_at_its_defaults(results):
    assert value(results, "openai.embeddings") == [384, 384]


@pytest.mark.compat("ai-sdk", "chat")
def test_the_ai_sdk_chats(results):
    assert value(results, "ai.chat") == ECHO


@pytest.mark.compat("ai-sdk", "stream")
def test_the_ai_sdk_streams_with_usage_once_asked(results, compat_detail):
    compat_detail("usage needs includeUsage: true (the AI SDK does not ask for it by default)")
    at_defaults = value(results, "ai.stream-defaults")
    streamed = value(results, "ai.stream")

    assert at_defaults["text"] == ECHO
    assert streamed["text"] == ECHO
    assert streamed["usage"]["input"] > 0 and streamed["usage"]["output"] > 0


@pytest.mark.compat("ai-sdk", "tools")
def test_the_ai_sdk_calls_a_tool_and_answers_from_its_result(results):
    assert value(results, "ai.tools") == {"called": ["lookup"], "answer": TOOL_ANSWER}


@pytest.mark.compat("ai-sdk", "structured")
def test_the_ai_sdk_gets_structured_output(results, compat_detail):
    compat_detail("as JSON mode: the AI SDK sends a schema only with supportsStructuredOutputs")
    assert value(results, "ai.structured") == {"echo": USER}


@pytest.mark.compat("ai-sdk", "embeddings")
def test_the_ai_sdk_embeds(results):
    assert value(results, "ai.embeddings") == [384, 384]


OPENAI_NODE_ERRORS = {
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    429: "RateLimitError",
    400: "BadRequestError",
}


@pytest.mark.parametrize(
    "status",
    [pytest.param(s, marks=pytest.mark.compat("openai-node", f"error {s}")) for s in STATUSES],
)
def test_openai_node_raises_its_own_error_class_promptly(results, compat_detail, status):
    result = results[f"openai.error-{status}"]
    compat_detail(result["error"]["class"])

    assert not result["ok"]
    assert (result["error"]["class"], result["error"]["status"]) == (
        OPENAI_NODE_ERRORS[status],
        status,
    )
    assert result["ms"] < PROMPT_REFUSAL_MS


@pytest.mark.parametrize(
    "status",
    [pytest.param(s, marks=pytest.mark.compat("ai-sdk", f"error {s}")) for s in STATUSES],
)
def test_the_ai_sdk_raises_its_own_error_class(results, compat_detail, status):
    result = results[f"ai.error-{status}"]
    error = result["error"]
    if status == 429:
        # Retryable for the AI SDK: it gives up after its retries with a RetryError that
        # holds the APICallError (it reads no x-should-retry).
        compat_detail(f"{error['class']}")
        compat_detail(
            "the AI SDK retries a 429 twice (2 s, then 4 s) and then raises a RetryError "
            "holding the APICallError; it reads no x-should-retry"
        )
        assert (error["class"], error["cause"], error["status"]) == (
            "RetryError",
            "APICallError",
            429,
        )
        assert result["ms"] < AI_SDK_RETRIES_MS
    else:
        compat_detail(error["class"])
        assert (error["class"], error["status"]) == ("APICallError", status)
        assert result["ms"] < PROMPT_REFUSAL_MS
