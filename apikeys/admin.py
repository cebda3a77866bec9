"""Admin for API keys, their usage records and the usage report.

A key's secret exists only in the response to the add form: `create_key` stores its digest,
and the page that shows the secret is rendered directly rather than after a redirect, so the
secret never passes through a URL, the session or the messages cookie.

The usage report (UsageReportAdmin) is a page of its own, listed in the admin index through
the UsageReport proxy model: totals, a chart and tables for a period, and a CSV export.

Teams: operators (Django's permissions) see every row; a staff user with no permissions on
a model who belongs to teams sees their teams' rows only (apikeys/membership.py), through
TeamScopedAdmin. Such a member manages their teams' keys within the team's limits and reads
their teams' usage and teams, nothing else.
"""

import csv
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_variables

from apikeys import membership, throttling
from apikeys.audit import AuditedAdmin, admin_source, record_change, snapshot
from apikeys.charts import Series, stacked_bar_chart
from apikeys.models import (
    RATE_PATTERN,
    ApiKey,
    Team,
    UsageRecord,
    UsageReport,
    parse_model_names,
    refused_when,
)
from apikeys.reports import PRESETS, SUM_FIELDS, Period, PeriodUsage, spreadsheet_text
from completions.models import Model as CatalogueModel
from completions.models import unknown_model_names
from gateway.durations import describe_duration, parse_duration
from gateway.readonly_admin import ReadOnlyAdmin

# The limits a key and its team both have; a member may not set a key's above its team's.
TEAM_LIMIT_FIELDS = [
    "tokens_per_minute",
    "tokens_per_day",
    "daily_budget",
    "weekly_budget",
    "monthly_budget",
    "lifetime_budget",
]
LIMIT_FIELDS = ["rate_limit", *TEAM_LIMIT_FIELDS]
# Seconds in each unit of a rate limit (N/s, N/m, N/h, N/d).
RATE_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Who hears of a budget running low (alerts/), on keys and teams alike.
ALERT_FIELDS = ["contact_emails", "alert_thresholds"]


def refers_to_digest(lookup):
    """Tell whether a changelist lookup such as `api_key__digest__startswith` reads a digest."""
    # Filtering on a digest by prefix would let anyone with view access probe it piece by
    # piece, the reason contrib.auth refuses lookups on passwords.
    return "digest" in lookup.split("__")


def _requests_per_second(rate):
    count, unit = RATE_PATTERN.match(rate).groups()
    return int(count) / RATE_UNIT_SECONDS[unit]


def _describe_limit(field, value):
    if field.startswith("tokens_"):
        return f"{value:,} tokens"
    return f"{value:.2f} USD"


