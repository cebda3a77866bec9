import secrets

from django.conf import settings
from django.contrib.admin.models import ADDITION
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from apikeys.audit import CLI_USERNAME, record_cli
from apikeys.models import ApiKey


class Command(BaseCommand):
    help = (
        "In development, on a database with no users yet, create an admin account and an "
        "API key, and print their secrets once."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        # The account the CLI's changes are logged as (apikeys/audit.py) is nobody's.
        people = User.objects.exclude(username=CLI_USERNAME)
        if settings.ENVIRONMENT != "development" or people.exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        key, secret = ApiKey.objects.create_key(name="development")
        record_cli(key, ADDITION)
        url = "http://127.0.0.1:8000"
        self.stdout.write(
            "\nFirst start: an admin account and an API key were created. They are shown "
            "only now.\n"
            f"  Admin:   {url}/admin/  user: admin  password: {password}\n"
            f"  API key: {secret}\n"
            f"  Try:     curl {url}/v1/chat/completions -H 'Authorization: Bearer {secret}' "
            "-H 'Content-Type: application/json' "
            '-d \'{"model": "echo", "messages": [{"role": "user", "content": '
            '"Hello!"}]}\'\n'
        )
