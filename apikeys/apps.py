from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ApiKeysConfig(AppConfig):
    name = "apikeys"
    verbose_name = "API keys and usage"

    def ready(self):
        from apikeys.models import ApiKey, keys_by_digest

        post_save.connect(keys_by_digest.clear, sender=ApiKey, dispatch_uid="keys-saved")
        post_delete.connect(keys_by_digest.clear, sender=ApiKey, dispatch_uid="keys-deleted")
