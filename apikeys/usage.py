"""Usage records: one for every request that reached a provider, whatever its outcome, and
one more for each fallback attempt that spent something before failing (attempt_failed),
marked `attempt`: the reports count its tokens and cost, but not as a request
(apikeys/rollups.sums).

The record carries the request's cost, from the answering model's prices; once it is
written, its tokens and cost settle the request's reservation (apikeys/throttling.py).
A prompt that reached a provider is paid for, always: when the upstream reports no usage
(the client left, the upstream failed after taking the request or cut its stream), the
record carries the prompt's tokens as the gateway counts them, and the completion tokens
seen, marked estimated. Whether a failure spent the prompt is the error's `prompt_spent`
(gateway/errors.py, set by providers/base.py): a refusal before the model ran, or an
upstream that could not be reached, spends nothing.
"""

import asyncio
import copy
import logging
import time
from decimal import ROUND_HALF_UP, Decimal

from alerts.budgets import budget_alerts
from apikeys.models import UsageRecord
from apikeys.throttling import asettle
from apikeys.writer import writer
from gateway import metrics
from gateway.errors import GatewayError, InvalidRequest, PayloadTooLarge

# Model prices are per million tokens.
TOKENS_PER_PRICE_UNIT = 1_000_000
# The precision UsageRecord.cost keeps, in USD.
COST_PRECISION = Decimal("0.00000001")
# The most UsageRecord.cost holds (14 digits, 8 of them decimals), in USD.
MAX_COST = Decimal("999999.99999999")
# The most tokens of one kind a record holds: the sum of several calls' usages (the prompts
# of a legacy completion, batches of embeddings) may pass one call's cap
# (Usage.MAX_REPORTED_TOKENS), and prompt plus completion must fit UsageRecord's 32-bit
# total_tokens.
MAX_RECORDED_TOKENS = 10**9

logger = logging.getLogger(__name__)

# Saves still running after the request that started them was cancelled; kept so that
# the event loop does not drop them.
_pending_saves = set()


