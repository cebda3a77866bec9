"""The audit log: who changed which key, team, limit, provider or model, when, how, from where.

Stored in Django's own LogEntry (django_admin_log), which the admin already writes for every
add, change and delete: its change_message (JSON) keeps Django's sub-messages, which the
object history pages read, and gains two of its own that Django's reader passes over:

    [{"changed": {"fields": ["Rate limit"]}},                 Django's own
     {"values": [{"field": "rate_limit", "old": "100/h", "new": "5/m"}]},
     {"source": {"via": "admin", "address": "203.0.113.7"}}]  or {"via": "cli", "os_user": ...}
                                                              or {"via": "sso", "address": ...}

The admins of apikeys/admin.py and completions/admin.py write it through AuditedAdmin; the
management commands that change those models through record_cli(); single sign-on
(gateway/sso.py) logs the flags and teams a sign-in changed, as the user signing in. Values
are what the database holds, shown as text, except secrets: digests never appear, not even
in part (the field is named, its values are not). A provider stores no credential, only the
name of the environment variable that holds one, and that name is logged like any other
value.

AuditLogAdmin lists the entries, read-only, with filters and a CSV export, for superusers
and users given the permission admin.view_logentry.
"""

import csv
import datetime
import decimal
import functools
import getpass
import json
import os

from django.contrib import admin
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html_join

from apikeys.reports import spreadsheet_text
from gateway.addresses import client_address
from gateway.readonly_admin import ReadOnlyAdmin

# The account CLI changes are logged as (LogEntry.user cannot be null); inactive and with no
# usable password, so nobody can log in as it. The OS user is in each entry's source.
CLI_USERNAME = "cli"
# Fields whose values are never logged: digests of secrets (counter_id is a digest's start).
SECRET_FIELDS = {"digest", "previous_digest", "counter_id"}
# Fields the gateway itself moves on requests, not changes anyone made.
UNAUDITED_FIELDS = {"last_used_at"}
# A value longer than this, in characters, is cut: a model's JSON Schema runs to 300 kB.
MAX_VALUE_LENGTH = 200
ARROW = "→"
CSV_HEADER = [
    "time",
    "user",
    "action",
    "model",
    "object_id",
    "object",
    "field",
    "old",
    "new",
    "via",
    "from",
]


def is_secret(field_name):
    return (
        field_name in SECRET_FIELDS
        or "digest" in field_name
        or "secret" in field_name
        or "password" in field_name
    )


def snapshot(obj):
    """Return {field name: value as logged} of an object's fields, secrets left out."""
    values = {}
    for field in obj._meta.concrete_fields:
        if field.primary_key or field.name in UNAUDITED_FIELDS or is_secret(field.name):
            continue
        if field.is_relation:
            related_id = getattr(obj, field.attname)
            values[field.name] = None if related_id is None else str(getattr(obj, field.name))
        elif isinstance(field, models.DecimalField) and getattr(obj, field.name) is not None:
            # As the database holds it: 25 typed is 25.00 stored, and not a change.
            values[field.name] = (
                f"{decimal.Decimal(getattr(obj, field.name)):.{field.decimal_places}f}"
            )
        else:
            values[field.name] = _loggable(getattr(obj, field.name))
    if obj.pk is not None:
        for field in obj._meta.many_to_many:
            values[field.name] = sorted(str(other) for other in getattr(obj, field.name).all())
    return values


def _loggable(value):
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, list | dict):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False)
    text = str(value)
    if len(text) > MAX_VALUE_LENGTH:
        return f"{text[:MAX_VALUE_LENGTH]}… ({len(text):,} characters)"
    return text


def differences(before, after):
    """Return [{field, old, new}] for each field whose value differs between two snapshots."""
    return [
        {"field": name, "old": before.get(name), "new": after.get(name)}
        for name in dict.fromkeys([*before, *after])
        if before.get(name) != after.get(name)
    ]


def admin_source(request):
    return {"via": "admin", "address": client_address(request.META)}


def sso_source(request):
    """The source of a change single sign-on made at sign-in (gateway/sso.py), from the
    groups the provider sent; the entry's user is the user signing in."""
    return {"via": "sso", "address": client_address(request.META)}


def cli_source():
    return {"via": "cli", "os_user": _os_user()}


def _os_user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # A container's uid may have no name in /etc/passwd.
        return f"uid {os.getuid()}"