class ModelNamesField(forms.Field):
    """Edit a list of model names as text, one per line or separated by commas."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def prepare_value(self, value):
        if isinstance(value, list):
            return "\n".join(value)
        return value

    def to_python(self, value):
        if isinstance(value, list):
            return value
        return parse_model_names(value)


class ApiKeyForm(forms.ModelForm):
    allowed_models = ModelNamesField(
        required=False,
        help_text="Model names or aliases this key may use, one per line or separated by "
        "commas; empty means every model.",
    )
    # True for a team member's form (ApiKeyAdmin.get_form): every limit within the team's.
    within_team_limits = False

    class Meta:
        model = ApiKey
        fields = [
            "name",
            "team",
            "permissions",
            "is_active",
            "expires_at",
            "allowed_models",
            *LIMIT_FIELDS,
            *ALERT_FIELDS,
            "rotate_every_days",
        ]

    def clean(self):
        data = super().clean()
        if self.within_team_limits:
            self._check_team_limits(data)
            self._check_rate_limit(data)
        return data

    def _check_team_limits(self, data):
        """Refuse a limit above the team's, or left empty (no limit) where the team has one.

        An operator decides what a team may use; its members share that out among its
        keys. The team's own limits cap its keys at admission too, so this check is what
        tells the member at once, not the only guard.
        """
        team = data.get("team")
        if team is None:
            return
        for field in TEAM_LIMIT_FIELDS:
            ceiling = getattr(team, field)
            if ceiling is None or field not in data:
                continue
            value = data[field]
            if value is None:
                self.add_error(
                    field,
                    f"Team {team} allows at most {_describe_limit(field, ceiling)}; set a "
                    "value up to that (empty would mean no limit).",
                )
            elif value > ceiling:
                self.add_error(
                    field,
                    f"Team {team} allows at most {_describe_limit(field, ceiling)}; ask an "
                    "operator to raise the team's limit.",
                )

    def _check_rate_limit(self, data):
        """Refuse a request rate faster than the default, or than the key already had.

        A team has no request rate of its own, and the rate protects the gateway and its
        upstreams rather than a budget, so raising it is left to operators; a rate an
        operator set may be kept or lowered.
        """
        rate = data.get("rate_limit")
        if not rate:
            return
        allowed = max(
            [ApiKey._meta.get_field("rate_limit").default, self.instance.rate_limit],
            key=_requests_per_second,
        )
        if _requests_per_second(rate) > _requests_per_second(allowed):
            self.add_error(
                "rate_limit",
                f"At most {allowed} (or an equal or slower rate); only an operator may "
                "allow more requests.",
            )


class ApiKeyAddForm(ApiKeyForm):
    class Meta(ApiKeyForm.Meta):
        fields = [
            "name",
            "team",
            "permissions",
            "expires_at",
            "allowed_models",
            *LIMIT_FIELDS,
            *ALERT_FIELDS,
            "rotate_every_days",
        ]

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("This moment is already past; the key would never work.")
        return expires_at


class ExpiryFilter(admin.SimpleListFilter):
    title = "expiry"
    parameter_name = "expiry"

    def lookups(self, request, model_admin):
        return [("expired", "Expired"), ("current", "Not expired"), ("never", "Never expires")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "current":
            return queryset.exclude(expires_at__lte=now)
        if self.value() == "never":
            return queryset.filter(expires_at__isnull=True)
        return queryset


class RotationForm(forms.Form):
    grace = forms.CharField(
        initial="24h",
        label="Grace period",
        help_text="How long the current secret keeps working beside the new one: 30m, 24h, "
        "7d, or 0 to refuse it at once.",
    )

    def clean_grace(self):
        try:
            return parse_duration(self.cleaned_data["grace"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class RotationDueFilter(admin.SimpleListFilter):
    title = "rotation due"
    parameter_name = "rotation_due"

    def lookups(self, request, model_admin):
        return [("yes", "Due"), ("no", "Not due"), ("none", "No rotation policy")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(rotate_every_days__isnull=True)
        if self.value() not in ("yes", "no"):
            return queryset
        # Read in Python rather than as a date sum in SQL, which SQLite and PostgreSQL
        # spell differently: keys with a policy number in the hundreds, not millions.
        due = [
            key.pk
            for key in queryset.filter(rotate_every_days__isnull=False, revoked_at__isnull=True)
            if key.rotation_due
        ]
        if self.value() == "yes":
            return queryset.filter(pk__in=due)
        return queryset.exclude(pk__in=due)


class TeamScopedRelatedFilter(admin.RelatedFieldListFilter):
    """A filter by key or team offering a member their teams' alone, an operator every one.

    Read from the keys and teams, not from the usage table (RelatedOnlyFieldListFilter's
    DISTINCT over every record).
    """

    def field_choices(self, field, request, model_admin):
        teams = model_admin.team_scope(request)
        if teams is None:
            limit = {}
        else:
            limit = {"pk__in": teams} if field.related_model is Team else {"team__in": teams}
        ordering = self.field_admin_ordering(field, request, model_admin)
        return field.get_choices(include_blank=False, ordering=ordering, limit_choices_to=limit)


class TeamScopedAdmin(admin.ModelAdmin):
    """An admin whose operators see every row and whose team members see their teams'.

    Operators keep Django's permissions. For a member (apikeys/membership.py) the queryset
    holds their teams' rows only, so the change page of another team's row answers as for
    an id that does not exist, and list filters and actions never reach beyond it.
    """

    # The lookup from the model to the team a row belongs to.
    team_lookup = "team"
    # What members may do to their teams' rows besides viewing them; never delete.
    members_may_add = False
    members_may_change = False
    # The model whose permissions make an operator (a proxy's page may go by another's).
    permissions_model = None

    def team_scope(self, request):
        """Return None for an operator, else the ids of the user's teams."""
        return membership.team_scope(request, self.permissions_model or self.model)

    def team_of(self, obj):
        return obj.team_id

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        teams = self.team_scope(request)
        if teams is None:
            return queryset
        return queryset.filter(**{f"{self.team_lookup}__in": teams})

    def has_module_permission(self, request):
        teams = self.team_scope(request)
        return super().has_module_permission(request) if teams is None else bool(teams)

    def has_view_permission(self, request, obj=None):
        teams = self.team_scope(request)
        if teams is None:
            return super().has_view_permission(request, obj)
        return self._in_scope(teams, obj)

    def has_add_permission(self, request):
        teams = self.team_scope(request)
        if teams is None:
            return super().has_add_permission(request)
        return self.members_may_add and bool(teams)

    def has_change_permission(self, request, obj=None):
        teams = self.team_scope(request)
        if teams is None:
            return super().has_change_permission(request, obj)
        return self.members_may_change and self._in_scope(teams, obj)

    def has_delete_permission(self, request, obj=None):
        teams = self.team_scope(request)
        if teams is None:
            return super().has_delete_permission(request, obj)
        return False

    def _in_scope(self, teams, obj):
        return bool(teams) and (obj is None or self.team_of(obj) in teams)


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin, TeamScopedAdmin):
    form = ApiKeyForm
    add_form = ApiKeyAddForm
    secret_template = "admin/apikeys/apikey/secret.html"
    rotate_template = "admin/apikeys/apikey/rotate.html"
    change_form_template = "admin/apikeys/apikey/change_form.html"
    # Members create, change and revoke their teams' keys (revoking is a change).
    members_may_add = True
    members_may_change = True

    list_display = [
        "name",
        "team",
        "prefix",
        "permissions",
        "is_active",
        "state",
        "expires_at",
        "limits",
        "rotation",
        "created_at",
        "last_used_at",
    ]
    # RelatedOnly: a member is offered the teams of the keys they see, never every team.
    list_filter = [
        ("team", admin.RelatedOnlyFieldListFilter),
        "is_active",
        "permissions",
        ExpiryFilter,
        RotationDueFilter,
    ]
    list_select_related = ["team"]
    search_fields = ["name", "^prefix"]
    actions = ["revoke_keys"]
    fieldsets = [
        (None, {"fields": ["name", "team", "prefix", "permissions", "is_active"]}),
        ("Limits", {"fields": ["expires_at", "allowed_models", *LIMIT_FIELDS]}),
        ("Budget alerts", {"fields": ALERT_FIELDS}),
        ("Rotation", {"fields": ["rotate_every_days", "rotated_at", "previous_secret"]}),
        ("Usage", {"fields": ["usage_and_limits"]}),
        ("History", {"fields": ["created_at", "last_used_at", "revoked_at"]}),
    ]
    add_fieldsets = [
        (None, {"fields": ["name", "team", "permissions"]}),
        ("Limits", {"fields": ["expires_at", "allowed_models", *LIMIT_FIELDS]}),
        ("Budget alerts", {"fields": ALERT_FIELDS}),
        ("Rotation", {"fields": ["rotate_every_days"]}),
    ]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        form = super().get_form(request, obj, **kwargs)
        if self.team_scope(request) is not None:
            form = type(f"Member{form.__name__}", (form,), {"within_team_limits": True})
        return form

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        teams = self.team_scope(request)
        if db_field.name == "team" and teams is not None:
            # A member's key must be in one of their teams: no team would put it outside
            # every team's limits, and outside what the member can see again.
            kwargs["queryset"] = Team.objects.filter(pk__in=teams)
            kwargs["required"] = True
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        teams = self.team_scope(request)
        if teams is not None and len(teams) == 1 and "team" not in initial:
            # A member of one team starts from that team's limits, the most they may set.
            team = Team.objects.get(pk=next(iter(teams)))
            initial["team"] = team.pk
            for field in TEAM_LIMIT_FIELDS:
                if getattr(team, field) is not None:
                    initial.setdefault(field, getattr(team, field))
        return initial

    def managed_key(self, request, object_id):
        """Return the key with this id if the user may change it, else None.

        For views that act on one key besides the change form (rotation, say): they reach
        a key through here, so that a member reaches their teams' keys only, and another
        team's key answers exactly as one that does not exist.
        """
        key = self.get_object(request, object_id)
        if key is None or not self.has_change_permission(request, key):
            return None
        return key

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        readonly = [
            "prefix",
            "rotated_at",
            "previous_secret",
            "usage_and_limits",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]
        if obj.revoked_at is not None:
            # Revoking is for good; a key only switched off can be switched back on.
            readonly.append("is_active")
        return readonly

    def lookup_allowed(self, lookup, value, request=None):
        return not refers_to_digest(lookup) and super().lookup_allowed(lookup, value, request)

    @admin.display(description="state", ordering="revoked_at")
    def state(self, key):
        if key.state == "revoked":
            return format_html(
                "<strong>revoked</strong> {}", timezone.localtime(key.revoked_at).date()
            )
        if key.state == "expired":
            return format_html("<strong>{}</strong>", "expired")
        return key.state

    @admin.display(description="limits")
    def limits(self, key):
        return key.describe_limits()

    @admin.display(description="rotation due")
    def rotation(self, key):
        if key.rotation_due_at is None or key.revoked_at is not None:
            return "-"
        due = timezone.localtime(key.rotation_due_at).date()
        if key.rotation_due:
            return format_html("<strong>due</strong> since {}", due)
        return str(due)

    @admin.display(description="previous secret")
    def previous_secret(self, key):
        if key.previous_valid_until is None:
            return "-"
        until = timezone.localtime(key.previous_valid_until)
        if key.previous_secret_works:
            return f"works until {until:%Y-%m-%d %H:%M}"
        return f"refused since {until:%Y-%m-%d %H:%M}"

    def get_urls(self):
        return [
            path(
                "<path:object_id>/rotate/",
                self.admin_site.admin_view(self.rotate_view),
                name="apikeys_apikey_rotate",
            ),
            *super().get_urls(),
        ]

    @sensitive_variables("secret")
    def rotate_view(self, request, object_id):
        """Ask for a grace period (GET), then rotate and show the new secret once (POST)."""
        key = self.get_object(request, object_id)
        if key is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, key) or key.revoked_at is not None:
            raise PermissionDenied
        form = RotationForm(request.POST if request.method == "POST" else None)
        change_url = reverse(
            "admin:apikeys_apikey_change", args=[quote(key.pk)], current_app=self.admin_site.name
        )
        if request.method == "POST" and form.is_valid():
            before = snapshot(key)
            replaced_in_grace = key.previous_secret_works
            grace = form.cleaned_data["grace"]
            secret = key.rotate(grace)
            record_change(request.user, key, CHANGE, before, admin_source(request))
            context = {
                **self.admin_site.each_context(request),
                "title": f"API key “{key.name}” rotated",
                "subtitle": None,
                "opts": self.opts,
                "key": key,
                "secret": secret,
                "rotation": {
                    "grace": describe_duration(grace),
                    "until": key.previous_valid_until,
                    "replaced_in_grace": replaced_in_grace,
                },
                "change_url": change_url,
            }
            # Rendered, not redirected to, as after adding a key: the secret passes through
            # no URL, session or cookie.
            return TemplateResponse(request, self.secret_template, context)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rotate the secret of “{key.name}”",
            "subtitle": None,
            "opts": self.opts,
            "key": key,
            "form": form,
            "change_url": change_url,
            "previous_works": key.previous_secret_works,
        }
        return TemplateResponse(request, self.rotate_template, context)

    @admin.display(description="usage and what is left")
    def usage_and_limits(self, key):
        """Show the key's usage of the last day and this month, and what its limits leave."""
        now = timezone.now()
        month_start = throttling.month_start(now.timestamp())
        day = PeriodUsage(Period(now - timedelta(days=1), now, "Last 24 hours"), key=key)
        month = PeriodUsage(Period(month_start, now, f"{month_start:%B %Y} (UTC)"), key=key)
        month_totals = month.totals()
        requests = throttling.request_window(key, increment=False)
        context = {
            "periods": [(day.period, day.totals()), (month.period, month_totals)],
            "windows": ([requests] if requests else []) + throttling.token_windows(key),
            # What the limits themselves go by, as every other page and GET /v1/key show.
            "budgets": throttling.budget_status(key),
            "time_zone": settings.LIMITS_TIME_ZONE,
            "report_url": reverse(
                "admin:apikeys_usagereport_changelist", current_app=self.admin_site.name
            )
            + f"?key={key.pk}&period=30d",
        }
        return render_to_string("admin/apikeys/apikey/usage.html", context)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        keys = list(queryset.filter(revoked_at__isnull=True))
        if not keys:
            self.message_user(request, "The selected keys were already revoked.", messages.INFO)
            return
        for key in keys:
            key.revoke()
        self.message_user(
            request,
            f"Revoked {len(keys)} key{'' if len(keys) == 1 else 's'}; requests with "
            f"{'it' if len(keys) == 1 else 'them'} {refused_when()}.",
            messages.SUCCESS,
        )

    @sensitive_variables("secret")
    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
        else:
            fields = {name: value for name, value in form.cleaned_data.items() if name != "name"}
            key, secret = ApiKey.objects.create_key(name=form.cleaned_data["name"], **fields)
            # The admin goes on with the form's own instance (to log and answer the add), so
            # it becomes the stored row; the secret rides along on it until response_add.
            obj.pk = key.pk
            obj.refresh_from_db()
            obj._secret = secret
        self._warn_about_unknown_models(request, obj.allowed_models)

    @sensitive_variables("secret")
    def response_add(self, request, obj, post_url_continue=None):
        secret = obj._secret
        del obj._secret
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "title": f"API key “{obj.name}” created",
            "subtitle": None,
            "opts": opts,
            "key": obj,
            "secret": secret,
            "change_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change",
                args=[quote(obj.pk)],
                current_app=self.admin_site.name,
            ),
            "add_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_add", current_app=self.admin_site.name
            ),
        }
        # The admin already marks its views never_cache, so the browser keeps no copy of
        # this page; going back to it shows the form again, not the secret.
        return TemplateResponse(request, self.secret_template, context)

    def _warn_about_unknown_models(self, request, names):
        # A key may be made before its models are synced, so this warns instead of refusing.
        unknown = unknown_model_names(names)
        if unknown:
            self.message_user(
                request,
                f"No model or alias is named {', '.join(unknown)} yet; the key cannot use "
                f"{'it' if len(unknown) == 1 else 'them'} until it exists.",
                messages.WARNING,
            )


