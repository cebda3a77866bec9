"""The requests a provider takes and the results it answers with.

A provider turns a validated request (`ChatRequest`, `CompletionRequest`, `EmbeddingRequest`)
into a call to its upstream and answers with plain results (`ChatResult`, a stream of
`Delta`, `EmbeddingResult`) that `completions/views.py` renders in OpenAI's format; `Usage`
is what a call spent. The media endpoints' requests and results are in media.py.
"""

import logging
from dataclasses import dataclass, field, replace

from completions.providers.tool_calls import deltas_of_tool_calls

logger = logging.getLogger(__name__)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # True when the provider reported no counts and the gateway estimated them.
    estimated: bool = False
    # Prompt tokens the upstream read from its prefix cache: part of prompt_tokens, not
    # added to it, and priced at the model's cached input price.
    cached_tokens: int = 0

    @property
    def total_tokens(self):
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other):
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            estimated=self.estimated or other.estimated,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )

    # The most tokens one reported count is taken for: far beyond any context window, and
    # small enough that two of them still fit the usage record's 32-bit columns and a
    # price per million tokens still fits its cost column.
    MAX_REPORTED_TOKENS = 10**9

    @classmethod
    def reported(cls, raw):
        """Return a provider's usage object ({prompt_tokens, completion_tokens,
        prompt_tokens_details: {cached_tokens}}) as Usage, or None if it reported none
        (Workers AI and OpenAI use the same names).

        A count no upstream can mean (negative, infinite, beyond MAX_REPORTED_TOKENS) is
        clamped into 0..MAX_REPORTED_TOKENS and the usage marked estimated, so that the
        answer still reaches the client and is recorded, and a negative count never gives
        a key's limits or budget back what it spent.
        """
        if not isinstance(raw, dict):
            return None
        counts = {}
        absurd = False
        for name in ("prompt_tokens", "completion_tokens"):
            value = raw.get(name) or 0
            try:
                count = int(value)
            except OverflowError:
                # An infinity: json reads 1e999 and Infinity as float("inf").
                count = cls.MAX_REPORTED_TOKENS + 1 if value > 0 else -1
            except (TypeError, ValueError):
                return None
            clamped = max(0, min(count, cls.MAX_REPORTED_TOKENS))
            absurd = absurd or clamped != count
            counts[name] = clamped
        usage = cls(**counts, estimated=absurd)
        if absurd:
            logger.warning(
                "The upstream reported absurd usage (prompt_tokens %.40r, completion_tokens "
                "%.40r); recorded as %d and %d tokens, marked estimated",
                raw.get("prompt_tokens"),
                raw.get("completion_tokens"),
                usage.prompt_tokens,
                usage.completion_tokens,
            )
        usage.cached_tokens = _cached_tokens(raw.get("prompt_tokens_details"), usage.prompt_tokens)
        return usage

    def as_dict(self):
        """Return OpenAI's usage object (CompletionUsage), which always details the prompt."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


def _cached_tokens(details, prompt_tokens):
    """Return the cached tokens of a usage's prompt_tokens_details, 0 if unreadable.

    A count the upstream garbled costs the client the full input price rather than
    failing an answer already made; more than the prompt is read as the whole prompt.
    """
    count = details.get("cached_tokens") if isinstance(details, dict) else None
    if count is None or isinstance(count, bool):
        return 0
    try:
        count = int(count)
    except (TypeError, ValueError, OverflowError):
        return 0
    return max(0, min(count, prompt_tokens))


@dataclass
class ChatRequest:
    model: str
    messages: list
    # Sampling parameters already validated, with OpenAI's names.
    params: dict = field(default_factory=dict)
    # OpenAI's function tools and tool_choice, as validated; None when not given.
    tools: list | None = None
    tool_choice: str | dict | None = None
    # OpenAI's response_format, {"type": "json_object"} or {"type": "json_schema", ...}.
    response_format: dict | None = None
    # What the model's own request schema says it takes (workers_ai_schema.ModelSchema),
    # and its context window in tokens; None when the catalogue gave none.
    schema: object = None
    context_window: int | None = None
    # The model's own bound for a chat that names none (Model.default_max_tokens); None:
    # the gateway's DEFAULT_MAX_TOKENS.
    default_max_tokens: int | None = None
    # The conversation's id for upstream prompt caching (completions/affinity.py), sent
    # to Workers AI as x-session-affinity; never a client's value as such.
    session_affinity: str | None = None
    # The client's own prompt_cache_key, passed to OpenAI-compatible upstreams as given.
    prompt_cache_key: str | None = None
    # The prompt's estimate in tokens once made: filled, and to be read, by
    # estimates.estimate_prompt_tokens. Not an argument, so that dataclasses.replace, which
    # may change the prompt, never copies it.
    prompt_estimate: int | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def max_tokens(self):
        return self.params.get("max_tokens")

    def with_max_tokens(self, limit):
        """Return a copy that asks for at most `limit` tokens, its prompt estimate kept."""
        return _with_max_tokens(self, limit)


@dataclass
class CompletionRequest:
    """A legacy text completion of one prompt string."""

    model: str
    prompt: str
    params: dict = field(default_factory=dict)
    schema: object = None
    context_window: int | None = None
    # As ChatRequest's.
    prompt_estimate: int | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def max_tokens(self):
        return self.params.get("max_tokens")

    def with_max_tokens(self, limit):
        """Return a copy that asks for at most `limit` tokens, its prompt estimate kept."""
        return _with_max_tokens(self, limit)


def _with_max_tokens(request, limit):
    bounded = replace(request, params={**request.params, "max_tokens": limit})
    # A bound is no part of the prompt (a completion's suffix, in params too, is).
    bounded.prompt_estimate = request.prompt_estimate
    return bounded


@dataclass
class ChatResult:
    # None when the model answered only with tool calls, as OpenAI's content is then.
    content: str | None
    usage: Usage
    finish_reason: str = "stop"
    # Whole calls in OpenAI's shape: {"id", "type": "function", "function": {"name",
    # "arguments": a JSON string}}.
    tool_calls: list = field(default_factory=list)
    # The model's reasoning before its answer (reasoning models), or None.
    reasoning: str | None = None


@dataclass
class Delta:
    """One step of a stream: some text or tool-call pieces, at the end finish reason and usage."""

    text: str = ""
    # A piece of the model's reasoning, streamed before the answer by reasoning models.
    reasoning: str = ""
    # Pieces of tool calls in OpenAI's delta shape: {"index", "id", "type", "function"}.
    tool_calls: list = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass
class EmbeddingRequest:
    model: str
    texts: list
    # Parameters other than the input, with OpenAI's names (dimensions, user).
    params: dict = field(default_factory=dict)


@dataclass
class EmbeddingResult:
    # One vector per text, in the order of the texts.
    vectors: list
    # None when the provider reported no token counts.
    usage: Usage | None = None


def deltas_of_result(result):
    """Return a whole ChatResult as the Deltas of a stream, for an answer that did not stream."""
    deltas = []
    if result.reasoning:
        deltas.append(Delta(reasoning=result.reasoning))
    if result.content:
        deltas.append(Delta(text=result.content))
    if result.tool_calls:
        deltas.append(Delta(tool_calls=deltas_of_tool_calls(result.tool_calls)))
    deltas.append(Delta(finish_reason=result.finish_reason, usage=result.usage))
    return deltas
