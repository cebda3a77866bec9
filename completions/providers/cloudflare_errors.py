"""Workers AI's error codes, and the gateway's error for each: one table, ERROR_CODES.

Workers AI says what went wrong with a code in its error body,
{"errors": [{"code": 3040, "message": "..."}], "success": false, ...}; the HTTP status
alone does not tell a capacity shortage from a used-up daily allowance (both 429) or a
model agreement from refused credentials (both 403). CloudflareProvider.error_for and
may_retry read the code here; answers with no code in the table are read by status, as
for any provider (BaseProvider.error_for).
"""

import logging
import math
from dataclasses import dataclass
from urllib.parse import unquote

from completions.providers.retries import retry_after_seconds
from gateway.errors import (
    InvalidRequest,
    PayloadTooLarge,
    UpstreamError,
    UpstreamOverCapacity,
    UpstreamQuotaExhausted,
    UpstreamTimeout,
    redact,
)

logger = logging.getLogger(__name__)

# Seconds in a day, for the daily allowance's renewal at midnight UTC.
DAY_SECONDS = 24 * 3600


@dataclass(frozen=True)
class CodedError:
    """What one of Workers AI's error codes is to the gateway."""

    # The gateway's error: its class gives the client's status and whether another model is
    # tried (completions/fallbacks.py).
    error: type
    # The error's code for the client; None keeps the class's own.
    code: str | None
    # The client's message; {provider}, {model}, {code} and {message} (Workers AI's own,
    # without secrets) are filled in.
    message: str
    # Whether only the gateway's operator can fix it: then it is also logged at ERROR.
    operator: bool = False


OVER_CAPACITY = CodedError(
    UpstreamOverCapacity,
    None,
    "The provider '{provider}' is over capacity for {model} ({code}: {message}); try again "
    "shortly.",
)
ALLOWANCE_USED_UP = CodedError(
    UpstreamQuotaExhausted,
    None,
    "The provider '{provider}' has used up its daily allowance of Workers AI; it renews at "
    "midnight UTC ({code}: {message})",
)
MODEL_REFUSED = CodedError(
    UpstreamError,
    "upstream_model_refused",
    "The provider '{provider}' refused {model} to the gateway's account ({code}: {message}). "
    "The gateway's operator must act on it.",
    operator=True,
)
TIMED_OUT = CodedError(
    UpstreamTimeout,
    None,
    "The provider '{provider}' timed out running {model} ({code}: {message}).",
)
UNROUTABLE = CodedError(
    UpstreamError,
    "upstream_misconfigured",
    "The provider '{provider}' could not route the gateway's request ({code}: {message}); "
    "its account id or base URL looks wrong.",
    operator=True,
)
MODEL_UNKNOWN = CodedError(
    UpstreamError,
    "upstream_model_unknown",
    "The provider '{provider}' does not have {model} ({code}: {message}); the gateway's "
    "model catalogue is out of date (its operator should run sync_models).",
    operator=True,
)
BAD_INPUT = CodedError(InvalidRequest, None, "The provider refused the request: {message}")
TOO_LARGE = CodedError(
    PayloadTooLarge, None, "The provider refused the request as too large: {message}"
)

# Workers AI's error codes and what each is to the gateway: the one place that reads them.
# Sources: [doc] platform/errors.mdx; [3p] captures of 4006, 5006, 7003; [cf-sdk] 8001,
# 8006 (see the fake upstream's CLOUDFLARE_CODED_ERRORS). The class of each error gives the
# client's status and whether a fallback is tried; no answer with a code here is tried
# again on the same model (send() reads a 429's code before it would wait). Other codes,
# 10000 (credentials refused) and 5xx answers among them, are read by status as for any
# provider (BaseProvider.error_for); a 404 without a code here is UNROUTABLE.
#
#   code   HTTP  client sees                     fallback             retried
#   3040   429   503 upstream_over_capacity      yes, at once         no
#   4006   429   429 upstream_quota_exhausted,   other accounts only  no
#   3036   429     Retry-After: to midnight UTC
#   5016   403   502 upstream_model_refused      yes                  no
#   5018   403     (logged at ERROR)
#   3041   403
#   3023   403
#   3007   408   504 upstream_timeout            yes                  no
#   3008   408
#   7003   404   502 upstream_misconfigured      yes                  no
#   5007   400   502 upstream_model_unknown      yes                  no
#   3042   404     (logged at ERROR)
#   3006   413   413 request_too_large           no                   no
#   5006   400   400 invalid_request_error       no                   no
#   8001   400
#   8006   400
ERROR_CODES = {
    3040: OVER_CAPACITY,
    4006: ALLOWANCE_USED_UP,
    3036: ALLOWANCE_USED_UP,
    5016: MODEL_REFUSED,
    5018: MODEL_REFUSED,
    3041: MODEL_REFUSED,
    3023: MODEL_REFUSED,
    3007: TIMED_OUT,
    3008: TIMED_OUT,
    7003: UNROUTABLE,
    5007: MODEL_UNKNOWN,
    3042: MODEL_UNKNOWN,
    3006: TOO_LARGE,
    5006: BAD_INPUT,
    8001: BAD_INPUT,
    8006: BAD_INPUT,
}


def error_for(provider, response, data):
    """Return the gateway's error for Workers AI's error answer by its code, or None.

    `data` is the answer's decoded body, or None; a 404 with no code of the table is
    UNROUTABLE. None leaves the answer to be read by its status.
    """
    code, rule = coded_error(data) or (None, None)
    if rule is None and response.status_code == 404:
        rule = UNROUTABLE
    if rule is None:
        return None
    message = provider.upstream_message(response, data)
    model = _model_of(response)
    fields = {
        "provider": provider.row.name,
        "model": f"the model '{model}'" if model else "the request",
        "message": message,
        "code": f"Workers AI code {code}" if code else f"HTTP {response.status_code}",
    }
    text = redact(rule.message.format(**fields), provider.secrets)
    if rule.operator:
        logger.error(
            "Provider %s (Workers AI) needs its operator: %s, for %s: %s",
            provider.row.name,
            fields["code"],
            fields["model"],
            message,
        )
    headers = {}
    if issubclass(rule.error, UpstreamQuotaExhausted):
        headers["Retry-After"] = str(seconds_until_utc_midnight(provider.timer()))
    elif issubclass(rule.error, UpstreamOverCapacity):
        # Not waited for (the next fallback is tried at once), but the client may.
        after = retry_after_seconds(response.headers)
        if after is not None:
            headers["Retry-After"] = str(math.ceil(after))
    return rule.error(text, code=rule.code, headers=headers)


def coded_error(data):
    """Return (code, CodedError) for the first error of a body with a code in ERROR_CODES."""
    errors = data.get("errors") if isinstance(data, dict) else None
    for error in errors if isinstance(errors, list) else []:
        code = error.get("code") if isinstance(error, dict) else None
        if isinstance(code, str) and code.isdigit():
            code = int(code)
        if isinstance(code, int) and not isinstance(code, bool) and code in ERROR_CODES:
            return code, ERROR_CODES[code]
    return None


def seconds_until_utc_midnight(now):
    """Return whole seconds from `now` (seconds since the epoch) to the next midnight UTC."""
    return DAY_SECONDS - int(now) % DAY_SECONDS


def _model_of(response):
    """Return the model a /ai/run/ call named, or None for other calls."""
    _, found, model = unquote(response.request.url.path).partition("/ai/run/")
    return model if found else None
