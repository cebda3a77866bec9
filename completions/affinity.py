"""The session affinity of a chat: one id per conversation, for upstream prompt caching.

Workers AI keeps the computed prefix of a prompt on the instance that served it, and sends
requests carrying the same `x-session-affinity` header to the same instance, so that the
next turn of a conversation, which repeats the earlier turns, finds its prefix cached
([doc] workers-ai/features/prompt-caching.mdx).

The id stands for, by preference, the client's `prompt_cache_key` (OpenAI's parameter for
the same purpose), else its `user`, else the conversation's opening: the messages up to
and including the first user message, which every later turn repeats. What is sent is a
SHA-256 digest of that and the API key's id, so that
- two keys never share an id, even for the same prompt_cache_key or the same opening;
- what a client wrote (a user's name, a system prompt) does not leave the gateway as such,
  and any character the client sent is safe in an HTTP header;
- nothing secret is in it: the key's id is a row number, not its secret or digest.
"""

import hashlib
import json

# Hex digits of the digest kept: 128 bits, too many for two conversations to collide.
AFFINITY_HEX_DIGITS = 32


def session_affinity(api_key, data):
    """Return the affinity id of a validated chat request (its serializer's data)."""
    if data.get("prompt_cache_key"):
        source = ["prompt_cache_key", data["prompt_cache_key"]]
    elif data.get("user"):
        source = ["user", data["user"]]
    else:
        source = ["opening", _opening(data["messages"])]
    # ASCII JSON: a lone surrogate in a message is escaped, not an encoding error.
    text = json.dumps([api_key.pk, *source], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:AFFINITY_HEX_DIGITS]


def _opening(messages):
    """Return the role and content of the messages up to and including the first user one."""
    opening = []
    for message in messages:
        opening.append([message["role"], message.get("content")])
        if message["role"] == "user":
            break
    return opening
