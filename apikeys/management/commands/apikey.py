"""Create, list, rotate and revoke API keys from the shell.

    manage.py apikey create --name ci [--team red] [--permissions read] [--rate-limit 100/h]
                            [--tokens-per-minute 2000] [--tokens-per-day 100000]
                            [--monthly-budget 25] [--models m1,m2] [--expires 2027-01-01]
                            [--rotate-every-days 90]
    manage.py apikey list
    manage.py apikey rotate --name ci [--grace 24h]
    manage.py apikey revoke ci

`create` and `rotate` print the new secret alone on the last line of stdout, so scripts can
take it with `tail -1`; warnings go to stderr to keep that line last.

Every change is written to the audit log (apikeys/audit.py) as made by the `cli` account,
with the OS user who ran the command.
"""

import argparse
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation

from django.contrib.admin.models import ADDITION, CHANGE
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apikeys.audit import record_cli, snapshot
from apikeys.models import ApiKey, Team, parse_model_names, refused_when, validate_rate
from completions.models import unknown_model_names
from gateway.durations import describe_duration, parse_duration

# The option each ApiKey field is set from, to name it in error messages.
FIELD_OPTIONS = {
    "name": "--name",
    "team": "--team",
    "permissions": "--permissions",
    "rate_limit": "--rate-limit",
    "tokens_per_minute": "--tokens-per-minute",
    "tokens_per_day": "--tokens-per-day",
    "daily_budget": "--daily-budget",
    "weekly_budget": "--weekly-budget",
    "monthly_budget": "--monthly-budget",
    "lifetime_budget": "--lifetime-budget",
    "allowed_models": "--models",
    "expires_at": "--expires",
    "rotate_every_days": "--rotate-every-days",
}
DEFAULT_GRACE = "24h"
TIME_FORMAT = "%Y-%m-%d %H:%M UTC"


def _rate(value):
    try:
        validate_rate(value)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(" ".join(exc.messages)) from None
    return value


def _token_count(value):
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number of tokens.") from None
    if count < 1:
        raise argparse.ArgumentTypeError("allow at least 1 token; leave it out for no limit.")
    return count


def _usd(value):
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"'{value}' is not an amount in USD, like 25.") from None
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError(f"'{value}' is not an amount in USD, like 25.")
    return amount


def _grace(value):
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _days(value):
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number of days.") from None
    if days < 1:
        raise argparse.ArgumentTypeError("rotate at least every 1 day; leave it out for none.")
    return days


def _model_list(value):
    names = parse_model_names(value)
    if not names:
        # An empty list would mean every model, the opposite of what restricting asks for.
        raise argparse.ArgumentTypeError("name at least one model, for example m1,m2.")
    return names


def _moment(value):
    """Parse a date (midnight UTC) or an ISO datetime (UTC unless it carries an offset)."""
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{value}' is neither a date (2027-01-01) nor an ISO datetime "
            "(2027-01-01T12:00:00+00:00)."
        ) from None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment


def _when(moment):
    return moment.astimezone(UTC).strftime(TIME_FORMAT) if moment else "never"


def _table(header, rows):
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


