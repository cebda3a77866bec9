"""Call a model's provider, and its fallbacks in order while the provider fails.

A fallback is tried when the provider fails before anything reached the client: a 5xx,
a timeout, an unreachable host, a 429. A refusal (another 4xx) is the request's own
fault and would fail the same way everywhere, so it is answered at once. A provider's
allowance used up (UpstreamQuotaExhausted) is shared by every model on its account, so
the fallbacks on that account are skipped and only those elsewhere are tried. For a
stream, "before anything reached the client" means before its first event: once that is
sent, a failure ends the stream with an error event instead.

Every request leaves the usage record of the attempt that ended it: it names the model
that answered (or the one asked for, if none did) and keeps the name asked for. An earlier
attempt that spent something before failing (its upstream read the prompt: a 5xx, a
timeout after the request was sent; or some calls of a request split in several
succeeded) leaves a record of its own, under the same request id, with the error's status
and what it spent at its own model's prices: the prompt as the gateway counts it, marked
estimated. A record of its own rather than tokens folded into the answer's: each record
names one model and holds that model's tokens at that model's prices, so sums by model,
provider and status stay true. It is marked `attempt`: the reports count its tokens and
cost under its model, not as a request nor an error (apikeys/rollups.py). An
attempt refused before its model ran (a 429, unreachable) leaves none; it is logged.
An earlier attempt's record is handed to the usage writer without waiting for its write:
the client waits on the next candidate, not on the database, and the writer keeps the
record until it is written, at exit included (apikeys/writer.py).
"""

import asyncio
import logging

from completions.providers import get_provider
from gateway.errors import GatewayError, RateLimited, UpstreamError, UpstreamQuotaExhausted

logger = logging.getLogger(__name__)

# Failures that another model may not share. RateLimited here is the provider's 429:
# the gateway's own limits refuse a request before any provider is called.
FALLBACK_ERRORS = (UpstreamError, RateLimited)


async def call_with_fallbacks(candidates, meter, call):
    """Return (model, provider, result) of the first candidate for which `call` succeeds.

    `call(provider, model)` is awaited for each candidate in turn. If the last one fails
    too, its error is recorded on the meter and raised.
    """
    providers = [get_provider(model.provider) for model in candidates]
    # The accounts whose allowance is used up (BaseProvider.allowance).
    exhausted = set()
    for position, (model, provider) in enumerate(zip(candidates, providers, strict=True)):
        if provider.allowance in exhausted:
            continue
        # The record is of the candidate called last, whatever its outcome.
        meter.answered_by(model)
        try:
            result = await call(provider, model)
        except asyncio.CancelledError:
            # The client went away while the provider was working: the call still
            # reached a provider, so it still leaves its record.
            meter.client_closed()
            await meter.save()
            raise
        except GatewayError as error:
            if isinstance(error, UpstreamQuotaExhausted):
                exhausted.add(provider.allowance)
            after = [
                later.name
                for later, its_provider in zip(
                    candidates[position + 1 :], providers[position + 1 :], strict=True
                )
                if its_provider.allowance not in exhausted
            ]
            if isinstance(error, FALLBACK_ERRORS) and after:
                logger.warning(
                    "Model %s failed (%s); falling back to %s", model.name, error, after[0]
                )
                attempt = meter.attempt_failed(model, error)
                if attempt is not None:
                    # Handed to the usage writer, not waited for: the next candidate is
                    # called at once, and a failed write is the writer's to retry. Its
                    # settlement may come a moment after the request's own; until then
                    # the limits' counters lack its tokens (milliseconds).
                    attempt.submit().add_done_callback(_attempt_recorded)
                continue
            meter.failed(error)
            await meter.save()
            raise
        except Exception as error:
            # A failure of the gateway's own, recorded as such: another model would meet
            # the same failure, so no fallback is tried.
            meter.failed(error)
            await meter.save()
            raise
        return model, provider, result
    raise AssertionError("call_with_fallbacks needs at least one candidate")


def _attempt_recorded(task):
    """Log a failed attempt's record whose write or settlement failed."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning(
            "The usage record or settlement of a failed attempt failed (%s)", task.exception()
        )
