"""Upstream providers, one class per kind, behind the interface of `base.BaseProvider`."""

from completions.providers.cloudflare import CloudflareProvider
from completions.providers.echo import EchoProvider
from completions.providers.openai import OpenAIProvider

PROVIDER_CLASSES = {
    "cloudflare": CloudflareProvider,
    "openai": OpenAIProvider,
    "echo": EchoProvider,
}


def get_provider(row):
    """Return the provider object for a Provider row."""
    return PROVIDER_CLASSES[row.kind](row)