class BoundedCountPaginator(Paginator):
    """A paginator that counts at most MAX_COUNTED rows (and a page more).

    The changelist counts its rows to number its pages; over millions of records that
    count reads the whole table on every page. Past MAX_COUNTED rows the last pages are
    not linked: narrow the list with a filter or a search instead.
    """

    MAX_COUNTED = 10_000

    @cached_property
    def count(self):
        return self.object_list[: self.MAX_COUNTED + self.per_page].count()


def catalogue_choices():
    """Return (name, name) of every model of the catalogue.

    From the catalogue, not from a DISTINCT over the usage records, which reads the whole
    table (or its whole index) on every page. A model deleted from the catalogue leaves
    the choices; its usage stays in the reports' totals and tables.
    """
    names = CatalogueModel.objects.order_by("name").values_list("name", flat=True)
    return [(name, name) for name in names]


class CatalogueModelFilter(admin.SimpleListFilter):
    """Records of one model of the catalogue."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        return catalogue_choices()

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(model=self.value())
        return queryset


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin, TeamScopedAdmin):
    """List what each key did; records are written by the gateway only, never by hand."""

    list_display = [
        "created_at",
        "key_name",
        "team",
        "model",
        "endpoint",
        "stream",
        "status",
        "attempt",
        "http_status",
        "tokens",
        "cost",
        "latency",
        "time_to_first_token",
        "request_id",
    ]
    # Every key and the catalogue's models: RelatedOnlyFieldListFilter and a plain "model"
    # would each read every record (a DISTINCT) to find which keys and models have any.
    list_filter = [
        ("api_key", TeamScopedRelatedFilter),
        ("team", TeamScopedRelatedFilter),
        CatalogueModelFilter,
        "status",
        "attempt",
        "stream",
        "created_at",
    ]
    list_select_related = ["team"]
    date_hierarchy = "created_at"
    search_fields = ["^request_id", "key_name", "model"]
    # Counting a large table on every page costs more than the "N total" link is worth.
    show_full_result_count = False
    paginator = BoundedCountPaginator
    list_per_page = 50

    def lookup_allowed(self, lookup, value, request=None):
        return not refers_to_digest(lookup) and super().lookup_allowed(lookup, value, request)

    @admin.display(description="tokens", ordering="total_tokens")
    def tokens(self, record):
        return record.total_tokens

    @admin.display(description="cost (USD)", ordering="cost")
    def cost(self, record):
        return record.cost.normalize() if record.cost else 0

    @admin.display(description="latency (ms)", ordering="latency_ms")
    def latency(self, record):
        return record.latency_ms

    @admin.display(description="TTFT (ms)", ordering="time_to_first_token_ms")
    def time_to_first_token(self, record):
        return record.time_to_first_token_ms


class ReportForm(forms.Form):
    """The report's period and filters, read from the query string."""

    period = forms.ChoiceField(
        choices=[*((name, label) for name, (label, _) in PRESETS.items()), ("custom", "Custom")],
        initial="24h",
    )
    start = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From"
    )
    end = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To"
    )
    team = forms.ModelChoiceField(Team.objects.all(), required=False, empty_label="All teams")
    key = forms.ModelChoiceField(ApiKey.objects.all(), required=False, empty_label="All keys")
    model = forms.ChoiceField(required=False)

    # The longest custom period, in days: a year of daily bars.
    MAX_DAYS = 366

    def __init__(self, *args, teams=None, **kwargs):
        """`teams`: the ids of the teams whose usage the user may read; None for all."""
        super().__init__(*args, **kwargs)
        self.teams = teams
        if teams is not None:
            # Another team's key or team is then no valid choice: the form refuses it
            # rather than report on it.
            self.fields["team"].queryset = Team.objects.filter(pk__in=teams)
            self.fields["key"].queryset = ApiKey.objects.filter(team__in=teams)
        self.fields["model"].choices = [("", "All models"), *catalogue_choices()]

    def clean(self):
        data = super().clean()
        if data.get("period") != "custom":
            return data
        start, end = data.get("start"), data.get("end")
        if start is None or end is None:
            raise forms.ValidationError("A custom period needs its first and last day.")
        if start > end:
            raise forms.ValidationError("The first day comes after the last one.")
        if (end - start).days + 1 > self.MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {self.MAX_DAYS} days.")
        return data

    def report(self):
        data = self.cleaned_data
        if data["period"] == "custom":
            period = Period.days(data["start"], data["end"])
        else:
            period = Period.last(data["period"])
        return PeriodUsage(
            period, key=data["key"], model=data["model"], team=data["team"], teams=self.teams
        )