class UsageMeter:
    """Measure one provider call and write its usage record once it has ended."""

    def __init__(self, request, model, endpoint, stream, requested_model="", prompt_tokens=0):
        self.fields = {
            "requested_model": requested_model,
            "api_key": request.api_key,
            "key_name": request.api_key.name,
            "team_id": request.api_key.team_id,
            "endpoint": endpoint,
            "stream": stream,
            "request_id": request.id,
        }
        # The model that answers; a fallback replaces it (see answered_by).
        self.model = model
        self.started = time.monotonic()
        self.first_token_at = None
        self.usage = None
        self.completion_tokens_seen = 0
        # The prompt's tokens as the gateway counts them (providers/base.py
        # estimate_tokens), recorded when a provider read the prompt and reported no usage.
        self.prompt_tokens = prompt_tokens
        # Whether a provider may have run its model on the prompt (see reached, failed).
        self.prompt_spent = False
        self.status = UsageRecord.OK
        self.http_status = 200
        self.error = ""
        self.error_code = None
        self.saved = False
        # The request's hold on its limits (throttling.reserve), settled by the record.
        self.reservation = getattr(request, "reservation", None)
        # A media endpoint's count of what it made (images, audio seconds, characters,
        # documents), priced at the model's unit_price; tokens are counted from `usage`.
        self.unit = UsageRecord.TOKENS
        self.units = 0
        # The record's fields once they are final (a failed attempt's: attempt_failed).
        self.final_fields = None

    def answered_by(self, model):
        """Name the model the record is of: the candidate that answered, or the last one
        called when none did (its prices are what its reading of the prompt cost)."""
        self.model = model

    def first_token(self):
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def succeeded(self, usage):
        self.usage = usage

    def spent(self, usage):
        """Record what a request that then failed had spent: the usage of its calls that
        succeeded, and the estimated prompts of those a provider read."""
        self.usage = usage

    def reached(self):
        """Note that the provider has read the prompt: its stream has begun."""
        self.prompt_spent = True

    def counted(self, units, unit):
        """Record what a media request made, in its unit (UsageRecord.UNIT_CHOICES)."""
        self.units = units
        self.unit = unit

    def failed(self, error):
        if isinstance(error, InvalidRequest | PayloadTooLarge):
            self.status = UsageRecord.CLIENT_ERROR
        elif isinstance(error, GatewayError):
            self.status = UsageRecord.UPSTREAM_ERROR
        else:
            # Anything else is a failure of the gateway's own, not the provider's.
            self.status = UsageRecord.GATEWAY_ERROR
        self.http_status = error.status if isinstance(error, GatewayError) else 500
        self.error = str(error)
        self.error_code = getattr(error, "code", None) or type(error).__name__
        # A failure of the gateway's own (not a GatewayError) spends the prompt only once
        # the provider is known to have read it (reached): before that, whether it was
        # sent cannot be told, and the client does not pay for the gateway's fault.
        self.prompt_spent = self.prompt_spent or getattr(error, "prompt_spent", False)

    def attempt_failed(self, model, error):
        """Split off the record of a failed attempt on `model` before a fallback is tried.

        Return a meter of the attempt alone, at its model's prices, holding what this meter
        has counted so far (the prompt if the error says the model may have read it, the
        calls that succeeded, a media call's units), or None if it spent nothing. Its record
        settles no reservation: it adds to the limits' counters, and the request's own
        record settles the hold. This meter starts afresh for the next candidate.
        """
        attempt = copy.copy(self)
        # Marked, so that the reports count its tokens and cost but not a request of its
        # own (apikeys/rollups.sums): the request's own record is the one that counts.
        attempt.fields = {**self.fields, "attempt": True}
        attempt.model = model
        attempt.reservation = None
        attempt.first_token_at = None
        attempt.failed(error)
        # Measured once, now: the attempt's latency ends as it failed, not when it is saved.
        attempt.final_fields = attempt.record_fields()
        self.usage = None
        self.units = 0
        self.completion_tokens_seen = 0
        spent = attempt.final_fields["total_tokens"] or attempt.final_fields["units"]
        return attempt if spent else None

    def client_closed(self):
        self.status = UsageRecord.CLIENT_CLOSED
        # Nginx's code for a request the client closed before the answer was complete.
        self.http_status = 499
        # The client left while a provider was working on its request, or streaming the
        # answer: the prompt had been sent. One that leaves while the connection is still
        # being made (milliseconds) pays for it too; the two cannot be told apart here.
        self.prompt_spent = True

    def record_fields(self):
        if self.final_fields is not None:
            return dict(self.final_fields)
        now = time.monotonic()
        usage = self.usage
        if usage is not None:
            prompt, cached = usage.prompt_tokens, usage.cached_tokens
            completion, estimated = usage.completion_tokens, usage.estimated
        else:
            # Without the provider's usage, a stream's completion tokens are those counted
            # as they came, and a prompt the provider read is paid for as the gateway
            # counts it.
            prompt = self.prompt_tokens if self.prompt_spent else 0
            cached = 0
            completion = self.completion_tokens_seen
            estimated = prompt + completion > 0
        if max(prompt, completion) > MAX_RECORDED_TOKENS:
            logger.warning(
                "Usage of %d prompt and %d completion tokens recorded as at most %d each",
                prompt,
                completion,
                MAX_RECORDED_TOKENS,
            )
            prompt = min(prompt, MAX_RECORDED_TOKENS)
            completion = min(completion, MAX_RECORDED_TOKENS)
            cached = min(cached, prompt)
            estimated = True
        return {
            **self.fields,
            "model": self.model.name,
            "provider": self.model.provider.name,
            "status": self.status,
            "http_status": self.http_status,
            "error": self.error[:2000],
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cached_tokens": cached,
            "tokens_estimated": estimated,
            "unit": self.unit,
            "units": prompt + completion if self.unit == UsageRecord.TOKENS else self.units,
            "cost": cost_of(self.model, prompt, completion, cached_tokens=cached)
            + units_cost(self.model, 0 if self.unit == UsageRecord.TOKENS else self.units),
            "latency_ms": round((now - self.started) * 1000),
            "time_to_first_token_ms": (
                round((self.first_token_at - self.started) * 1000)
                if self.first_token_at is not None
                else None
            ),
        }

    async def save(self):
        """Write the record once, even if the request is cancelled while it is written."""
        task = self.submit()
        if task is not None:
            await asyncio.shield(task)

    def submit(self):
        """Hand the record to the usage writer once, and return at once the task that
        waits for its write and then settles the limits (None if it was handed over
        before). The writer holds the record from here on, at exit too (apikeys/writer.py).
        """
        if self.saved:
            return None
        self.saved = True
        reservation = self.reservation
        if reservation is not None:
            reservation.claimed = True
        fields = self.record_fields()
        self._observe(fields)
        try:
            written = writer.submit(fields)
        except Exception as error:
            # The writer could not take the record (no thread to start at interpreter exit):
            # the limits are settled all the same, and the task raises the error.
            written = asyncio.get_running_loop().create_future()
            written.set_exception(error)
        task = asyncio.ensure_future(_record(self.fields["api_key"], reservation, fields, written))
        _pending_saves.add(task)
        task.add_done_callback(_pending_saves.discard)
        return task

    def _observe(self, fields):
        """Count the call in the Prometheus metrics (gateway/metrics.py)."""
        model = fields["model"]
        metrics.MODEL_REQUESTS.labels(fields["endpoint"], model, fields["status"]).inc()
        metrics.TOKENS.labels(model, "prompt").inc(fields["prompt_tokens"])
        metrics.TOKENS.labels(model, "completion").inc(fields["completion_tokens"])
        # Part of the prompt's tokens, not more of them: cached / prompt is the hit rate.
        metrics.TOKENS.labels(model, "cached").inc(fields["cached_tokens"])
        if fields["time_to_first_token_ms"] is not None:
            metrics.FIRST_TOKEN_SECONDS.labels(model).observe(
                fields["time_to_first_token_ms"] / 1000
            )
        if self.status == UsageRecord.UPSTREAM_ERROR:
            metrics.UPSTREAM_ERRORS.labels(fields["provider"], self.error_code).inc()
        elif self.status == UsageRecord.GATEWAY_ERROR:
            metrics.GATEWAY_ERRORS.labels(self.error_code).inc()


