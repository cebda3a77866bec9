"""Create and list teams from the shell.

    manage.py team create --name red [--member alice ...] [--tokens-per-minute 2000]
                          [--tokens-per-day 100000] [--daily-budget 10] [--weekly-budget 50]
                          [--monthly-budget 100] [--lifetime-budget 1000]
    manage.py team list

A team's keys share its limits (a request must fit the key's and the team's); its members
manage its keys in the admin. Keys join a team with `manage.py apikey create --team red`.
"""

from django.contrib.admin.models import ADDITION
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count

from apikeys.audit import record_cli
from apikeys.management.commands.apikey import _table, _token_count, _usd
from apikeys.models import Team

# The budget options, by the Team field each sets.
BUDGET_OPTIONS = {
    "daily_budget": ("--daily-budget", "per day"),
    "weekly_budget": ("--weekly-budget", "per week, from Monday"),
    "monthly_budget": ("--monthly-budget", "per calendar month"),
    "lifetime_budget": ("--lifetime-budget", "in all (prepaid use)"),
}


class Command(BaseCommand):
    help = "Create or list teams: keys that share limits and budgets, and their members."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        create = actions.add_parser("create", help="Create a team.")
        create.add_argument("--name", required=True, help="A unique name for the team.")
        create.add_argument(
            "--member",
            action="append",
            default=[],
            metavar="USERNAME",
            help="A user who may manage the team's keys in the admin; repeat for several.",
        )
        create.add_argument(
            "--tokens-per-minute",
            type=_token_count,
            metavar="N",
            help="Tokens the team's keys may use together per minute; default no limit.",
        )
        create.add_argument(
            "--tokens-per-day",
            type=_token_count,
            metavar="N",
            help="Tokens the team's keys may use together per day; default no limit.",
        )
        for field, (option, period) in BUDGET_OPTIONS.items():
            create.add_argument(
                option,
                dest=field,
                type=_usd,
                metavar="USD",
                help=f"Spend allowed {period} (LIMITS_TIME_ZONE) in USD; default no limit.",
            )

        actions.add_parser("list", help="Show every team with its limits, members and keys.")

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    def _create(self, *, name, member, **options):
        if Team.objects.filter(name=name).exists():
            raise CommandError(f"--name: a team named '{name}' already exists.")
        User = get_user_model()
        users = []
        for username in dict.fromkeys(member):
            user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
            if user is None:
                raise CommandError(f"--member: no user is named '{username}'.")
            users.append(user)
        limits = {
            field: options[field]
            for field in ["tokens_per_minute", "tokens_per_day", *BUDGET_OPTIONS]
        }
        team = Team(name=name, **limits)
        try:
            team.full_clean()
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        with transaction.atomic():
            team.save()
            team.members.set(users)
            record_cli(team, ADDITION)
        self.stdout.write(
            f"Created team '{team.name}': {team.describe_limits() or 'no limits'}; members: "
            f"{', '.join(user.get_username() for user in users) or 'none'}."
        )

    def _list(self, **options):
        teams = list(
            Team.objects.prefetch_related("members").annotate(n_keys=Count("keys", distinct=True))
        )
        if not teams:
            self.stdout.write("No teams.")
            return
        rows = [
            [
                team.name,
                _compact(team.describe_limits()) or "-",
                ",".join(sorted(user.get_username() for user in team.members.all())) or "-",
                str(team.n_keys),
            ]
            for team in teams
        ]
        for line in _table(["NAME", "LIMITS", "MEMBERS", "KEYS"], rows):
            self.stdout.write(line)


def _compact(limits):
    """Write limits as one word for the list: 2000tok/min,100.00USD/month."""
    return limits.replace(" tokens", "tok").replace(" USD", "USD").replace(", ", ",")
