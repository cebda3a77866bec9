from django.core.management.base import BaseCommand
from django.utils import timezone

from alerts.digest import send_digests


class Command(BaseCommand):
    help = (
        "E-mail each team's contacts its spend in the previous day (--daily) or week "
        "(--weekly), by key and model, against its budgets."
    )

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--daily", action="store_const", const="day", dest="period", help="yesterday"
        )
        which.add_argument(
            "--weekly",
            action="store_const",
            const="week",
            dest="period",
            help="last week, Monday to Sunday",
        )

    def handle(self, *args, period, **options):
        teams = send_digests(period, timezone.now())
        word = "daily" if period == "day" else "weekly"
        names = ", ".join(team.name for team in teams)
        self.stdout.write(
            f"Sent the {word} digest to {len(teams)} team{'' if len(teams) == 1 else 's'}"
            + (f": {names}" if names else "")
        )
