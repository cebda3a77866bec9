from django.contrib import admin

from alerts.models import BudgetAlert, DigestDelivery
from gateway.readonly_admin import ReadOnlyAdmin


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """List every budget alert and how it was sent; alerts are made by the gateway only."""

    list_display = [
        "created_at",
        "holder_name",
        "scope",
        "period",
        "period_start",
        "threshold_percent",
        "spent_usd",
        "budget",
        "email_status",
        "webhook_status",
        "webhook_attempts",
        "attempts",
    ]
    list_filter = ["scope", "period", "threshold", "email_status", "webhook_status", "team"]
    search_fields = ["holder_name", "email_recipients"]
    date_hierarchy = "created_at"

    @admin.display(description="threshold", ordering="threshold")
    def threshold_percent(self, alert):
        return f"{alert.threshold}%"

    @admin.display(description="spent (USD)", ordering="spent")
    def spent_usd(self, alert):
        return f"{alert.spent:.2f}"


@admin.register(DigestDelivery)
class DigestDeliveryAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """List the usage digests sent, one per team and period; made by usage_digest only."""

    list_display = ["period_start", "period", "team", "sent_at", "recipients", "attempts"]
    list_filter = ["period", "team"]
    search_fields = ["team__name", "recipients"]
    date_hierarchy = "period_start"
    list_select_related = ["team"]
