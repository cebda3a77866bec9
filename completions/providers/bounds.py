"""The completion bound a chat or legacy completion is sent when the client names none.

Admission reserves, for a request that names no maximum, the model's own default
(Model.default_max_tokens, else DEFAULT_MAX_TOKENS) bounded by its context window
(completions/worst_case.py). The same bound goes in the request itself, so that no answer
runs past what was reserved: an OpenAI-compatible server sent none answers up to its own
limit, and Workers AI's older models stop at 256 tokens without a word said of it (each
model's schema: `max_tokens` default 256). It is further bounded by what the window leaves
after the prompt's estimate with the allowances admission makes for a chat template and
each image (completions/worst_case.py), as vLLM refuses a request whose prompt and
max_tokens pass its window where without one it would have answered: never more than the
reservation. It is sent whatever the key's limits, so that an answer does not change with
the limits of the key that asked for it. A legacy completion always names one (OpenAI's
default of 16).
"""

from completions.providers.estimates import estimate_prompt_tokens
from completions.worst_case import IMAGE_TOKENS, PROMPT_OVERHEAD_TOKENS, model_default


def bounded(request, highest=None):
    """Return a chat or completion request with the bound it is sent: the client's, else
    the model's default bounded by what the context window leaves after the prompt, and by
    `highest`, the most the model's schema allows."""
    if request.max_tokens is not None:
        return request
    prompt = estimate_prompt_tokens(request) + PROMPT_OVERHEAD_TOKENS
    prompt += IMAGE_TOKENS * _images(request)
    limit = model_default(getattr(request, "default_max_tokens", None))
    if request.context_window:
        limit = max(1, min(limit, request.context_window - prompt))
    return request.with_max_tokens(limit if highest is None else min(limit, highest))


def _images(request):
    """Count the images of a chat's messages (the estimate leaves them out)."""
    return sum(
        1
        for message in getattr(request, "messages", ())
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )
