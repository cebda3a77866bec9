"""Budget alerts posted to a team's webhook: signed JSON, retried with backoff.

Each POST carries the alert as JSON and the header

    X-Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>

made with the team's webhook secret, as Stripe signs its events: the receiver recomputes
the HMAC over the raw body and compares in constant time (`verify`, also in the README), and
refuses a timestamp too old, so that a captured request cannot be replayed later. Each
attempt is signed afresh; X-Gateway-Delivery stays the same, so a receiver can drop a
repeat.

The URL is a way into the gateway's own network (SSRF), so its host is resolved once and
refused if any address is internal (the checks of completions/image_urls.py), unless it is in
BUDGET_ALERT_WEBHOOK_ALLOWED_NETWORKS; the POST goes to the very address checked, redirects
are not followed, and no proxy from the environment is used.
"""

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from dataclasses import dataclass

import httpx
from django.conf import settings

from completions.image_urls import default_ssl_context, is_allowed_address, resolve_host

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Gateway-Signature"
# Seconds a receiver accepts between the signature's timestamp and its own clock.
DEFAULT_TOLERANCE = 300


class WebhookRefused(Exception):
    """A webhook URL the gateway will not post to; the message says why."""


@dataclass
class Delivery:
    """How posting one alert went."""

    delivered: bool
    attempts: int
    error: str = ""


def sign(secret, body, timestamp):
    """Return the X-Gateway-Signature value for a body (bytes) at a unix timestamp."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret, body, header, tolerance=DEFAULT_TOLERANCE, now=None):
    """Tell whether a signature header is the secret's for this raw body, and recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookSender:
    """Post a payload to a URL, retrying with backoff, within the BUDGET_ALERT_WEBHOOK_*
    settings.

    The resolver, the clock, the sleep and the transport are class attributes, so that tests
    decide what a host name resolves to and how long a wait takes.
    """

    resolver = staticmethod(resolve_host)
    ssl_context = staticmethod(default_ssl_context)
    timer = staticmethod(time.time)
    sleep = staticmethod(asyncio.sleep)
    transport_class = httpx.AsyncHTTPTransport

    def __init__(self):
        self.attempts = settings.BUDGET_ALERT_WEBHOOK_ATTEMPTS
        self.backoff = settings.BUDGET_ALERT_WEBHOOK_BACKOFF
        self.timeout = settings.BUDGET_ALERT_WEBHOOK_TIMEOUT
        self.allowed_networks = [
            ipaddress.ip_network(network)
            for network in settings.BUDGET_ALERT_WEBHOOK_ALLOWED_NETWORKS
        ]

    async def post(self, url, secret, payload, delivery_id):
        """Post the payload (a JSON-able dict) until a 2xx answer; return a Delivery."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        error = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                # 1, 2, 4, 8 s at the default backoff of 1 s.
                await self.sleep(self.backoff * 2 ** (attempt - 2))
            try:
                status = await self._post_once(url, secret, body, delivery_id)
            except WebhookRefused as refusal:
                # Asking again would be refused again.
                return Delivery(False, attempt - 1, str(refusal))
            except (httpx.HTTPError, OSError, TimeoutError) as failure:
                error = f"{type(failure).__name__}: {failure}".rstrip(": ")
            else:
                if 200 <= status < 300:
                    return Delivery(True, attempt)
                error = f"HTTP {status}"
            logger.info("Budget alert webhook attempt %d failed: %s", attempt, error)
        return Delivery(False, self.attempts, error)

    async def _post_once(self, url, secret, body, delivery_id):
        target = self._target(url)
        host = target.raw_host.decode("ascii")
        addresses = await self._checked_addresses(target, host)
        headers = {
            "Host": target.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": "llm-gateway-alerts",
            "X-Gateway-Event": "budget.threshold_crossed",
            "X-Gateway-Delivery": delivery_id,
            SIGNATURE_HEADER: sign(secret, body, int(self.timer())),
        }
        extensions = {"sni_hostname": host} if target.scheme == "https" else {}
        transport = self.transport_class(verify=self.ssl_context(), retries=0, trust_env=False)
        async with (
            asyncio.timeout(self.timeout),
            httpx.AsyncClient(transport=transport, trust_env=False, timeout=self.timeout) as client,
        ):
            for position, address in enumerate(addresses):
                request = client.build_request(
                    "POST",
                    target.copy_with(host=str(address), username=None, password=None),
                    headers=headers,
                    content=body,
                    extensions=extensions,
                )
                try:
                    response = await client.send(request)
                except httpx.ConnectError:
                    if position < len(addresses) - 1:
                        continue
                    raise
                return response.status_code
        raise AssertionError("_post_once needs at least one address")

    @staticmethod
    def _target(url):
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise WebhookRefused("the webhook URL is not valid") from None
        if target.scheme not in ("http", "https") or not target.raw_host:
            raise WebhookRefused("the webhook URL must be http or https")
        return target

    async def _checked_addresses(self, target, host):
        try:
            addresses = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            port = target.port or (443 if target.scheme == "https" else 80)
            addresses = [ipaddress.ip_address(a) for a in await self.resolver(host, port)]
        if not addresses:
            # Perhaps for a moment: worth another attempt.
            raise httpx.ConnectError(f"the webhook host {host} could not be resolved")
        refused = [a for a in addresses if not is_allowed_address(a, self.allowed_networks)]
        if refused:
            raise WebhookRefused(
                f"the webhook host {host} resolves to an internal address "
                f"({', '.join(map(str, refused))}); allow it in "
                "BUDGET_ALERT_WEBHOOK_ALLOWED_NETWORKS"
            )
        return addresses
