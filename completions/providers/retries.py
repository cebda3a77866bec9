"""When a failed upstream call is tried again, and after how long (BaseProvider.send)."""

import contextlib
import email.utils
import math
import random
from datetime import UTC, datetime

from django.conf import settings

# Statuses worth another attempt: a proxy or the upstream itself saying it could not
# answer this time (429 only when the upstream says when to come back).
RETRIED_STATUSES = (502, 503)


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
