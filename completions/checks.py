"""System checks of the providers in the database (run by migrate, and by check --database)."""

from django.core.checks import Tags, Warning, register
from django.db import DatabaseError


@register(Tags.database)
def check_provider_key_variables(app_configs, databases=None, **kwargs):
    """Warn of each provider that names a key variable outside the allow-list."""
    from completions.models import KEY_VARIABLES_REFUSED, Provider

    if not databases:
        # Django runs database checks only when asked to (migrate, check --database).
        return []
    warnings = []
    for database in databases:
        try:
            providers = list(Provider.objects.using(database).exclude(api_key_env=""))
        except DatabaseError:
            # Before the first migration there is no provider table to read.
            continue
        warnings += [
            Warning(
                f"Provider {provider.name} reads its API key from {provider.api_key_env}, "
                "which is not allowed: the gateway refuses to call it (502).",
                hint=f"{KEY_VARIABLES_REFUSED} Rename the variable, or list it in "
                "PROVIDER_KEY_VARIABLES.",
                obj=provider,
                id="completions.W001",
            )
            for provider in providers
            if not provider.key_variable_allowed()
        ]
    return warnings
