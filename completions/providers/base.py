"""What every provider offers, and the boundary where upstream failures become ours.

`BaseProvider` is the interface every provider implements (chat, streams, completions,
embeddings, the catalogue, the media endpoints) and the HTTP they share: a call sent with
retries (retries.py) within its deadlines (timeouts.py), its answer read within a size
(answers.py) or as server-sent events (sse.py). Every failure leaves a provider as a
`gateway.errors.GatewayError`. What a provider takes and answers is in types.py; the token
counts the gateway makes where an upstream reports none, in estimates.py.
"""

import asyncio
import contextlib
import json
import logging
import math
import time
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from completions.providers.answers import iter_answer, read_answer
from completions.providers.client import get_client
from completions.providers.content import first_image_message
from completions.providers.estimates import estimate_prompt_tokens, estimate_tokens
from completions.providers.retries import retry_after_seconds, retry_delay
from completions.providers.sse import StreamDeadlines, iter_sse_data
from completions.providers.timeouts import (
    first_byte_timeout,
    read_timeout,
    timed_out,
    transport_timeout,
)
from completions.providers.tool_calls import ToolCallPieces, whole_tool_calls
from completions.providers.types import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Usage,
    deltas_of_result,
)
from gateway.errors import (
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    redact,
    redact_internal_urls,
)

# BaseProvider, and the names the rest of the code imported from this module before its
# parts had modules of their own.
__all__ = [
    "BaseProvider",
    "ChatRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "ToolCallPieces",
    "Usage",
    "deltas_of_result",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "first_image_message",
    "iter_sse_data",
    "whole_tool_calls",
]


logger = logging.getLogger(__name__)


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


# The most of an error answer's body that send() reads to learn its code, in bytes: error
# bodies are a few hundred bytes; a longer one is cut and read as one without a code.
MAX_ERROR_BODY_BYTES = 64 * 1024


def decode_json(content):
    """Return the decoded JSON of a body, or None if it is empty or not JSON."""
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None


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
