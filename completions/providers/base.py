"""What every provider offers, and the boundary where upstream failures become ours.

A provider turns a validated chat request into a call to its upstream and answers with
plain results (`ChatResult`, a stream of `Delta`) that `completions/views.py` renders in
OpenAI's format. Every failure leaves a provider as a `gateway.errors.GatewayError`.
"""

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from completions.providers.client import get_client
from gateway.errors import InvalidRequest, RateLimited, UpstreamError, UpstreamTimeout, redact

logger = logging.getLogger(__name__)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self):
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self):
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class ChatRequest:
    model: str
    messages: list
    # Sampling parameters already validated, with OpenAI's names.
    params: dict = field(default_factory=dict)

    @property
    def max_tokens(self):
        return self.params.get("max_tokens")


@dataclass
class ChatResult:
    content: str
    usage: Usage
    finish_reason: str = "stop"


@dataclass
class Delta:
    """One step of a stream: some text, and at the end a finish reason and the usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


class BaseProvider:
    # Whether the upstream applies `stop` itself; if not, the gateway cuts the text.
    takes_stop = False

    def __init__(self, row):
        self.row = row

    async def chat(self, request):
        """Return a ChatResult for the request."""
        raise NotImplementedError

    def stream_chat(self, request):
        """Return an async iterator of Delta, the last one carrying finish reason and usage."""
        raise NotImplementedError

    async def list_models(self):
        """Return the provider's catalogue as dicts with name, task and description."""
        return []

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

    @contextlib.contextmanager
    def translate_errors(self):
        """Turn transport failures into the gateway's errors."""
        try:
            yield
        except (httpx.TransportError, TimeoutError) as exc:
            if timed_out(exc):
                raise UpstreamTimeout(
                    f"The provider '{self.row.name}' did not answer within "
                    f"{settings.UPSTREAM_TIMEOUT:g} seconds."
                ) from None
            # The transport's message names the upstream's host and port: it is logged
            # for the operator, not shown to the client.
            logger.warning(
                "Provider %s unreachable: %s",
                self.row.name,
                redact(str(exc) or type(exc).__name__, self.secrets),
            )
            raise UpstreamError(f"Could not reach the provider '{self.row.name}'.") from None

    async def request_json(self, method, url, headers, body=None):
        """Send a request and return the decoded JSON answer, the whole call bounded in time."""
        with self.translate_errors():
            async with asyncio.timeout(settings.UPSTREAM_TIMEOUT):
                response = await self.client.request(method, url, json=body, headers=headers)
        return self.check_response(response, response.content)

    @contextlib.asynccontextmanager
    async def open_stream(self, url, body, headers):
        """Open a streamed POST; yield the response once its status is known to be good."""
        with self.translate_errors():
            request = self.client.build_request("POST", url, json=body, headers=headers)
            response = await self.client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with self.translate_errors():
                    content = await response.aread()
                self.check_response(response, content)
            yield response
        finally:
            await response.aclose()

    def check_response(self, response, content):
        """Return the JSON body of a good answer; raise the matching error for a bad one."""
        try:
            data = json.loads(content) if content else None
        except ValueError:
            data = None
        if response.status_code < 400:
            if data is None:
                raise UpstreamError(
                    f"The provider '{self.row.name}' answered with a body that is not JSON."
                )
            return data
        message = redact(self.error_message(data) or response.reason_phrase, self.secrets)
        status = response.status_code
        if status == 429:
            headers = {}
            if response.headers.get("retry-after", "").isdigit():
                headers["Retry-After"] = response.headers["retry-after"]
            raise RateLimited(
                f"The provider is rate limiting requests: {message}",
                code="upstream_rate_limited",
                headers=headers,
            )
        if status in (401, 403):
            # The client cannot fix the gateway's own credentials; nor should it see them.
            raise UpstreamError(
                f"The provider '{self.row.name}' refused the gateway's credentials.",
                code="upstream_auth_failed",
            )
        if 400 <= status < 500:
            raise InvalidRequest(f"The provider refused the request: {message}")
        raise UpstreamError(f"The provider failed (HTTP {status}): {message}")

    def error_message(self, data):
        """Return the message of an upstream error body, or None."""
        return None


async def iter_sse_data(response):
    """Yield the data of each server-sent event until [DONE].

    A stream that ends before [DONE] was cut by the upstream: that is an error, since
    the answer and its usage are incomplete.
    """
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            yield data
    except httpx.TransportError as exc:
        if timed_out(exc):
            raise UpstreamTimeout("The provider's stream stalled.") from None
    raise UpstreamError("The provider's stream ended before it was complete.", code="stream_cut")


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
    """Return message content as one string, joining a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content)


def finish_reason_for(request, usage):
    """Guess why generation stopped, for upstreams that do not say."""
    if request.max_tokens is not None and usage.completion_tokens >= request.max_tokens:
        return "length"
    return "stop"
