"""Find the model a request names, by its id or one of its aliases, and its fallbacks."""

from dataclasses import dataclass

from django.db.models import Prefetch

from apikeys.permissions import require_model_access
from completions.models import Model, ModelFallback
from gateway.errors import InvalidRequest, ModelNotFound, NotFound
from gateway.memo import Snapshot

# What each capability is called in the error for a model that lacks it.
CAPABILITY_NAMES = {
    "chat": "chat completions",
    "completions": "legacy completions (/v1/completions)",
    "embeddings": "embeddings",
    "images": "image generation (/v1/images/generations)",
    "transcriptions": "audio transcriptions",
    "translations": "audio translations",
    "speech": "text-to-speech (/v1/audio/speech)",
    "moderations": "moderations",
    "rerank": "reranking (/v1/rerank)",
}


@dataclass
class Catalogue:
    """Every available model, by its name and by each of its aliases."""

    by_name: dict
    by_alias: dict

    def find(self, name):
        return self.by_name.get(name) or self.by_alias.get(name)


def _load_catalogue():
    links = ModelFallback.objects.select_related("fallback__provider").order_by("position")
    models = list(
        Model.objects.available().prefetch_related(
            "aliases", Prefetch("fallback_links", queryset=links)
        )
    )
    return Catalogue(
        by_name={model.name: model for model in models},
        by_alias={alias.name: model for model in models for alias in model.aliases.all()},
    )


# Cleared by completions/apps.py when a model, alias, fallback or provider is saved.
catalogue = Snapshot(_load_catalogue)


async def resolve_model(name, key, capability=None):
    """Return the enabled Model called `name` (or aliased so) that this key may use.

    With a capability ("chat", "completions", "embeddings"), a model without it is
    refused with a 400 naming `model`.
    """
    model = (await catalogue.get()).find(name)
    if model is None:
        raise ModelNotFound(name)
    require_model_access(key, model, name)
    if model.is_retired():
        # Refused rather than sent on: the provider no longer serves it, and its own error
        # would not say why. OpenAI answers a retired model with this same 404.
        raise NotFound(
            f"The model '{name}' was retired by its provider on {model.deprecation_date}; "
            "choose another model.",
            param="model",
            code="model_not_found",
        )
    if capability is not None and not model.capabilities[capability]:
        raise InvalidRequest(
            f"The model '{name}' does not support {CAPABILITY_NAMES[capability]}; "
            f"it is a '{model.task}' model.",
            param="model",
            code="unsupported_model",
        )
    return model


def fallback_chain(model, key, capability, suits=None):
    """Return the model, then those of its fallbacks able to stand in for it, in order.

    A fallback stands in if it is enabled, on an active provider, open to the key, has
    the capability and, if given, `suits(fallback)` says it can take the request.
    """
    chain = [model]
    for link in model.fallback_links.all():
        fallback = link.fallback
        if (
            fallback.enabled
            and fallback.provider.is_active
            and fallback.capabilities[capability]
            and not fallback.is_retired()
            and key.allows_model(fallback.name)
            and (suits is None or suits(fallback))
            and fallback not in chain
        ):
            chain.append(fallback)
    return chain


async def list_models(key):
    """Return (id, Model) pairs this key may see: every model, then every alias.

    Models past their deprecation date are left out, as resolve_model refuses them.
    """
    current = await catalogue.get()
    names = [*current.by_name.items(), *current.by_alias.items()]
    return sorted(
        (
            (name, model)
            for name, model in names
            if key.allows_model(name, model.name) and not model.is_retired()
        ),
        key=lambda entry: entry[0],
    )
