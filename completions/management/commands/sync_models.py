"""Import providers' model catalogues into Model rows.

For each provider the catalogue is fetched first (async, through the provider class) and
then written with the sync ORM in one transaction, outside any event loop.

What a sync changes:
- a name new to the gateway becomes a Model of this provider, with the task as given
  (capabilities follow from it: only "Text Generation" chats, "Text Embeddings" embeds);
- a model of this provider gets the catalogue's task, description and prices (USD per
  million input and output tokens, where the catalogue gives them); an empty value in
  the catalogue means "not known" and leaves the stored one, so a catalogue without
  descriptions or prices does not wipe those written in the admin;
- `enabled` is never touched, so a model hidden in the admin stays hidden;
- nothing is deleted: a model gone from the catalogue is left as it is and reported as
  missing, since it may be a fault-test model, a private fine-tune, or a catalogue blip,
  and deleting it would also delete its aliases;
- a name that already belongs to another provider's model, or is an alias, is skipped
  with a warning, since taking it would silently reroute requests for it.
"""

import asyncio
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from completions.models import Model, ModelAlias, Provider
from completions.providers import get_provider
from completions.providers.client import close_client
from gateway.errors import GatewayError

NAME_LENGTH = Model._meta.get_field("name").max_length
TASK_LENGTH = Model._meta.get_field("task").max_length
# The smallest price step a Model stores, in USD per million tokens.
PRICE_STEP = Decimal(10) ** -Model._meta.get_field("input_price").decimal_places


async def _fetch_catalogue(row):
    try:
        return await get_provider(row).list_models()
    finally:
        # The shared client belongs to this asyncio.run() loop, which ends right after.
        await close_client()


def _price(value):
    # Rounded as the database will store it, so that an unchanged price compares equal.
    return None if value is None else Decimal(value).quantize(PRICE_STEP)


class Command(BaseCommand):
    help = (
        "Import the model catalogue of every active provider (or of one): add new models, "
        "update task, description and prices of known ones, report those gone. "
        "Deletes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--provider",
            metavar="NAME",
            help="Sync only this provider, even if it is not active.",
        )

    def handle(self, *args, provider=None, **options):
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
                catalogue = asyncio.run(_fetch_catalogue(row))
            except GatewayError as exc:
                # Messages of gateway errors are already stripped of the provider's secrets.
                failures.append(f"{row.name}: {exc.message}")
                self.stderr.write(f"{row.name}: could not fetch the catalogue: {exc.message}")
                continue
            self._sync(row, catalogue)

        if failures:
            raise CommandError("Could not sync " + "; ".join(failures))

    def _sync(self, row, catalogue):
        entries = {}
        for entry in catalogue:
            name = entry.get("name")
            if not isinstance(name, str) or not name or len(name) > NAME_LENGTH:
                self.stderr.write(f"{row.name}: skipped a catalogue entry with name {name!r}.")
                continue
            entries[name] = entry

        created, updated, unchanged, skipped = [], [], [], []
        with transaction.atomic():
            known = {
                m.name: m for m in Model.objects.filter(name__in=entries).select_related("provider")
            }
            aliases = set(
                ModelAlias.objects.filter(name__in=entries).values_list("name", flat=True)
            )
            for name, entry in entries.items():
                # Only what the catalogue gives: a field it leaves empty is not changed.
                given = {
                    "task": (entry.get("task") or "")[:TASK_LENGTH],
                    "description": entry.get("description") or "",
                    "input_price": _price(entry.get("input_price")),
                    "output_price": _price(entry.get("output_price")),
                }
                # A price of 0 is a free model, given; None is no price.
                given = {field: value for field, value in given.items() if value not in ("", None)}
                model = known.get(name)
                if name in aliases:
                    skipped.append(f"'{name}': it is already an alias")
                elif model is None:
                    Model.objects.create(
                        name=name, provider=row, **{"task": Model.TEXT_GENERATION, **given}
                    )
                    created.append(name)
                elif model.provider_id != row.pk:
                    skipped.append(f"'{name}': it already belongs to provider '{model.provider}'")
                elif changed := [f for f, value in given.items() if getattr(model, f) != value]:
                    for field in changed:
                        setattr(model, field, given[field])
                    model.save(update_fields=changed)
                    updated.append(name)
                else:
                    unchanged.append(name)
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
        if missing:
            self.stdout.write("  missing from the catalogue, left as they are:")
            for name in missing:
                self.stdout.write(f"    {name}")
