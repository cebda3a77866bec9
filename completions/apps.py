from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CompletionsConfig(AppConfig):
    name = "completions"
    verbose_name = "Models and providers"

    def ready(self):
        from completions.models import ensure_default_providers

        post_migrate.connect(ensure_default_providers, sender=self)
