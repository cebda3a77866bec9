"""Import providers' model catalogues into Model rows.

For each provider the catalogue (and, for the models the gateway serves, their schemas) is
fetched first, async through the provider class, and then written with the sync ORM in one
transaction, outside any event loop.

What a sync changes:
- a name new to the gateway becomes a Model of this provider, with the task as given
  (capabilities follow from it: "Text Generation" chats, "Text Embeddings" embeds, and the
  media tasks serve their endpoints, see Model.capabilities);
- a model of this provider gets the catalogue's task, description, prices (USD per million
  input, output and cached input tokens; a speech recognition model's price per audio
  minute as a unit price per second), context window, properties and, for the tasks the
  gateway serves (SCHEMA_TASKS), the JSON Schemas of its request and answer; an empty
  value in the catalogue means "not known" and leaves the stored one, so a catalogue
  without descriptions or prices does not wipe those written in the admin, and a schema
  that could not be fetched keeps the stored one;
- fields an operator may have set are changed only when the catalogue's own word on them
  changes: "takes images" is turned on when the catalogue newly says `vision` (never off),
  and a deprecation date is cleared only if the catalogue had given it;
- `enabled` is touched only to disable a model whose deprecation date has passed (a new
  one is created disabled), since the gateway no longer serves it (registry.py); a model
  hidden in the admin stays hidden;
- nothing is deleted: a model gone from the catalogue is left as it is and reported as
  missing, since it may be a fault-test model, a private fine-tune, or a catalogue blip,
  and deleting it would also delete its aliases;
- a name that already belongs to another provider's model, or is an alias, is skipped
  with a warning, since taking it would silently reroute requests for it.
"""

import asyncio
from decimal import Decimal

from django.contrib.admin.models import ADDITION, CHANGE
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from apikeys.audit import record_cli, snapshot
from completions.models import Model, ModelAlias, Provider
from completions.providers import get_provider
from completions.providers.client import close_client
from gateway.errors import GatewayError

NAME_LENGTH = Model._meta.get_field("name").max_length
TASK_LENGTH = Model._meta.get_field("task").max_length
# The smallest price step a Model stores, in USD per million tokens.
PRICE_STEP = Decimal(10) ** -Model._meta.get_field("input_price").decimal_places
PRICE_FIELDS = ["input_price", "output_price", "cached_input_price"]
# The smallest unit price step, in USD per unit (an audio second, an image, ...).
UNIT_PRICE_STEP = Decimal(10) ** -Model._meta.get_field("unit_price").decimal_places
# Schema requests in flight at once: a catalogue of ~100 models takes seconds, without a
# burst of a hundred requests on the account's API rate limit.
SCHEMA_CONCURRENCY = 4
# The tasks whose requests the gateway builds, and so whose schemas it reads; an empty
# task makes a new model a text generation one.
SCHEMA_TASKS = {
    "",
    Model.TEXT_GENERATION,
    Model.TEXT_EMBEDDINGS,
    # The media endpoints (completions/media_views.py) read them too: which image sizes,
    # which audio form, which voices a model takes.
    Model.TEXT_TO_IMAGE,
    Model.SPEECH_RECOGNITION,
    Model.TEXT_TO_SPEECH,
    Model.TEXT_CLASSIFICATION,
}


async def _fetch(row, with_schemas):
    """Return (catalogue, schemas by name, schema failures by name) of one provider."""
    provider = get_provider(row)
    try:
        catalogue = await provider.list_models()
        schemas, failures = {}, {}
        if with_schemas:
            limit = asyncio.Semaphore(SCHEMA_CONCURRENCY)

            async def fetch(name):
                async with limit:
                    try:
                        schema = await provider.model_schema(name)
                    except GatewayError as exc:
                        failures[name] = exc.message
                        return
                if schema is not None:
                    schemas[name] = schema

            names = [
                entry["name"]
                for entry in catalogue
                if _valid_name(entry) and entry.get("task") in SCHEMA_TASKS
            ]
            await asyncio.gather(*(fetch(name) for name in names))
        return catalogue, schemas, failures
    finally:
        # The shared client belongs to this asyncio.run() loop, which ends right after.
        await close_client()


def _valid_name(entry):
    name = entry.get("name")
    return isinstance(name, str) and 0 < len(name) <= NAME_LENGTH


def _price(value):
    # Rounded as the database will store it, so that an unchanged price compares equal.
    return None if value is None else Decimal(value).quantize(PRICE_STEP)


def _says(properties, property_id):
    """Whether a catalogue's properties say "true" of a flag (vision, function_calling)."""
    return str((properties or {}).get(property_id, "")).lower() == "true"


