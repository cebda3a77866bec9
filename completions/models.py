import datetime
import logging
import os
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from gateway.errors import UpstreamError

logger = logging.getLogger(__name__)

ENV_NAME_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# The variables a provider may read its key from start with this; so does no variable of
# the gateway's own, nor of the system. Others only if PROVIDER_KEY_VARIABLES lists them.
KEY_VARIABLE_PREFIX = "GATEWAY_PROVIDER_"
# What a Cloudflare provider with no variable of its own reads (settings.CLOUDFLARE_API_TOKEN).
DEFAULT_KEY_VARIABLE = "CLOUDFLARE_API_TOKEN"
KEY_VARIABLES_REFUSED = (
    f"Only variables whose names start with {KEY_VARIABLE_PREFIX}, {DEFAULT_KEY_VARIABLE}, "
    "and those listed in the setting PROVIDER_KEY_VARIABLES may hold a provider's key."
)


def validate_env_name(value):
    if value and not ENV_NAME_PATTERN.match(value):
        raise ValidationError("Enter the name of an environment variable, like MY_API_TOKEN.")


def key_variable_allowed(name):
    """Tell whether a provider may read its key from the environment variable `name`.

    A provider sends the value upstream as its credential: whoever may edit a provider could
    otherwise have SECRET_KEY or DATABASE_URL sent to a server of their own.
    """
    return (
        (name.startswith(KEY_VARIABLE_PREFIX) and len(name) > len(KEY_VARIABLE_PREFIX))
        or name == DEFAULT_KEY_VARIABLE
        or name in settings.PROVIDER_KEY_VARIABLES
    )