def cost_of(model, prompt_tokens, completion_tokens, cached_tokens=0):
    """Return the USD cost of these tokens at the model's prices; an unknown price is 0.

    `cached_tokens` are the part of the prompt the upstream read from its prefix cache,
    charged at the cached input price, or at the input price when the model has none.
    A cost beyond what a record holds is MAX_COST: the record is kept, and the budget is
    spent all the same.
    """
    input_price = model.input_price or Decimal(0)
    cached_price = input_price if model.cached_input_price is None else model.cached_input_price
    output_price = model.output_price or Decimal(0)
    cached_tokens = min(cached_tokens, prompt_tokens)
    cost = (
        (prompt_tokens - cached_tokens) * input_price
        + cached_tokens * cached_price
        + completion_tokens * output_price
    ) / TOKENS_PER_PRICE_UNIT
    return min(cost, MAX_COST).quantize(COST_PRECISION, rounding=ROUND_HALF_UP)


def units_cost(model, units):
    """Return the USD cost of a media request's units at the model's unit price (none: 0)."""
    price = model.unit_price or Decimal(0)
    return (units * price).quantize(COST_PRECISION, rounding=ROUND_HALF_UP)


async def _record(key, reservation, fields, written):
    try:
        # The writer's own thread and connection: a cancelled stream's request has already
        # released its connection, and the write must not open one behind it.
        await writer.wait(written)
    finally:
        # Settled after the write, so that a sum of the records made meanwhile counts the
        # request twice rather than not at all; settled even if the write failed: the
        # provider has spent the tokens all the same.
        await asettle(key, reservation, fields["total_tokens"], fields["cost"])
        # Scheduled, not awaited: the request does not wait for its alerts. After the
        # settlement, which is what the alerts read (apikeys/throttling.budget_status).
        budget_alerts.check_after(key)