@admin.register(UsageReport)
class UsageReportAdmin(ReadOnlyAdmin, TeamScopedAdmin):
    """Answer at a glance: who is using what, how much, and is anything failing."""

    template = "admin/apikeys/usagereport/report.html"
    # Read by whoever may view usage records, or by a member for their teams.
    permissions_model = UsageRecord

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("", view(self.report_view), name="apikeys_usagereport_changelist"),
            path("csv/", view(self.csv_view), name="apikeys_usagereport_csv"),
        ]

    def has_view_permission(self, request, obj=None):
        if self.team_scope(request) is None:
            return request.user.has_perm("apikeys.view_usagerecord")
        return super().has_view_permission(request, obj)

    def report_view(self, request):
        form = self._form(request)
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage report",
            "subtitle": None,
            "opts": self.opts,
            "form": form,
        }
        if form.is_valid():
            report = form.report()
            series = report.series()
            context.update(
                {
                    "report": report,
                    "kept_days": settings.USAGE_RETENTION_DAYS,
                    "totals": report.totals(),
                    "charts": _charts(report.period, series),
                    "by_key": report.by_key(),
                    "by_team": report.by_team(),
                    "by_model": report.by_model(),
                    "by_endpoint": report.by_endpoint(),
                    "csv_url": reverse(
                        "admin:apikeys_usagereport_csv", current_app=self.admin_site.name
                    )
                    + "?"
                    + request.GET.urlencode(),
                }
            )
        return TemplateResponse(request, self.template, context)

    def csv_view(self, request):
        form = self._form(request)
        if not form.is_valid():
            return HttpResponse(
                "The period or filters are not valid: " + " ".join(form.errors.get("__all__", [])),
                status=400,
                content_type="text/plain",
            )
        report = form.report()
        filename = f"usage-{report.period.start:%Y%m%d-%H%M}-{report.period.end:%Y%m%d-%H%M}.csv"
        response = HttpResponse(
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
        writer = csv.writer(response)
        writer.writerow(["key", "team", "model", *SUM_FIELDS])
        for row in report.by_key_team_and_model():
            # Key, team and model names are anyone's text (a model name is what the client
            # asked for); the numbers are the database's own.
            writer.writerow(
                [
                    spreadsheet_text(row["key_name"]),
                    spreadsheet_text(row["team_name"] or ""),
                    spreadsheet_text(row["model"]),
                    *(row[f] for f in SUM_FIELDS),
                ]
            )
        return response

    def _form(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        # The last 24 hours until a period is chosen.
        return ReportForm({"period": "24h", **request.GET.dict()}, teams=self.team_scope(request))


@admin.register(Team)
class TeamAdmin(AuditedAdmin, TeamScopedAdmin):
    """Teams, their members and limits, and their spend against each budget.

    Members see their own teams here, read-only: what they may spend is an operator's call.
    """

    team_lookup = "pk"
    list_display = ["name", "limits", "member_names", "key_count", "spend"]
    search_fields = ["name"]
    filter_horizontal = ["members"]
    fieldsets = [
        (None, {"fields": ["name", "members"]}),
        ("Limits", {"fields": TEAM_LIMIT_FIELDS}),
        ("Budget alerts", {"fields": [*ALERT_FIELDS, "webhook_url", "webhook_secret"]}),
        ("Spend", {"fields": ["spend_against_budgets"]}),
        ("History", {"fields": ["created_at"]}),
    ]
    add_fieldsets = [
        (None, {"fields": ["name", "members"]}),
        ("Limits", {"fields": TEAM_LIMIT_FIELDS}),
        ("Budget alerts", {"fields": [*ALERT_FIELDS, "webhook_url", "webhook_secret"]}),
    ]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "webhook_url":
            # As for a provider's base URL: no scheme typed means https, Django 6's default.
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def team_of(self, team):
        return team.pk

    def get_queryset(self, request):
        queryset = super().get_queryset(request).prefetch_related("members")
        return queryset.annotate(n_keys=Count("keys", distinct=True))

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["spend_against_budgets", "created_at"]

    @admin.display(description="limits")
    def limits(self, team):
        return team.describe_limits() or "none"

    @admin.display(description="members")
    def member_names(self, team):
        return ", ".join(user.get_username() for user in team.members.all()) or "–"

    @admin.display(description="keys", ordering="n_keys")
    def key_count(self, team):
        return team.n_keys

    @admin.display(description="spend this period")
    def spend(self, team):
        return self._budgets(team, compact=True)

    @admin.display(description="spend against each budget")
    def spend_against_budgets(self, team):
        return self._budgets(team, compact=False)

    def _budgets(self, team, compact):
        return render_to_string(
            "admin/apikeys/team/budgets.html",
            {
                "uses": throttling.budget_status(team),
                "zone": settings.LIMITS_TIME_ZONE,
                "compact": compact,
            },
        )


def _charts(period, rows):
    hourly = period.bucket == "hour"
    tooltips = [
        f"{row['bucket']:%Y-%m-%d %H:00}" if hourly else f"{row['bucket']:%Y-%m-%d}" for row in rows
    ]
    labels = []
    for row in rows:
        moment = row["bucket"]
        if not hourly:
            labels.append(f"{moment:%b %d}")
        elif moment.hour == 0 or not labels:
            labels.append(f"{moment:%b %d} {moment:%H}h")
        else:
            labels.append(f"{moment:%H}h")
    return [
        stacked_bar_chart(
            f"Requests per {period.bucket}",
            labels,
            [
                Series("succeeded", "ok", [row["requests"] - row["errors"] for row in rows]),
                Series("failed", "failed", [row["errors"] for row in rows]),
            ],
            tooltips,
        ),
        stacked_bar_chart(
            f"Tokens per {period.bucket}",
            labels,
            [
                Series("prompt tokens", "prompt", [row["prompt_tokens"] for row in rows]),
                Series(
                    "completion tokens", "completion", [row["completion_tokens"] for row in rows]
                ),
            ],
            tooltips,
        ),
    ]