class Provider(models.Model):
    CLOUDFLARE = "cloudflare"
    OPENAI = "openai"
    ECHO = "echo"
    KIND_CHOICES = [
        (CLOUDFLARE, "Cloudflare Workers AI"),
        (OPENAI, "OpenAI-compatible server"),
        (ECHO, "Echo (development model, no account needed)"),
    ]

    name = models.SlugField(max_length=50, unique=True)
    kind = models.CharField(max_length=20, choices=KIND_CHOICES)
    base_url = models.URLField(
        blank=True,
        help_text="Cloudflare: empty means CLOUDFLARE_API_BASE_URL. "
        "OpenAI-compatible: the URL that ends in /v1.",
    )
    account_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="Cloudflare account id; empty means CLOUDFLARE_ACCOUNT_ID.",
    )
    # The credential itself is never stored: only the name of the variable holding it.
    api_key_env = models.CharField(
        "API key variable",
        max_length=100,
        blank=True,
        validators=[validate_env_name],
        help_text="Name of the environment variable that holds this provider's API key or "
        "token: GATEWAY_PROVIDER_..., or one the setting PROVIDER_KEY_VARIABLES lists. "
        "Cloudflare: empty means CLOUDFLARE_API_TOKEN.",
    )
    is_active = models.BooleanField("active", default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        permissions = [
            # The provider permissions alone cover its name and whether it is active; these
            # decide which server receives which credential (superusers only, by default).
            (
                "change_provider_endpoint",
                "Can set a provider's kind, base URL and API key variable",
            ),
        ]

    def __str__(self):
        return self.name

    def clean_fields(self, exclude=None):
        """Check the fields that depend on one another or on settings, where they may change.

        Here rather than in clean(): a form that leaves a field out (the admin's, for staff
        without the endpoint permission) cannot take an error on it, nor change it.
        """
        try:
            super().clean_fields(exclude=exclude)
        except ValidationError as error:
            errors = error.message_dict
        else:
            errors = {}
        # A field with an error of its own is not checked again.
        exclude = set(exclude or ()) | set(errors)
        if "base_url" not in exclude and self.kind == self.OPENAI and not self.base_url:
            errors["base_url"] = ["An OpenAI-compatible provider needs its base URL."]
        if (
            "api_key_env" not in exclude
            and self.api_key_env
            and not key_variable_allowed(self.api_key_env)
        ):
            errors["api_key_env"] = [KEY_VARIABLES_REFUSED]
        if errors:
            raise ValidationError(errors)

    def key_variable_allowed(self):
        """Tell whether the provider may read the variable it names (or names none)."""
        return not self.api_key_env or key_variable_allowed(self.api_key_env)

    def get_base_url(self):
        if self.kind == self.CLOUDFLARE:
            return (self.base_url or settings.CLOUDFLARE_API_BASE_URL).rstrip("/")
        return self.base_url.rstrip("/")

    def get_account_id(self):
        return self.account_id or settings.CLOUDFLARE_ACCOUNT_ID

    def get_api_key(self):
        """Read the credential from the environment at call time, so rotation needs no edit.

        A provider saved before the allow-list (or by hand in the database) that names a
        variable outside it is not called: it might be pointed at someone's listener with
        the gateway's own secret as its key. Clearing the variable in a migration instead
        would break a working setup without a word; this fails loudly, naming the setting.
        """
        if self.api_key_env:
            if not key_variable_allowed(self.api_key_env):
                logger.error(
                    "Provider %s names the API key variable %s, which is not allowed: "
                    "rename the variable to %s... or list it in PROVIDER_KEY_VARIABLES",
                    self.name,
                    self.api_key_env,
                    KEY_VARIABLE_PREFIX,
                )
                raise UpstreamError(
                    f"The provider '{self.name}' is set to read its API key from an "
                    "environment variable the gateway does not allow (see the setting "
                    "PROVIDER_KEY_VARIABLES); its operator must fix it.",
                    code="upstream_misconfigured",
                )
            return os.environ.get(self.api_key_env, "")
        if self.kind == self.CLOUDFLARE:
            return settings.CLOUDFLARE_API_TOKEN
        return ""


class ModelQuerySet(models.QuerySet):
    def available(self):
        return self.filter(enabled=True, provider__is_active=True).select_related("provider")


class Model(models.Model):
    TEXT_GENERATION = "Text Generation"
    TEXT_EMBEDDINGS = "Text Embeddings"
    TEXT_TO_IMAGE = "Text-to-Image"
    SPEECH_RECOGNITION = "Automatic Speech Recognition"
    TEXT_TO_SPEECH = "Text-to-Speech"
    TEXT_CLASSIFICATION = "Text Classification"

    name = models.CharField(
        max_length=200, unique=True, help_text="The provider's model name, used as the model id."
    )
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="models")
    task = models.CharField(max_length=100, default=TEXT_GENERATION)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    accepts_images = models.BooleanField(
        "takes images",
        default=False,
        help_text="Whether the model takes image content parts in chat messages; "
        "if not, such requests are refused with a 400.",
    )
    input_price = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="USD per million prompt tokens.",
    )
    output_price = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="USD per million completion tokens.",
    )
    cached_input_price = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="USD per million prompt tokens served from the provider's prompt cache; "
        "empty means the input price.",
    )
    shortens_embeddings = models.BooleanField(
        "shortens embeddings",
        default=False,
        help_text="Whether the model's vectors keep their meaning when cut to their first "
        "dimensions (Matryoshka training, as EmbeddingGemma's); if so, /v1/embeddings takes "
        "`dimensions` and cuts and renormalizes them, else it is refused with a 400. "
        "The catalogue does not say it; set by hand.",
    )
    # Media endpoints are priced by what they make, not by tokens: the unit is the task's
    # (apikeys/usage.py UNIT_OF_TASK): an image, a second of audio heard, a character spoken,
    # a document ranked.
    unit_price = models.DecimalField(
        max_digits=16,
        decimal_places=10,
        null=True,
        blank=True,
        help_text="USD per unit of the model's task: per image (Text-to-Image), per audio "
        "second (speech recognition), per character (text-to-speech), per document "
        "(reranking). Filled by sync_models where the catalogue gives a price per audio "
        "minute.",
    )
    context_window = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Tokens of prompt and answer together the model can hold; bounds the "
        "default max_tokens.",
    )
    # Reasoning models (OpenAI's o-series and gpt-5, gpt-oss) spend their reasoning inside
    # the bound, so one default for every model is either too small for them or reserves
    # too much for the others (completions/providers/bounds.py).
    default_max_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Completion tokens sent and reserved when a chat names no maximum; "
        "empty: the gateway's DEFAULT_MAX_TOKENS. Raise it for reasoning models, whose "
        "reasoning counts in it. Bounded by the context window.",
    )
    # Workers AI's JSON Schemas of the model's request and answer (GET .../ai/models/schema),
    # read by completions/providers/workers_ai_schema.py. None: no schema known, and requests
    # are built as for any model of the provider.
    input_schema = models.JSONField(
        null=True,
        blank=True,
        help_text="The provider's JSON Schema of this model's request body; it decides "
        "which parameters are sent and their ranges. Filled by sync_models.",
    )
    output_schema = models.JSONField(
        null=True,
        blank=True,
        help_text="The provider's JSON Schema of this model's answer. Filled by sync_models.",
    )
    # The catalogue's properties as {property_id: value}: function_calling, reasoning,
    # vision, context_window, price, planned_deprecation_date, ...
    properties = models.JSONField(
        default=dict,
        blank=True,
        help_text="The catalogue's properties of the model, as the provider lists them.",
    )
    deprecation_date = models.DateField(
        null=True,
        blank=True,
        help_text="When the provider stops serving the model. Models past it are imported "
        "disabled.",
    )
    fallbacks = models.ManyToManyField(
        "self",
        through="ModelFallback",
        symmetrical=False,
        related_name="+",
        blank=True,
        help_text="Models tried in order when this one's provider fails before answering.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        if ModelAlias.objects.filter(name=self.name).exists():
            raise ValidationError({"name": "An alias already has this name."})
        if self.enabled and self.is_retired():
            raise ValidationError(
                {
                    "enabled": f"The provider retired this model on {self.deprecation_date}; "
                    "the gateway does not serve it. Clear the deprecation date to serve it "
                    "anyway (sync_models sets it again while the catalogue gives it)."
                }
            )

    @property
    def capabilities(self):
        generates_text = self.task == self.TEXT_GENERATION
        hears = self.task == self.SPEECH_RECOGNITION
        return {
            "chat": generates_text,
            "completions": generates_text,
            "embeddings": self.task == self.TEXT_EMBEDDINGS,
            "images": self.task == self.TEXT_TO_IMAGE,
            "transcriptions": hears,
            # Only a model whose request schema takes `task` ("translate" or "transcribe":
            # whisper-large-v3-turbo) translates; the older whisper only transcribes.
            "translations": hears and "task" in self._input_fields(),
            "speech": self.task == self.TEXT_TO_SPEECH,
            # Llama Guard is a Text Generation model in the catalogue, told apart by name:
            # no catalogue field says "safety classifier".
            "moderations": generates_text and "llama-guard" in self.name,
            # The catalogue's Text Classification task holds both rerankers (query and
            # contexts) and sentiment classifiers (distilbert-sst-2); its name tells them apart.
            "rerank": self.task == self.TEXT_CLASSIFICATION and "reranker" in self.name,
        }

    def _input_fields(self):
        """Return the top-level fields of the model's request schema (empty if unknown)."""
        fields = (self.input_schema or {}).get("properties")
        return fields if isinstance(fields, dict) else {}

    @property
    def features(self):
        """Return what the model takes beyond its task: tools, reasoning, images.

        None where the provider's catalogue said nothing of the model.
        """
        return {
            "function_calling": self.calls_functions,
            "reasoning": self.reasons,
            "vision": self.accepts_images,
        }

    @property
    def calls_functions(self):
        """Whether the catalogue says the model calls tools; None if it said nothing."""
        return self._catalogue_flag("function_calling")

    @property
    def reasons(self):
        """Whether the catalogue says the model reasons before answering; None if unknown."""
        return self._catalogue_flag("reasoning")

    def _catalogue_flag(self, property_id):
        # A catalogue lists a flag only when it holds ("true"), so one that lists the model's
        # properties without it says no; a model with no properties was never described.
        if not self.properties:
            return None
        return str(self.properties.get(property_id, "")).lower() == "true"

    def is_retired(self, today=None):
        """Return whether the model's deprecation date has come (today's date, UTC).

        The date counts from its first day, as Cloudflare's model pages mark a model
        deprecated once that day has begun.
        """
        if self.deprecation_date is None:
            return False
        return self.deprecation_date <= (today or timezone.now().date())


class ModelAlias(models.Model):
    """Another name for a model, such as gpt-4o-mini for a Cloudflare model."""

    name = models.CharField(max_length=200, unique=True)
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="aliases")

    class Meta:
        verbose_name_plural = "model aliases"
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        if Model.objects.filter(name=self.name).exists():
            raise ValidationError({"name": "A model already has this name."})


