"""Admin for API keys and their usage records.

A key's secret exists only in the response to the add form: `create_key` stores its digest,
and the page that shows the secret is rendered directly rather than after a redirect, so the
secret never passes through a URL, the session or the messages cookie.
"""

import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_variables

from apikeys.models import ApiKey, UsageRecord
from completions.models import Model, ModelAlias

MODEL_NAME_SEPARATORS = re.compile(r"[,\n]")


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
        names = (name.strip() for name in MODEL_NAME_SEPARATORS.split(value or ""))
        # dict.fromkeys drops repeated names and keeps the order they were written in.
        return list(dict.fromkeys(name for name in names if name))


class ApiKeyForm(forms.ModelForm):
    allowed_models = ModelNamesField(
        required=False,
        help_text="Model names or aliases this key may use, one per line or separated by "
        "commas; empty means every model.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "permissions", "is_active", "expires_at", "allowed_models", "rate_limit"]


class ApiKeyAddForm(ApiKeyForm):
    class Meta(ApiKeyForm.Meta):
        fields = ["name", "permissions", "expires_at", "allowed_models", "rate_limit"]

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
        "rate_limit",
        "created_at",
        "last_used_at",
    ]
    list_filter = ["is_active", "permissions", ExpiryFilter]
    search_fields = ["name", "^prefix"]
    actions = ["revoke_keys"]
    fieldsets = [
        (None, {"fields": ["name", "prefix", "permissions", "is_active"]}),
        ("Limits", {"fields": ["expires_at", "allowed_models", "rate_limit"]}),
        ("History", {"fields": ["created_at", "last_used_at", "revoked_at"]}),
    ]
    add_fieldsets = [
        (None, {"fields": ["name", "permissions"]}),
        ("Limits", {"fields": ["expires_at", "allowed_models", "rate_limit"]}),
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
        readonly = ["prefix", "created_at", "last_used_at", "revoked_at"]
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
            f"{'it' if len(keys) == 1 else 'them'} are now refused.",
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
        known = set(Model.objects.filter(name__in=names).values_list("name", flat=True))
        known |= set(ModelAlias.objects.filter(name__in=names).values_list("name", flat=True))
        unknown = [name for name in names if name not in known]
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

    @admin.display(description="latency (ms)", ordering="latency_ms")
    def latency(self, record):
        return record.latency_ms

    @admin.display(description="TTFT (ms)", ordering="time_to_first_token_ms")
    def time_to_first_token(self, record):
        return record.time_to_first_token_ms
