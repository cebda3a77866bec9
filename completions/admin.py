"""Admin for providers, their models and the models' aliases."""

from django.contrib import admin, messages
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from completions.models import OPENAI_NAMES, Model, ModelAlias, ModelFallback, Provider
from completions.registry import catalogue


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
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


@admin.register(Model)
class LanguageModelAdmin(admin.ModelAdmin):
    """Admin for completions.Model, the models a provider serves."""

    list_display = [
        "name",
        "provider",
        "task",
        "enabled",
        "input_price",
        "output_price",
        "alias_names",
    ]
    list_filter = ["provider", "task", "enabled"]
    list_select_related = ["provider"]
    search_fields = ["name", "aliases__name"]
    fields = [
        "name",
        "provider",
        "task",
        "description",
        "enabled",
        "accepts_images",
        "input_price",
        "output_price",
        "created_at",
    ]
    readonly_fields = ["created_at"]
    inlines = [ModelAliasInline, ModelFallbackInline]
    actions = ["enable_models", "disable_models", "add_openai_names"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("aliases")

    @admin.display(description="aliases")
    def alias_names(self, model):
        return ", ".join(alias.name for alias in model.aliases.all())

    @admin.action(description="Enable selected models", permissions=["change"])
    def enable_models(self, request, queryset):
        count = queryset.update(enabled=True)
        # update() sends no signal: the registry must hear of the change all the same.
        catalogue.clear()
        self.message_user(request, f"Enabled {count} model(s).", messages.SUCCESS)

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