def cli_user():
    """Return the account CLI changes are logged as, creating it on first use."""
    user, created = get_user_model().objects.get_or_create(
        username=CLI_USERNAME, defaults={"is_active": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def message(values, source, django_message=()):
    """Return a LogEntry change_message: Django's sub-messages, then the values and source."""
    return [*django_message, {"values": values}, {"source": source}]


def record(user, obj, action, values, source, django_message=()):
    """Write one LogEntry of an action on obj (ADDITION, CHANGE or DELETION)."""
    return LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[obj],
        action_flag=action,
        change_message=message(values, source, django_message),
        single_object=True,
    )


def record_change(user, obj, action, before, source, after=None):
    """Log an action on obj by user, given its snapshot from before (None for an addition)
    and, for values snapshot() does not read, from after.

    For a deletion, call before deleting (obj.pk is needed). Nothing is logged for a change
    that changed nothing.
    """
    if action == DELETION:
        values = differences(before or snapshot(obj), {})
    else:
        values = differences(before or {}, after or snapshot(obj))
    if action == CHANGE and not values:
        return None
    django_message = []
    if action == ADDITION:
        django_message = [{"added": {}}]
    elif action == CHANGE:
        fields = [_label(obj, change["field"]) for change in values]
        django_message = [{"changed": {"fields": fields}}]
    return record(user, obj, action, values, source, django_message)


def record_cli(obj, action, before=None):
    """Log a change a management command made to obj (see record_change)."""
    return record_change(cli_user(), obj, action, before, cli_source())


def _label(obj, field_name):
    field = obj._meta.get_field(field_name)
    # A reverse relation (a user's teams) has no verbose name of its own.
    return str(getattr(field, "verbose_name", field_name)).capitalize()


class AuditedAdmin:
    """A ModelAdmin mixin that logs each field's old and new value and the client address.

    Adds, edits and deletions go through the admin's own log methods; actions on selected
    objects (revoke, enable ...) are wrapped, and each object they changed gets an entry.
    """

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            # Read before the form writes into the same instance.
            obj._audit_before = snapshot(obj)
        return obj

    def construct_change_message(self, request, form, formsets, add=False):
        django_message = super().construct_change_message(request, form, formsets, add)
        before = {} if add else getattr(form.instance, "_audit_before", {})
        values = differences(before, snapshot(form.instance))
        return message(values, admin_source(request), django_message)

    def log_deletions(self, request, queryset):
        source = admin_source(request)
        return [
            record(request.user, obj, DELETION, differences(snapshot(obj), {}), source)
            for obj in queryset
        ]

    def get_actions(self, request):
        return {
            name: (self._audited(func), action_name, description)
            for name, (func, action_name, description) in super().get_actions(request).items()
        }

    def _audited(self, action):
        @functools.wraps(action)
        def run(modeladmin, request, queryset):
            before = {obj.pk: snapshot(obj) for obj in queryset}
            response = action(modeladmin, request, queryset)
            source = admin_source(request)
            # A deleted object is not found again: log_deletions logged it before it went.
            for obj in self.model._default_manager.filter(pk__in=list(before)):
                record_change(request.user, obj, CHANGE, before[obj.pk], source)
            return response

        return run


def entry_parts(entry):
    """Return (values, source) of a LogEntry; empty for entries written before the audit log."""
    try:
        parts = json.loads(entry.change_message or "[]")
    except json.JSONDecodeError:
        parts = []
    values, source = [], {}
    for part in parts if isinstance(parts, list) else []:
        if isinstance(part, dict):
            values = part.get("values", values)
            source = part.get("source", source)
    return values, source


def describe_change(change):
    return f"{change['field']}: {_shown(change['old'])} {ARROW} {_shown(change['new'])}"


def _shown(value):
    return "—" if value is None else json.dumps(value, ensure_ascii=False)


def describe_source(source):
    if source.get("via") == "cli":
        return f"cli ({source.get('os_user', '?')})"
    if source.get("via") in ("admin", "sso"):
        return f"{source['via']} ({source.get('address', '?')})"
    return ""


class ActionFilter(admin.SimpleListFilter):
    """Django's action flags by name; the flag's own filter would show their numbers."""

    title = "action"
    parameter_name = "action"
    flags = {"added": ADDITION, "changed": CHANGE, "deleted": DELETION}

    def lookups(self, request, model_admin):
        return [(name, name) for name in self.flags]

    def queryset(self, request, queryset):
        if self.value() in self.flags:
            return queryset.filter(action_flag=self.flags[self.value()])
        return queryset


@admin.register(LogEntry)
class AuditLogAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """The audit log, read-only: no entry is added, changed or deleted from the admin."""

    change_list_template = "admin/apikeys/auditlog/change_list.html"
    list_display = ["action_time", "user", "action", "content_type", "object_repr", "changes"]
    list_display_links = None
    list_filter = [
        ("user", admin.RelatedOnlyFieldListFilter),
        ("content_type", admin.RelatedOnlyFieldListFilter),
        ActionFilter,
        "action_time",
    ]
    date_hierarchy = "action_time"
    search_fields = ["object_repr"]
    list_select_related = ["user", "content_type"]
    list_per_page = 100

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("csv/", view(self.csv_view), name="admin_logentry_csv"),
            *super().get_urls(),
        ]

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("admin.view_logentry")

    def get_actions(self, request):
        # delete_selected would be offered to no one, but an empty action bar is noise.
        return {}

    @admin.display(description="action", ordering="action_flag")
    def action(self, entry):
        return {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}.get(entry.action_flag)

    @admin.display(description="what changed, from where")
    def changes(self, entry):
        values, source = entry_parts(entry)
        lines = [describe_change(change) for change in values]
        lines.append(describe_source(source) or entry.get_change_message())
        return format_html_join("", "<div>{}</div>", ((line,) for line in lines if line))

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "csv_url": reverse("admin:admin_logentry_csv", current_app=self.admin_site.name)
            + ("?" + request.GET.urlencode() if request.GET else ""),
        }
        return super().changelist_view(request, extra_context)

    def csv_view(self, request):
        """Export the entries the list shows, with the same filters, one change per row."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        entries = changelist.get_queryset(request)
        stamp = timezone.now().strftime("%Y%m%d-%H%M")
        response = HttpResponse(
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'},
        )
        writer = csv.writer(response)
        writer.writerow(CSV_HEADER)
        for entry in entries.iterator():
            values, source = entry_parts(entry)
            where = source.get("address") or source.get("os_user") or ""
            head = [
                entry.action_time.isoformat(),
                spreadsheet_text(entry.user.get_username()),
                self.action(entry),
                entry.content_type.model if entry.content_type else "",
                spreadsheet_text(entry.object_id or ""),
                spreadsheet_text(entry.object_repr),
            ]
            tail = [source.get("via", ""), spreadsheet_text(where)]
            for change in values or [{"field": "", "old": None, "new": None}]:
                writer.writerow(
                    [
                        *head,
                        change["field"],
                        spreadsheet_text(_csv_value(change["old"])),
                        spreadsheet_text(_csv_value(change["new"])),
                        *tail,
                    ]
                )
        return response


def _csv_value(value):
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
