"""Find the model a request names, by its id or one of its aliases."""

from apikeys.permissions import require_model_access
from completions.models import Model
from gateway.errors import ModelNotFound


async def resolve_model(name, key):
    """Return the enabled Model called `name` (or aliased so) that this key may use."""
    model = await Model.objects.available().filter(name=name).afirst()
    if model is None:
        model = await Model.objects.available().filter(aliases__name=name).afirst()
    if model is None:
        raise ModelNotFound(name)
    require_model_access(key, model, name)
    return model


async def list_models(key):
    """Return (id, Model) pairs this key may see: every model, then every alias."""
    entries = []
    async for model in Model.objects.available().prefetch_related("aliases"):
        names = [model.name] + [alias.name for alias in model.aliases.all()]
        entries.extend((name, model) for name in names if key.allows_model(name, model.name))
    return sorted(entries, key=lambda entry: entry[0])