# OpenAI model names that clients default to, by the task of the model that can stand in
# for them; the admin's "usual OpenAI names" action aliases a model by them.
OPENAI_NAMES = {
    Model.TEXT_GENERATION: ["gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo", "gpt-4"],
    Model.TEXT_EMBEDDINGS: [
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
    ],
}


def unknown_model_names(names):
    """Return those of the names that are neither a model nor an alias, in their order."""
    known = set(Model.objects.filter(name__in=names).values_list("name", flat=True))
    known |= set(ModelAlias.objects.filter(name__in=names).values_list("name", flat=True))
    return [name for name in names if name not in known]


ECHO_DESCRIPTION = "Answers with the last user message; streams it word by word."


class ModelFallback(models.Model):
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="fallback_links")
    fallback = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["model", "fallback"], name="unique_fallback")
        ]

    def __str__(self):
        return f"{self.model} -> {self.fallback}"

    def clean(self):
        model = getattr(self, "model", None)
        fallback = getattr(self, "fallback", None)
        if model is None or fallback is None:
            return
        if fallback == model:
            raise ValidationError({"fallback": "A model cannot be its own fallback."})
        if model.task == Model.TEXT_EMBEDDINGS:
            raise ValidationError(
                {
                    "fallback": "Embedding models take no fallbacks: another model's vectors "
                    "live in another space."
                }
            )
        if fallback.task != model.task:
            raise ValidationError(
                {"fallback": f"A fallback must do what the model does ({model.task})."}
            )


