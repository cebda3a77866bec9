from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ApiKeysConfig(AppConfig):
    name = "apikeys"
    verbose_name = "API keys and usage"

    def ready(self):
        from apikeys.models import ApiKey, Team, key_changed

        post_save.connect(key_changed, sender=ApiKey, dispatch_uid="keys-saved")
        post_delete.connect(key_changed, sender=ApiKey, dispatch_uid="keys-deleted")
        # Keys are kept with their team: a team's new limits reach them at once too.
        post_save.connect(key_changed, sender=Team, dispatch_uid="teams-saved")
