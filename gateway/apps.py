from django.apps import AppConfig
from django.core.signals import request_started
from django.db import close_old_connections, reset_queries


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self):
        from gateway import checks  # noqa: F401 - registers the system checks

        # Under ASGI each request runs its sync code in a thread of its own, made for it:
        # at the start of a request that thread holds no connection to close and no query
        # to forget, and Django would hop to a thread only to find that out. The end of
        # the request (request_finished) still closes what the request opened.
        request_started.disconnect(close_old_connections)
        request_started.disconnect(reset_queries)
