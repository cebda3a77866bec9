"""An admin for rows only the gateway writes: usage, the audit log, alerts sent."""


class ReadOnlyAdmin:
    """A ModelAdmin mixin (listed first among the bases): rows are listed and read, never
    added, changed or deleted from the admin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
