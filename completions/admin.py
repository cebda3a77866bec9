"""Admin for providers, their models and the models' aliases."""

import json

from django.contrib import admin, messages
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from apikeys.audit import AuditedAdmin
from completions.models import (
    OPENAI_NAMES,
    Model,
    ModelAlias,
    ModelFallback,
    Provider,
    StoredResponse,
)
from completions.registry import catalogue


@admin.register(Provider)
class ProviderAdmin(AuditedAdmin, admin.ModelAdmin):
    """Admin for providers.

    Where a provider's calls go, and with which credential, is the permission
    completions.change_provider_endpoint's (superusers only unless given): with the provider
    permissions alone, a staff user could point a provider at a server of their own and
    collect its key. Without it those fields are shown, not edited, and no provider is added.
    """

    list_display = [
        "name",
        "kind",
        "base_url",
        "is_active",
        "model_count",
        "key_variable",
        "credential",
    ]
    list_filter = ["kind", "is_active"]
    search_fields = ["name"]
    fields = [
        "name",
        "kind",
        "base_url",
        "account_id",
        "api_key_env",
        "credential",
        "is_active",
        "created_at",
    ]
    readonly_fields = ["credential", "created_at"]
    # The fields that decide which server gets which credential: the kind too, since a
    # Cloudflare provider with no variable of its own sends CLOUDFLARE_API_TOKEN.
    endpoint_fields = ["kind", "base_url", "api_key_env"]

    def has_add_permission(self, request):
        return super().has_add_permission(request) and self._may_change_endpoint(request)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not self._may_change_endpoint(request):
            fields += self.endpoint_fields
        return fields

    @staticmethod
    def _may_change_endpoint(request):
        return request.user.has_perm("completions.change_provider_endpoint")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(model_count=Count("models"))

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "base_url":
            # A URL typed without a scheme is taken as https, Django 6's default; a local
            # server on plain http needs its http:// written out.
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="models", ordering="model_count")
    def model_count(self, provider):
        url = reverse("admin:completions_model_changelist", current_app=self.admin_site.name)
        return format_html(
            '<a href="{}?provider__id__exact={}">{}</a>', url, provider.pk, provider.model_count
        )

    @admin.display(description="API key variable", ordering="api_key_env")
    def key_variable(self, provider):
        if provider.api_key_env:
            return provider.api_key_env
        if provider.kind == Provider.CLOUDFLARE:
            return "CLOUDFLARE_API_TOKEN (default)"
        return "-"

    @admin.display(description="API key is")
    def credential(self, provider):
        """Say whether the provider's key variable holds a value, never what the value is."""
        if provider.pk is None:
            # Read at request time, so an unsaved form has nothing to report yet.
            return "-"
        if provider.kind == Provider.ECHO:
            return "not needed"
        if not provider.api_key_env and provider.kind != Provider.CLOUDFLARE:
            return "none named"
        if not provider.key_variable_allowed():
            # Whether the variable is set is not read: that would tell whether any variable
            # of the gateway's environment exists.
            return "not allowed (see PROVIDER_KEY_VARIABLES); the provider is not called"
        return "set" if provider.get_api_key() else "not set"


class ModelAliasInline(admin.TabularInline):
    model = ModelAlias
    extra = 1


class ModelFallbackInline(admin.TabularInline):
    """The models tried in order (lowest position first) when this one's provider fails."""

    model = ModelFallback
    fk_name = "model"
    extra = 1
    fields = ["position", "fallback"]
    autocomplete_fields = ["fallback"]
    verbose_name = "fallback"
    verbose_name_plural = "fallbacks (tried in order of position when the provider fails)"


class DeprecationFilter(admin.SimpleListFilter):
    """Models by their deprecation date: passed (retired, not served), to come, or none."""

    title = "deprecated"
    parameter_name = "deprecated"

    def lookups(self, request, model_admin):
        return [
            ("passed", "date passed (not served)"),
            ("planned", "date to come"),
            ("none", "no date"),
        ]

    def queryset(self, request, queryset):
        today = timezone.now().date()
        if self.value() == "passed":
            return queryset.filter(deprecation_date__lte=today)
        if self.value() == "planned":
            return queryset.filter(deprecation_date__gt=today)
        if self.value() == "none":
            return queryset.filter(deprecation_date__isnull=True)
        return queryset


def _json_block(value, summary):
    """Show a JSON value pretty-printed, folded under a summary (schemas run to 300 kB)."""
    if value in (None, {}):
        return "-"
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return format_html(
        "<details><summary>{} ({} lines)</summary><pre>{}</pre></details>",
        summary,
        text.count("\n") + 1,
        text,
    )


