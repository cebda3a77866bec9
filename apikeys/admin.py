"""Admin for API keys, their usage records and the usage report.

A key's secret exists only in the response to the add form: `create_key` stores its digest,
and the page that shows the secret is rendered directly rather than after a redirect, so the
secret never passes through a URL, the session or the messages cookie.

The usage report (UsageReportAdmin) is a page of its own, listed in the admin index through
the UsageReport proxy model: totals, a chart and tables for a period, and a CSV export.
"""

import csv
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_variables

from apikeys import throttling
from apikeys.charts import Series, stacked_bar_chart
from apikeys.models import (
    ApiKey,
    UsageRecord,
    UsageReport,
    parse_model_names,
    refused_when,
)
from apikeys.reports import PRESETS, SUM_FIELDS, Period, PeriodUsage, spreadsheet_text
from completions.models import unknown_model_names

LIMIT_FIELDS = [
    "rate_limit",
    "tokens_per_minute",
    "tokens_per_day",
    "daily_budget",
    "weekly_budget",
    "monthly_budget",
    "lifetime_budget",
]


def refers_to_digest(lookup):
    """Tell whether a changelist lookup such as `api_key__digest__startswith` reads a digest."""
    # Filtering on a digest by prefix would let anyone with view access probe it piece by
    # piece, the reason contrib.auth refuses lookups on passwords.
    return "digest" in lookup.split("__")


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

    class Meta:
        model = ApiKey
        fields = [
            "name",
            "permissions",
            "is_active",
            "expires_at",
            "allowed_models",
            *LIMIT_FIELDS,
        ]


class ApiKeyAddForm(ApiKeyForm):
    class Meta(ApiKeyForm.Meta):
        fields = ["name", "permissions", "expires_at", "allowed_models", *LIMIT_FIELDS]

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


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    add_form = ApiKeyAddForm
    secret_template = "admin/apikeys/apikey/secret.html"

    list_display = [
        "name",
        "prefix",
        "permissions",
        "is_active",
        "state",
        "expires_at",
        "limits",
        "created_at",
        "last_used_at",
    ]
    list_filter = ["is_active", "permissions", ExpiryFilter]
    search_fields = ["name", "^prefix"]
    actions = ["revoke_keys"]
    fieldsets = [
        (None, {"fields": ["name", "prefix", "permissions", "is_active"]}),
        ("Limits", {"fields": ["expires_at", "allowed_models", *LIMIT_FIELDS]}),
        ("Usage", {"fields": ["usage_and_limits"]}),
        ("History", {"fields": ["created_at", "last_used_at", "revoked_at"]}),
    ]
    add_fieldsets = [
        (None, {"fields": ["name", "permissions"]}),
        ("Limits", {"fields": ["expires_at", "allowed_models", *LIMIT_FIELDS]}),
    ]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        readonly = ["prefix", "usage_and_limits", "created_at", "last_used_at", "revoked_at"]
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
            # What the limits themselves go by, which may lag the records by a few minutes.
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


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """List what each key did; records are written by the gateway only, never by hand."""

    list_display = [
        "created_at",
        "key_name",
        "model",
        "endpoint",
        "stream",
        "status",
        "http_status",
        "tokens",
        "cost",
        "latency",
        "time_to_first_token",
        "request_id",
    ]
    list_filter = [
        ("api_key", admin.RelatedOnlyFieldListFilter),
        "model",
        "status",
        "stream",
        "created_at",
    ]
    date_hierarchy = "created_at"
    search_fields = ["^request_id", "key_name", "model"]
    # Counting a large table on every page costs more than the "N total" link is worth.
    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

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
    key = forms.ModelChoiceField(ApiKey.objects.all(), required=False, empty_label="All keys")
    model = forms.ChoiceField(required=False)

    # The longest custom period, in days: a year of daily bars.
    MAX_DAYS = 366

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Every model that has usage, including models since deleted.
        names = UsageRecord.objects.order_by("model").values_list("model", flat=True).distinct()
        self.fields["model"].choices = [("", "All models"), *((name, name) for name in names)]

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
        return PeriodUsage(period, key=data["key"], model=data["model"])


@admin.register(UsageReport)
class UsageReportAdmin(admin.ModelAdmin):
    """Answer at a glance: who is using what, how much, and is anything failing."""

    template = "admin/apikeys/usagereport/report.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("", view(self.report_view), name="apikeys_usagereport_changelist"),
            path("csv/", view(self.csv_view), name="apikeys_usagereport_csv"),
        ]

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("apikeys.view_usagerecord")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

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
                    "totals": report.totals(),
                    "charts": _charts(report.period, series),
                    "by_key": report.by_key(),
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
        writer.writerow(["key", "model", *SUM_FIELDS])
        for row in report.by_key_and_model():
            # Key and model names are anyone's text (a model name is what the client asked
            # for); the numbers are the database's own.
            writer.writerow(
                [
                    spreadsheet_text(row["key_name"]),
                    spreadsheet_text(row["model"]),
                    *(row[f] for f in SUM_FIELDS),
                ]
            )
        return response

    def _form(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        # The last 24 hours until a period is chosen.
        return ReportForm({"period": "24h", **request.GET.dict()})


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
