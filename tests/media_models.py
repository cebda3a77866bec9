"""The Workers AI media models of the fixtures, as sync_models would import them."""

from completions.models import Model
from tests import workers_ai_models

FLUX = "@cf/black-forest-labs/flux-1-schnell"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
WHISPER = "@cf/openai/whisper"
WHISPER_TURBO = "@cf/openai/whisper-large-v3-turbo"
MELOTTS = "@cf/myshell-ai/melotts"
AURA = "@cf/deepgram/aura-1"
LLAMA_GUARD = "@cf/meta/llama-guard-3-8b"
RERANKER = "@cf/baai/bge-reranker-base"
EMBEDDING_GEMMA = "@cf/google/embeddinggemma-300m"


def add(provider, *names, **fields):
    """Create each named fixture model on the provider, with its task and schemas."""
    models = []
    for name in names:
        entry = workers_ai_models.entry(name)
        models.append(
            Model.objects.create(
                name=name,
                provider=provider,
                task=entry["task"]["name"],
                input_schema=entry["schema"]["input"],
                output_schema=entry["schema"]["output"],
                **fields,
            )
        )
    return models
