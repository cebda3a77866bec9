from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save


class CompletionsConfig(AppConfig):
    name = "completions"
    verbose_name = "Models and providers"

    def ready(self):
        from completions import checks  # noqa: F401 - registers the system checks
        from completions.models import (
            Model,
            ModelAlias,
            ModelFallback,
            Provider,
            ensure_default_providers,
        )
        from completions.registry import catalogue

        post_migrate.connect(ensure_default_providers, sender=self)
        for model in (Model, ModelAlias, ModelFallback, Provider):
            post_save.connect(catalogue.clear, sender=model, dispatch_uid=f"catalogue-{model}")
            post_delete.connect(catalogue.clear, sender=model, dispatch_uid=f"catalogue-d-{model}")