class Command(BaseCommand):
    help = (
        "Import the model catalogue of every active provider (or of one): add new models, "
        "update task, description, prices, properties and schemas of known ones, disable "
        "those past their deprecation date, report those gone. Deletes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--provider",
            metavar="NAME",
            help="Sync only this provider, even if it is not active.",
        )
        parser.add_argument(
            "--no-schemas",
            action="store_false",
            dest="schemas",
            help="Do not fetch the models' request and answer schemas; stored ones are kept.",
        )

    def handle(self, *args, provider=None, schemas=True, **options):
        if provider:
            rows = list(Provider.objects.filter(name=provider))
            if not rows:
                raise CommandError(f"--provider: no provider is named '{provider}'.")
        else:
            rows = list(Provider.objects.filter(is_active=True))
            if not rows:
                self.stdout.write("No active providers to sync.")
                return

        failures = []
        for row in rows:
            try:
                catalogue, found, missed = asyncio.run(_fetch(row, schemas))
            except GatewayError as exc:
                # Messages of gateway errors are already stripped of the provider's secrets.
                failures.append(f"{row.name}: {exc.message}")
                self.stderr.write(f"{row.name}: could not fetch the catalogue: {exc.message}")
                continue
            # A schema that could not be fetched fails no sync: the model keeps the one it has.
            for name, message in sorted(missed.items()):
                self.stderr.write(
                    f"{row.name}: could not fetch the schema of '{name}', kept the stored "
                    f"one: {message}"
                )
            self._sync(row, catalogue, found)

        if failures:
            raise CommandError("Could not sync " + "; ".join(failures))

    def _sync(self, row, catalogue, schemas):
        entries = {}
        for entry in catalogue:
            if not _valid_name(entry):
                name = entry.get("name")
                self.stderr.write(f"{row.name}: skipped a catalogue entry with name {name!r}.")
                continue
            entries[entry["name"]] = entry

        today = timezone.now().date()
        created, updated, unchanged, skipped = [], [], [], []
        retired, retiring = [], []
        with transaction.atomic():
            known = {
                m.name: m for m in Model.objects.filter(name__in=entries).select_related("provider")
            }
            aliases = set(
                ModelAlias.objects.filter(name__in=entries).values_list("name", flat=True)
            )
            for name, entry in entries.items():
                model = known.get(name)
                if name in aliases:
                    skipped.append(f"'{name}': it is already an alias")
                    continue
                if model is not None and model.provider_id != row.pk:
                    skipped.append(f"'{name}': it already belongs to provider '{model.provider}'")
                    continue
                given = _given(entry, schemas.get(name), model)
                if model is None:
                    fields = {"task": Model.TEXT_GENERATION, **given}
                    model = Model(name=name, provider=row, **fields)
                    # A model the provider no longer serves is kept, for its history, but off.
                    model.enabled = not model.is_retired(today)
                    model.save()
                    record_cli(model, ADDITION)
                    created.append(name)
                    changed = ["enabled"] if not model.enabled else []
                else:
                    before = snapshot(model)
                    changed = [f for f, value in given.items() if getattr(model, f) != value]
                    for field in changed:
                        setattr(model, field, given[field])
                    if model.enabled and model.is_retired(today):
                        model.enabled = False
                        changed.append("enabled")
                    if changed:
                        model.save(update_fields=changed)
                        record_cli(model, CHANGE, before)
                        updated.append(name)
                    else:
                        unchanged.append(name)
                if "enabled" in changed:
                    retired.append(f"{name} (since {model.deprecation_date})")
                elif model.enabled and model.deprecation_date and not model.is_retired(today):
                    retiring.append(f"{name} (on {model.deprecation_date})")
            missing = list(
                Model.objects.filter(provider=row)
                .exclude(name__in=entries)
                .values_list("name", flat=True)
            )

        for reason in skipped:
            self.stderr.write(f"{row.name}: skipped {reason}.")
        self.stdout.write(
            f"{row.name}: {len(created)} created, {len(updated)} updated, "
            f"{len(unchanged)} unchanged, {len(missing)} missing, {len(skipped)} skipped"
        )
        for title, names in [
            ("past their deprecation date, disabled", retired),
            ("to be retired by the provider", retiring),
            ("missing from the catalogue, left as they are", missing),
        ]:
            if names:
                self.stdout.write(f"  {title}:")
                for name in names:
                    self.stdout.write(f"    {name}")


def _given(entry, schema, model):
    """Return {field: value} of what the catalogue entry says of a model (None: a new one).

    Only what the catalogue gives: a field it leaves empty is not changed.
    """
    given = {
        "task": (entry.get("task") or "")[:TASK_LENGTH],
        "description": entry.get("description") or "",
        **{field: _price(entry.get(field)) for field in PRICE_FIELDS},
        "context_window": entry.get("context_window"),
        "unit_price": (
            None
            if entry.get("unit_price") is None
            else Decimal(entry["unit_price"]).quantize(UNIT_PRICE_STEP)
        ),
    }
    # A price of 0 is a free model, given; None is no price.
    given = {field: value for field, value in given.items() if value not in ("", None)}
    stored = model.properties if model is not None else {}
    if "properties" in entry:
        # The catalogue's own record, which the admin shows but does not edit.
        given["properties"] = entry["properties"]
        if _says(entry["properties"], "vision") and not _says(stored, "vision"):
            given["accepts_images"] = True
    # A date the catalogue no longer gives is cleared only if it came from the catalogue:
    # one written in the admin for a model the catalogue never dated is kept.
    if "deprecation_date" in entry and (
        entry["deprecation_date"] is not None or "planned_deprecation_date" in stored
    ):
        given["deprecation_date"] = entry["deprecation_date"]
    if schema is not None:
        given["input_schema"] = schema["input"]
        given["output_schema"] = schema["output"]
    return given
