"""The most a validated request can spend: the amount reserved against its limits at admission.

    prompt      UTF-8 bytes of the JSON of everything the request sends the model (messages
                with their roles, tools, response_format; a prompt; texts to embed), plus
                PROMPT_OVERHEAD_TOKENS a call, and IMAGE_TOKENS an image instead of its bytes
    completion  the request's max_tokens (max_completion_tokens, max_output_tokens), else the
                model's default (Model.default_max_tokens, else DEFAULT_MAX_TOKENS) bounded
                by its context window;
                Workers AI and OpenAI-compatible upstreams are sent that bound or less
    cost        those tokens at the model's prices; with fallbacks, at the dearest way
                through the candidates: each one before the answering one fails after
                reading its prompt, which is charged at its own prices (fallbacks.py)

A BPE token (every model the gateway serves) stands for one byte or more, so the bytes of a
text are at least its tokens; the JSON's quotes, keys and braces stand for the tokens a chat
template wraps each message in. The estimate is the guarantee's only slack: a prompt whose
real count passes it (an image past IMAGE_TOKENS, a template longer than the overhead)
spends that difference beyond the reservation.

Media endpoints are priced by units at the model's unit price: images (n), characters (the
input), documents (their count) are known before the call; audio seconds are bounded by the
upload's size at AUDIO_BYTES_PER_SECOND.
"""

import json
import math
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from apikeys.usage import cost_of, units_cost

# Tokens a chat template or system header may add to one call beyond the JSON's own bytes
# (Llama 3.1 adds a dated system header of about 25 tokens).
PROMPT_OVERHEAD_TOKENS = 32
# Tokens one image may take: Llama 3.2 Vision's largest, 4 tiles of 1,601 tokens; OpenAI's
# high detail takes at most 1,105 (85 + 170 a tile).
IMAGE_TOKENS = 6_404
# The lowest bitrate an upload is taken to have, in bytes a second: 4 kbit/s, below the
# speech codecs' (Opus at 6 kbit/s, AMR at 4.75 kbit/s).
AUDIO_BYTES_PER_SECOND = 500
# What Llama Guard answers at most for one input ("unsafe" and the categories it names).
MODERATION_ANSWER_TOKENS = 32


@dataclass
class WorstCase:
    tokens: int
    cost: Decimal


def json_bytes(value):
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # A lone surrogate is counted, not refused here: the provider's encoder refuses it
    # with its own 400 (invalid_text), after the reservation is returned.
    return len(text.encode("utf-8", "surrogatepass"))


def chat_prompt_tokens(data):
    """Return the prompt estimate of a chat's validated fields (messages, tools, format)."""
    images = 0
    messages = []
    for message in data["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            kept = [part for part in content if part.get("type") != "image_url"]
            images += len(content) - len(kept)
            message = {**message, "content": kept}
        messages.append(message)
    sent = {
        "messages": messages,
        "tools": data.get("tools"),
        "response_format": data.get("response_format"),
    }
    return json_bytes(sent) + PROMPT_OVERHEAD_TOKENS + images * IMAGE_TOKENS


def completion_cap(max_tokens, model):
    """Return the completion tokens a call may produce on this model."""
    if max_tokens is not None:
        return max_tokens
    limit = model_default(model.default_max_tokens)
    return min(limit, model.context_window) if model.context_window else limit


def model_default(model_bound):
    """Return the completion bound of a model when a request names none: its own
    (Model.default_max_tokens), else the gateway's DEFAULT_MAX_TOKENS."""
    return model_bound or settings.DEFAULT_MAX_TOKENS


def generation(candidates, prompt_tokens, max_tokens, calls=1):
    """Return the worst case of `calls` generations of one prompt size each: the candidates
    before the one that answers read their prompts and fail, at the dearest answering one."""
    tokens, cost = 0, Decimal(0)
    failed_tokens, failed_cost = 0, Decimal(0)
    for model in candidates:
        cap = completion_cap(max_tokens, model)
        tokens = max(tokens, failed_tokens + calls * (prompt_tokens + cap))
        cost = max(cost, failed_cost + calls * cost_of(model, prompt_tokens, cap))
        failed_tokens += calls * prompt_tokens
        failed_cost += calls * cost_of(model, prompt_tokens, 0)
    return WorstCase(tokens, cost)


def chat(data, candidates):
    return generation(candidates, chat_prompt_tokens(data), data.get("max_tokens"))


def completions(data, candidates):
    """Every prompt is a call of its own; priced at the longest prompt for each."""
    prompt = max(json_bytes(prompt) for prompt in data["prompt"]) + PROMPT_OVERHEAD_TOKENS
    if data.get("suffix"):
        prompt += json_bytes(data["suffix"])
    return generation(candidates, prompt, data.get("max_tokens"), calls=len(data["prompt"]))


def embeddings(texts, model):
    tokens = json_bytes(texts) + PROMPT_OVERHEAD_TOKENS
    return WorstCase(tokens, cost_of(model, tokens, 0))


def moderations(texts, candidates):
    prompt = max(json_bytes(text) for text in texts) + PROMPT_OVERHEAD_TOKENS
    return generation(candidates, prompt, MODERATION_ANSWER_TOKENS, calls=len(texts))


def units(candidates, count):
    """Return the worst case of a media request priced by `count` units of its own kind:
    every candidate charged them, the ones before the last having failed after reading
    the input."""
    return WorstCase(0, sum(units_cost(model, count) for model in candidates))


def audio_seconds(upload_bytes):
    return math.ceil(upload_bytes / AUDIO_BYTES_PER_SECOND)
