"""The openai SDK against daphne: cached prompt tokens of a conversation's next turn."""

import pytest

from tests.integration.conftest import NEWER

pytestmark = pytest.mark.integration

# An opening no other test sends, so that no other conversation shares its affinity.
FIRST_TURN = [
    {"role": "system", "content": "Answer like a lighthouse keeper."},
    {"role": "user", "content": "is the fog lifting"},
]
SECOND_TURN = [
    *FIRST_TURN,
    {"role": "assistant", "content": "Echo: is the fog lifting"},
    {"role": "user", "content": "and the boats"},
]
# The fake counts words: the second prompt has 17, of which the 9 of the first are cached.
PROMPT_TOKENS, CACHED_TOKENS = 17, 9


def test_the_next_turn_reads_its_cached_tokens(client, gateway):
    first = client.chat.completions.create(model=NEWER, messages=FIRST_TURN)
    second = client.chat.completions.create(model=NEWER, messages=SECOND_TURN)

    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens == PROMPT_TOKENS
    assert second.usage.prompt_tokens_details.cached_tokens == CACHED_TOKENS
    assert gateway.usage_records()[-1]["cached_tokens"] == CACHED_TOKENS


def test_a_streamed_turn_with_a_prompt_cache_key_reads_its_cached_tokens(client, gateway):
    client.chat.completions.create(
        model=NEWER, messages=FIRST_TURN, prompt_cache_key="lighthouse-stream"
    )
    chunks = list(
        client.chat.completions.create(
            model=NEWER,
            messages=SECOND_TURN,
            prompt_cache_key="lighthouse-stream",
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == CACHED_TOKENS
    record = gateway.usage_records()[-1]
    assert (record["stream"], record["cached_tokens"]) == (1, CACHED_TOKENS)