def ensure_default_providers(**kwargs):
    """Create the echo model in development and a Cloudflare provider once it is configured."""
    if settings.ENVIRONMENT == "development":
        echo, _ = Provider.objects.get_or_create(name="echo", defaults={"kind": Provider.ECHO})
        Model.objects.get_or_create(
            name="echo",
            defaults={
                "provider": echo,
                "description": ECHO_DESCRIPTION,
            },
        )
    if settings.CLOUDFLARE_ACCOUNT_ID and settings.CLOUDFLARE_API_TOKEN:
        Provider.objects.get_or_create(name="cloudflare", defaults={"kind": Provider.CLOUDFLARE})


class StoredResponseQuerySet(models.QuerySet):
    def kept(self):
        """Return those younger than RESPONSES_RETENTION_DAYS."""
        return self.filter(created_at__gte=_retention_cutoff())

    def expired(self):
        """Return those RESPONSES_RETENTION_DAYS old or older, which clear_responses deletes."""
        return self.filter(created_at__lt=_retention_cutoff())


def _retention_cutoff():
    return timezone.now() - datetime.timedelta(days=settings.RESPONSES_RETENTION_DAYS)


class StoredResponse(models.Model):
    """A response of /v1/responses kept (store: true) so that a conversation can go on from
    it (previous_response_id) and the key that made it can read or delete it."""

    # "resp_" and 32 hex digits, as the view makes it.
    id = models.CharField(primary_key=True, max_length=64)
    api_key = models.ForeignKey(
        "apikeys.ApiKey", on_delete=models.CASCADE, related_name="stored_responses"
    )
    # The model name the response shows.
    model = models.CharField(max_length=200)
    # The conversation's input items up to this response, its previous responses' included
    # (and their instructions not, as OpenAI carries none over): continuing reads one row.
    input_items = models.JSONField()
    output_items = models.JSONField()
    # The Response object as answered, its usage included, for GET /v1/responses/{id}.
    body = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = StoredResponseQuerySet.as_manager()

    def __str__(self):
        return self.id
