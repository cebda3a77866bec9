from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from alerts.digest import send_digests


def _teams(teams):
    return f"{len(teams)} team{'' if len(teams) == 1 else 's'}"


class Command(BaseCommand):
    help = (
        "E-mail each team's contacts its spend in the previous day (--daily) or week "
        "(--weekly), by key and model, against its budgets; once per team and period."
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
        parser.add_argument(
            "--force",
            action="store_true",
            help="send again to teams already sent this period's digest",
        )

    def handle(self, *args, period, force, **options):
        outcome = send_digests(period, timezone.now(), force=force)
        word = "daily" if period == "day" else "weekly"
        names = ", ".join(team.name for team in outcome.sent)
        self.stdout.write(
            f"Sent the {word} digest to {_teams(outcome.sent)}" + (f": {names}" if names else "")
        )
        if outcome.skipped:
            names = ", ".join(team.name for team in outcome.skipped)
            self.stdout.write(
                f"Already sent to {_teams(outcome.skipped)}: {names} (--force sends it again)"
            )
        if outcome.failed:
            # A failed run for the service manager and cron to report; the next run sends
            # these, the digests sent above are not sent again.
            failures = "; ".join(
                f"{team.name}: {type(e).__name__}: {e}" for team, e in outcome.failed
            )
            raise CommandError(f"The {word} digest was not sent to {failures}")
