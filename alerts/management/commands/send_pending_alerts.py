from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand

from alerts.delivery import MAX_ATTEMPTS, PENDING_SECONDS, alert_sender
from alerts.models import BudgetAlert


class Command(BaseCommand):
    help = (
        "Send the budget alerts a gateway process recorded but did not get to send (it "
        "stopped first): those pending for longer than --older-than seconds, each by one "
        "run at a time. Those whose budget period is over are not sent, but marked "
        "expired."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=int,
            default=PENDING_SECONDS,
            metavar="SECONDS",
            help=f"leave alerts recorded or claimed more recently (default {PENDING_SECONDS})",
        )

    def handle(self, *args, older_than, **options):
        sweep = async_to_sync(alert_sender.send_pending)(older_than)
        count = len(sweep.tried)
        self.stdout.write(f"Sent {count} pending budget alert{'' if count == 1 else 's'}")
        if sweep.expired:
            self.stdout.write(
                f"{sweep.expired} pending budget alert was not sent: its budget period had "
                "ended (see the admin's Budget alerts, status: period over, not sent)"
                if sweep.expired == 1
                else f"{sweep.expired} pending budget alerts were not sent: their budget "
                "periods had ended (see the admin's Budget alerts, status: period over, "
                "not sent)"
            )
        failed = [
            alert
            for alert in sweep.tried
            if BudgetAlert.FAILED in (alert.email_status, alert.webhook_status)
        ]
        if failed:
            self.stderr.write(
                f"{len(failed)} of them failed by e-mail or webhook: see the reasons in the "
                "admin's Budget alerts"
            )
        if sweep.given_up:
            self.stderr.write(
                f"{sweep.given_up} budget alerts are still pending after {MAX_ATTEMPTS} "
                "attempts and are left as they are: see the admin's Budget alerts"
            )