@admin.register(Model)
class LanguageModelAdmin(AuditedAdmin, admin.ModelAdmin):
    """Admin for completions.Model, the models a provider serves."""

    list_display = [
        "name",
        "provider",
        "task",
        "enabled",
        "input_price",
        "output_price",
        "deprecation",
        "alias_names",
    ]
    list_filter = ["provider", "task", "enabled", DeprecationFilter]
    list_select_related = ["provider"]
    search_fields = ["name", "aliases__name"]
    fields = [
        "name",
        "provider",
        "task",
        "description",
        "enabled",
        "accepts_images",
        "shortens_embeddings",
        "input_price",
        "output_price",
        "cached_input_price",
        "unit_price",
        "context_window",
        "default_max_tokens",
        "deprecation_date",
        "catalogue_properties",
        "request_schema",
        "answer_schema",
        "created_at",
    ]
    # What sync_models reads from the provider is shown, not edited: the next sync would
    # overwrite an edit, and a hand-made schema could break the requests built from it.
    readonly_fields = ["catalogue_properties", "request_schema", "answer_schema", "created_at"]
    inlines = [ModelAliasInline, ModelFallbackInline]
    actions = ["enable_models", "disable_models", "add_openai_names"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("aliases")

    @admin.display(description="aliases")
    def alias_names(self, model):
        return ", ".join(alias.name for alias in model.aliases.all())

    @admin.display(description="deprecation date", ordering="deprecation_date")
    def deprecation(self, model):
        if model.deprecation_date is None:
            return "-"
        if model.is_retired():
            return f"{model.deprecation_date} (passed)"
        return str(model.deprecation_date)

    @admin.display(description="catalogue properties")
    def catalogue_properties(self, model):
        return _json_block(model.properties, "properties")

    @admin.display(description="request schema")
    def request_schema(self, model):
        return _json_block(model.input_schema, "JSON Schema of the request body")

    @admin.display(description="answer schema")
    def answer_schema(self, model):
        return _json_block(model.output_schema, "JSON Schema of the answer")

    @admin.action(description="Enable selected models", permissions=["change"])
    def enable_models(self, request, queryset):
        # A model past its deprecation date is not served even if enabled (Model.clean).
        today = timezone.now().date()
        retired = list(queryset.filter(deprecation_date__lte=today).values_list("name", flat=True))
        count = queryset.exclude(deprecation_date__lte=today).update(enabled=True)
        # update() sends no signal: the registry must hear of the change all the same.
        catalogue.clear()
        self.message_user(request, f"Enabled {count} model(s).", messages.SUCCESS)
        if retired:
            self.message_user(
                request,
                "Left disabled, past their deprecation date: " + ", ".join(retired) + ".",
                messages.WARNING,
            )

    @admin.action(description="Give selected models the usual OpenAI names", permissions=["change"])
    def add_openai_names(self, request, queryset):
        """Alias each selected model by the OpenAI model names of its task that are free."""
        added, taken = [], []
        for model in queryset:
            for name in OPENAI_NAMES.get(model.task, []):
                if Model.objects.filter(name=name).exists():
                    taken.append(name)
                    continue
                alias, created = ModelAlias.objects.get_or_create(
                    name=name, defaults={"model": model}
                )
                (added if created else taken).append(f"{name} -> {alias.model}")
        if added:
            self.message_user(request, "Added: " + ", ".join(added) + ".", messages.SUCCESS)
        if taken:
            self.message_user(
                request, "Already taken, left as they are: " + ", ".join(taken) + ".", messages.INFO
            )
        if not added and not taken:
            self.message_user(
                request, "The selected models' tasks have no usual OpenAI names.", messages.INFO
            )

    @admin.action(description="Disable selected models", permissions=["change"])
    def disable_models(self, request, queryset):
        count = queryset.update(enabled=False)
        catalogue.clear()
        self.message_user(
            request,
            f"Disabled {count} model(s); they are no longer listed or served.",
            messages.SUCCESS,
        )


@admin.register(StoredResponse)
class StoredResponseAdmin(admin.ModelAdmin):
    """Stored responses of /v1/responses, read-only: they are the keys' conversations."""

    list_display = ["id", "api_key", "model", "created_at"]
    list_filter = ["model"]
    search_fields = ["id"]
    list_select_related = ["api_key"]
    fields = ["id", "api_key", "model", "created_at", "input_items", "output_items", "body"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