class Command(BaseCommand):
    help = "Create, list or revoke API keys. Secrets are shown once, when a key is created."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        create = actions.add_parser(
            "create",
            help="Create a key and print its secret alone on the last line.",
            description="Create a key and print its secret alone on the last line of stdout.",
        )
        create.add_argument("--name", required=True, help="A unique name for the key.")
        create.add_argument(
            "--team",
            metavar="TEAM",
            help="The team that owns the key (`manage.py team list`); its limits cap the key's.",
        )
        create.add_argument(
            "--permissions",
            choices=[ApiKey.READ, ApiKey.READ_WRITE],
            default=ApiKey.READ_WRITE,
            help="read: list and read models; read-write: everything (the default).",
        )
        create.add_argument(
            "--rate-limit",
            type=_rate,
            metavar="N/UNIT",
            help="Requests allowed per s, m, h or d, like 10/m (default "
            f"{ApiKey._meta.get_field('rate_limit').default}).",
        )
        create.add_argument(
            "--tokens-per-minute",
            type=_token_count,
            metavar="N",
            help="Prompt and completion tokens allowed per minute; default no limit.",
        )
        create.add_argument(
            "--tokens-per-day",
            type=_token_count,
            metavar="N",
            help="Prompt and completion tokens allowed per day (LIMITS_TIME_ZONE); default no "
            "limit.",
        )
        for option, period in [
            ("--daily-budget", "per day"),
            ("--weekly-budget", "per week, from Monday"),
            ("--monthly-budget", "per calendar month"),
            ("--lifetime-budget", "in all (prepaid use)"),
        ]:
            create.add_argument(
                option,
                type=_usd,
                metavar="USD",
                help=f"Spend allowed {period} (LIMITS_TIME_ZONE) in USD, like 25; default no "
                "limit.",
            )
        create.add_argument(
            "--models",
            type=_model_list,
            metavar="M1,M2",
            help="Comma-separated model names or aliases the key may use; default every model.",
        )
        create.add_argument(
            "--expires",
            type=_moment,
            metavar="WHEN",
            help="A date (expires at midnight UTC) or an ISO datetime (UTC if no offset).",
        )
        create.add_argument(
            "--rotate-every-days",
            type=_days,
            metavar="DAYS",
            help="Rotation policy: list the key as due for rotation this many days after "
            "it was created or last rotated; default none.",
        )

        actions.add_parser(
            "list", help="Show every key, never its secret, and those due for rotation."
        )

        rotate = actions.add_parser(
            "rotate",
            help="Give a key a new secret, printed alone on the last line.",
            description="Give a key a new secret and print it alone on the last line of "
            "stdout. The key keeps its name, limits, team and usage; its current secret "
            "keeps working for the grace period, then is refused as rotated.",
        )
        rotate.add_argument("--name", required=True, help="The key's name.")
        rotate.add_argument(
            "--grace",
            type=_grace,
            default=_grace(DEFAULT_GRACE),
            metavar="DURATION",
            help="How long the current secret keeps working: 30m, 24h, 7d, or 0 to refuse "
            f"it at once (default {DEFAULT_GRACE}). Only one previous secret is kept: one "
            "replaced by an earlier rotation is refused at once.",
        )

        revoke = actions.add_parser("revoke", help="Revoke a key for good.")
        revoke.add_argument("name", help="The key's name.")

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    def _create(self, *, name, team, permissions, rate_limit, models, expires, **options):
        if ApiKey.objects.filter(name=name).exists():
            raise CommandError(f"--name: a key named '{name}' already exists.")
        if team is not None:
            found = Team.objects.filter(name=team).first()
            if found is None:
                raise CommandError(f"--team: no team is named '{team}'; see `manage.py team list`.")
            team = found
        if expires is not None and expires <= timezone.now():
            raise CommandError(f"--expires: {_when(expires)} is already past.")
        fields = {
            "team": team,
            "permissions": permissions,
            "allowed_models": models or [],
            "expires_at": expires,
            "tokens_per_minute": options["tokens_per_minute"],
            "tokens_per_day": options["tokens_per_day"],
            **{field: options[field] for field in ApiKey.BUDGET_FIELDS.values()},
            "rotate_every_days": options["rotate_every_days"],
        }
        if rate_limit is not None:
            fields["rate_limit"] = rate_limit
        try:
            key, secret = ApiKey.objects.create_key(name=name, **fields)
        except ValidationError as exc:
            raise CommandError(_describe(exc)) from None
        record_cli(key, ADDITION)

        for unknown in unknown_model_names(key.allowed_models):
            # A key may be made before its models are synced, so this only warns.
            self.stderr.write(f"Warning: no model or alias is named '{unknown}' yet.")
        self.stdout.write(
            f"Created key '{key.name}' ({key.prefix}…)"
            + (f" in team {key.team}" if key.team else "")
            + f": {key.permissions}, "
            f"{key.describe_limits()}, "
            f"models: {', '.join(key.allowed_models) or 'all'}, expires: {_when(key.expires_at)}."
        )
        self.stdout.write("The secret is shown only now; store it safely:")
        self.stdout.write(secret)

    def _list(self, **options):
        keys = list(ApiKey.objects.select_related("team"))
        if not keys:
            self.stdout.write("No API keys.")
            return
        header = [
            "NAME",
            "PREFIX",
            "PERMISSIONS",
            "STATE",
            "LIMITS",
            "MODELS",
            "EXPIRES",
            "LAST USED",
            "TEAM",
        ]
        rows = [
            [
                key.name,
                key.prefix,
                key.permissions,
                key.state,
                _compact_limits(key),
                ",".join(key.allowed_models) or "all",
                _when(key.expires_at),
                _when(key.last_used_at),
                key.team.name if key.team else "-",
            ]
            for key in keys
        ]
        for line in _table(header, rows):
            self.stdout.write(line)
        due = [key for key in keys if key.rotation_due]
        if due:
            self.stdout.write("")
            self.stdout.write("Due for rotation (manage.py apikey rotate --name NAME):")
            for key in due:
                self.stdout.write(
                    f"  {key.name}: every {key.rotate_every_days} days, due since "
                    f"{_when(key.rotation_due_at)}"
                )

    def _rotate(self, *, name, grace, **options):
        key = ApiKey.objects.filter(name=name).first()
        if key is None:
            raise CommandError(f"--name: no key is named '{name}'; see `manage.py apikey list`.")
        if key.revoked_at is not None:
            raise CommandError(f"--name: key '{name}' is revoked; revoked keys are not rotated.")
        before = snapshot(key)
        replaced_in_grace = key.previous_secret_works
        secret = key.rotate(grace)
        record_cli(key, CHANGE, before)

        if replaced_in_grace:
            # Only one previous secret is kept: rotating twice inside a grace period ends
            # the first secret's early. Said on stderr so that the secret stays last.
            self.stderr.write(
                "Warning: the secret replaced by the previous rotation was still in its "
                "grace period; it is refused from now on."
            )
        if grace:
            previous = (
                f"the previous secret keeps working for {describe_duration(grace)}, until "
                f"{_when(key.previous_valid_until)}"
            )
        else:
            previous = f"requests with the previous secret {refused_when()}"
        self.stdout.write(f"Rotated key '{key.name}' (now {key.prefix}…): {previous}.")
        self.stdout.write("The new secret is shown only now; store it safely:")
        self.stdout.write(secret)

    def _revoke(self, *, name, **options):
        key = ApiKey.objects.filter(name=name).first()
        if key is None:
            raise CommandError(f"No key is named '{name}'; see `manage.py apikey list`.")
        if key.revoked_at is not None:
            self.stdout.write(f"Key '{name}' was already revoked at {_when(key.revoked_at)}.")
            return
        before = snapshot(key)
        key.revoke()
        record_cli(key, CHANGE, before)
        self.stdout.write(f"Revoked key '{name}'; requests with it {refused_when()}.")


def _compact_limits(key):
    """Describe a key's limits in one word for the list: 5/m,2000tok/m,25.00USD/month."""
    return key.describe_limits().replace(" tokens", "tok").replace(" USD", "USD").replace(", ", ",")


def _describe(error):
    """Return a ValidationError from the model as one message naming the options at fault."""
    if not hasattr(error, "message_dict"):
        return " ".join(error.messages)
    return " ".join(
        f"{FIELD_OPTIONS.get(field, field)}: {' '.join(messages)}"
        for field, messages in error.message_dict.items()
    )
