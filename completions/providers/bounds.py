"""The completion bound a chat or legacy completion is sent when the client names none.

Admission reserves, for a request that names no maximum, the model's own default
(Model.default_max_tokens, else DEFAULT_MAX_TOKENS) bounded by its context window
(completions/worst_case.py). The same bound goes in the request
itself, so that no answer runs past what was reserved: an OpenAI-compatible server sent
none answers up to its own limit, and Workers AI's older models stop at 256 tokens without
a word said of it (each model's schema: `max_tokens` default 256). It is further bounded by
what the window leaves after the prompt's estimate, as vLLM refuses a request whose prompt
and max_tokens pass its window where without one it would have answered: never more than
the reservation. It is sent whatever the key's limits, so that an answer does not change
with the limits of the key that asked for it.
"""

from django.conf import settings

from completions.providers.estimates import estimate_prompt_tokens


def default_max_tokens(configured, context_window, prompt_tokens):
    """Return the max_tokens to send when the client gave none.

    The configured default, bounded by what the context window leaves after the prompt
    (at least 1, so a prompt that fills the window is refused by the model, not here).
    """
    if context_window:
        return max(1, min(configured, context_window - prompt_tokens))
    return configured


def configured(model_bound):
    """Return the bound a model is given when a request names none: its own
    (Model.default_max_tokens), else the gateway's DEFAULT_MAX_TOKENS."""
    return model_bound or settings.DEFAULT_MAX_TOKENS


def bounded(request):
    """Return a chat or completion request with the bound it is sent: the client's, else
    the model's default bounded by what the context window leaves after the prompt."""
    if request.max_tokens is not None:
        return request
    prompt_tokens = estimate_prompt_tokens(request)
    return request.with_max_tokens(
        default_max_tokens(
            configured(request.default_max_tokens), request.context_window, prompt_tokens
        )
    )
