"""Delete the stored responses of /v1/responses that are past their retention."""

from django.core.management.base import BaseCommand

from completions.models import StoredResponse


class Command(BaseCommand):
    help = "Delete stored responses (/v1/responses) older than RESPONSES_RETENTION_DAYS."

    def handle(self, *args, **options):
        count, _ = StoredResponse.objects.expired().delete()
        self.stdout.write(f"Deleted {count} stored responses.")
