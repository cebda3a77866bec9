import hashlib
import re
import secrets
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone

from alerts.validators import parse_emails, parse_thresholds, validate_emails, validate_thresholds
from gateway.db import off_the_request_thread
from gateway.encryption import EncryptedSecretField
from gateway.memo import MISSING, ChangeMark, TimedCache

# Keys recently looked up, by digest; forgotten by every process when a key is saved or
# deleted in any (key_changed(), connected in apikeys/apps.py).
keys_by_digest = TimedCache()
key_changes = ChangeMark("apikeys:keys-changed", on_change=keys_by_digest.clear)

SECRET_PREFIX = "sk-gw-"
# Characters of the secret kept in the clear so operators can tell keys apart.
VISIBLE_PREFIX_LENGTH = len(SECRET_PREFIX) + 6
RATE_PATTERN = re.compile(r"^(\d+)/([smhd])$")
# How stale last_used_at may get before a request writes it again, so that a busy key
# costs one UPDATE a minute rather than one per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def digest(secret):
    # The secret is 256 random bits, so a plain SHA-256 is as strong as a slow hash here
    # and does not depend on SECRET_KEY, which may be rotated.
    return hashlib.sha256(secret.encode()).hexdigest()


def key_changed(*args, **kwargs):
    """Forget the keys this process holds, and tell the others once the change is committed.

    Takes and ignores a signal's arguments.
    """
    keys_by_digest.clear()
    key_changes.publish_on_commit()


def refused_when():
    """Wait until every process refuses a key just revoked; say when they do (sync).

    "are now refused" once the change is seen everywhere; with no shared cache, or one that
    could not be told, the other processes refuse the key once they read it again.
    """
    if key_changes.settle():
        return "are now refused"
    if not key_changes.shared:
        why = "no cache is shared"
    elif key_changes.unpublished:
        why = "the change is published when its transaction commits"
    else:
        why = "the shared cache could not be told"
    return (
        f"are refused by every gateway process within {settings.REGISTRY_CACHE_SECONDS:g} "
        f"seconds (REGISTRY_CACHE_SECONDS: {why})"
    )


def validate_rate(value):
    match = RATE_PATTERN.match(value)
    if not match or int(match.group(1)) < 1:
        raise ValidationError(
            "Enter a rate as a count per unit: N/s, N/m, N/h or N/d, for example 100/h."
        )


def parse_model_names(text):
    """Return the model names in text separated by commas or new lines, each once, in order."""
    names = (name.strip() for name in re.split(r"[,\n]", text or ""))
    return list(dict.fromkeys(name for name in names if name))


def validate_model_list(value):
    if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
        raise ValidationError("Enter a list of model names.")


def new_secret():
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class SecretRotated(Exception):
    """A key's previous secret, sent after the grace period its rotation gave it."""

    def __init__(self, key):
        super().__init__(key.name)
        self.key = key


class ApiKeyManager(models.Manager):
    def create_key(self, *, name, **fields):
        """Create a key and return it with its secret, which is not stored anywhere."""
        secret = new_secret()
        key = self.model(name=name, prefix=secret[:VISIBLE_PREFIX_LENGTH], **fields)
        key.digest = digest(secret)
        key.counter_id = key.digest[:32]
        key.full_clean()
        key.save()
        return key, secret

    async def afor_secret(self, secret):
        """Return the key whose secret this is, or None.

        The secret may be the key's current one, or its previous one until the grace
        period of the last rotation ends; after that, raise SecretRotated.
        """
        if not secret.startswith(SECRET_PREFIX):
            return None
        # The lookup is by digest, so timing reveals nothing about the stored value; the
        # final compare_digest guards against a database collation that is not exact.
        wanted = digest(secret)
        await key_changes.follow()
        key = keys_by_digest.get(wanted)
        if key is MISSING:
            generation = keys_by_digest.generation
            key = await _find_key(wanted)
            # Unknown secrets are kept too (as None): a client that retries a wrong key
            # costs one query per REGISTRY_CACHE_SECONDS, not one per request. A secret is
            # random, so none is asked for before its key exists; a key saved meanwhile
            # changes the generation, and the answer read before it is not kept.
            keys_by_digest.set(wanted, key, generation)
        return None if key is None else key.answering(wanted)

    def cached_for_secret(self, secret):
        """Return what this process holds for a secret without asking the database: its
        key, None if it is known to be no key's, or MISSING; raise SecretRotated as
        afor_secret does."""
        if not secret.startswith(SECRET_PREFIX):
            return None
        wanted = digest(secret)
        key = keys_by_digest.get(wanted)
        if key is MISSING or key is None:
            return key
        return key.answering(wanted)


@off_the_request_thread
def _find_key(wanted):
    # Both columns are unique, and a digest is in at most one of them: a rotation's new
    # secret is random, never one a key had before. With its team, whose limits every
    # request of the key is held to too.
    return (
        ApiKey.objects.select_related("team")
        .filter(models.Q(digest=wanted) | models.Q(previous_digest=wanted))
        .first()
    )


def _budget(period):
    return models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=f"Spend allowed {period} (LIMITS_TIME_ZONE), in USD; empty means no limit.",
    )


class Limits(models.Model):
    """The token windows and budgets that a key and a team each may have.

    A key's request must fit its own limits and, when the key belongs to a team, the
    team's too. Budgets are calendar-aligned in settings.LIMITS_TIME_ZONE (apikeys/periods.py).
    """

    # Budget field of each period, in apikeys/periods.PERIODS order.
    BUDGET_FIELDS = {
        "day": "daily_budget",
        "week": "weekly_budget",
        "month": "monthly_budget",
        "lifetime": "lifetime_budget",
    }

    tokens_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Prompt and completion tokens allowed per minute."
    )
    tokens_per_day = models.PositiveIntegerField(
        null=True, blank=True, help_text="Prompt and completion tokens allowed per day."
    )
    daily_budget = _budget("per day")
    weekly_budget = _budget("per week (from Monday)")
    monthly_budget = _budget("per calendar month")
    lifetime_budget = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Spend allowed in all (prepaid use), in USD; empty means no limit.",
    )

    class Meta:
        abstract = True

    def budgets(self):
        """Return {period: Decimal USD} for the budgets that are set."""
        return {
            period: getattr(self, field)
            for period, field in self.BUDGET_FIELDS.items()
            if getattr(self, field) is not None
        }

    def describe_limits(self):
        """Describe the token windows and budgets: 2,000 tokens/min, 25.00 USD/month."""
        limits = []
        if self.tokens_per_minute is not None:
            limits.append(f"{self.tokens_per_minute:,} tokens/min")
        if self.tokens_per_day is not None:
            limits.append(f"{self.tokens_per_day:,} tokens/day")
        for period, budget in self.budgets().items():
            limits.append(f"{budget:.2f} USD" + ("" if period == "lifetime" else f"/{period}"))
        return ", ".join(limits)


class AlertContacts(models.Model):
    """Who is told when a budget runs low, and at which percentages (alerts/)."""

    contact_emails = models.TextField(
        "contact e-mails",
        blank=True,
        validators=[validate_emails],
        help_text="Addresses that receive budget alerts, separated by commas or new lines.",
    )
    alert_thresholds = models.CharField(
        max_length=100,
        blank=True,
        validators=[validate_thresholds],
        help_text="Percentages of each budget that send an alert, such as 50,80,95,100; "
        "empty: BUDGET_ALERT_THRESHOLDS.",
    )

    class Meta:
        abstract = True

    def contacts(self):
        """Return the contact e-mail addresses, each once, in order."""
        return parse_emails(self.contact_emails)

    def thresholds(self):
        """Return the percentages that send an alert: this holder's, else the default."""
        return parse_thresholds(self.alert_thresholds or settings.BUDGET_ALERT_THRESHOLDS)


class Team(Limits, AlertContacts):
    """Keys that share limits and budgets, and the Django users who manage them."""

    name = models.CharField(max_length=100, unique=True)
    members = models.ManyToManyField(
        get_user_model(),
        blank=True,
        related_name="teams",
        help_text="Users who may manage this team's keys and read its usage in the admin.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    webhook_url = models.URLField(
        "webhook URL",
        max_length=500,
        blank=True,
        help_text="Where budget alerts of the team and its keys are posted as signed JSON "
        '(README, "Budget alerts"); empty: none.',
    )
    webhook_secret = EncryptedSecretField(
        blank=True,
        help_text="The secret the webhook's signature is made with (HMAC-SHA256), such as "
        "the output of openssl rand -hex 32. Never shown again; leave empty to keep the "
        "current one.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        super().clean()
        if self.webhook_url and not self.webhook_secret:
            raise ValidationError(
                {"webhook_secret": "A webhook needs a secret to sign its alerts with."}
            )


class ApiKey(Limits, AlertContacts):
    READ = "read"
    READ_WRITE = "read-write"
    PERMISSION_CHOICES = [
        (READ, "read: list and read models"),
        (READ_WRITE, "read-write: everything"),
    ]

    name = models.CharField(max_length=100, unique=True)
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        # A team's budget caps its keys: deleting it must not set them free.
        on_delete=models.PROTECT,
        related_name="keys",
    )
    prefix = models.CharField(max_length=32, editable=False, db_index=True)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # Names the key's rate and token counters (apikeys/throttling.py): the first digest's
    # start, kept through rotations so that a new secret does not start the windows afresh.
    counter_id = models.CharField(max_length=32, editable=False, blank=True)
    # The secret the last rotation replaced, accepted until previous_valid_until and then
    # refused with a message saying the key was rotated; null if never rotated.
    previous_digest = models.CharField(
        max_length=64, unique=True, null=True, blank=True, editable=False
    )
    previous_valid_until = models.DateTimeField(null=True, blank=True, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    rotate_every_days = models.PositiveIntegerField(
        "rotate every (days)",
        null=True,
        blank=True,
        help_text="Rotation policy: the key is listed as due for rotation this many days "
        "after it was created or last rotated; empty means no policy.",
    )
    permissions = models.CharField(max_length=16, choices=PERMISSION_CHOICES, default=READ_WRITE)
    is_active = models.BooleanField("active", default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_model_list],
        help_text="Model names or aliases this key may use; empty means every model.",
    )
    rate_limit = models.CharField(
        max_length=20,
        default="100/h",
        validators=[validate_rate],
        help_text="Requests allowed per second, minute, hour or day: N/s, N/m, N/h or N/d.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyManager()

    # Injectable, so that tests control when a rotated secret's grace period ends.
    timer = staticmethod(time.time)

    class Meta:
        verbose_name = "API key"
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def is_expired(self):
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def state(self):
        """Return active, disabled (switched off, can be switched on), revoked or expired."""
        if self.revoked_at is not None:
            return "revoked"
        if not self.is_active:
            return "disabled"
        if self.is_expired:
            return "expired"
        return "active"

    def describe_limits(self):
        """Describe the key's limits: 5/m, 2,000 tokens/min, 100,000 tokens/day, 25.00 USD/month."""
        return ", ".join(filter(None, [self.rate_limit, super().describe_limits()]))

    @property
    def can_write(self):
        return self.permissions == self.READ_WRITE

    def allows_model(self, *names):
        """Tell whether any of these names (a model's id or an alias) is open to this key."""
        if not self.allowed_models:
            return True
        return any(name in self.allowed_models for name in names)

    @classmethod
    def now(cls):
        return datetime.fromtimestamp(cls.timer(), UTC)

    def answering(self, wanted):
        """Return this key if `wanted` (a digest) is its secret's, None if it is neither of
        its secrets'; raise SecretRotated for its previous secret past the grace period.

        Read on every request, also of a key held in keys_by_digest: the key held is the
        same until it changes, the instant is not.
        """
        if secrets.compare_digest(self.digest, wanted):
            return self
        if self.previous_digest is None or not secrets.compare_digest(self.previous_digest, wanted):
            return None
        if self.previous_valid_until is not None and self.now() < self.previous_valid_until:
            return self
        raise SecretRotated(self)

    def rotate(self, grace):
        """Give the key a new secret and return it; the current one keeps working for
        `grace` (a timedelta, 0 for none).

        The key keeps its row (name, limits, team, usage). A secret replaced by an earlier
        rotation is forgotten, even inside its grace period: only one previous secret is
        kept. The secret is returned, never stored.
        """
        if self.revoked_at is not None:
            raise ValidationError("A revoked key cannot be rotated.")
        secret = new_secret()
        now = self.now()
        # A row made without create_key (by hand, or in a test) names its counters by its
        # digest until now: they keep that name.
        self.counter_id = self.counter_id or self.digest[:32]
        self.previous_digest = self.digest
        self.previous_valid_until = now + grace
        self.rotated_at = now
        self.digest = digest(secret)
        self.prefix = secret[:VISIBLE_PREFIX_LENGTH]
        self.save(
            update_fields=[
                "counter_id",
                "previous_digest",
                "previous_valid_until",
                "rotated_at",
                "digest",
                "prefix",
            ]
        )
        return secret

    @property
    def previous_secret_works(self):
        """Tell whether the secret the last rotation replaced is still accepted."""
        return self.previous_valid_until is not None and self.now() < self.previous_valid_until

    @property
    def rotation_due_at(self):
        """Return when the rotation policy wants the key rotated, or None if it has none."""
        if self.rotate_every_days is None:
            return None
        return (self.rotated_at or self.created_at) + timedelta(days=self.rotate_every_days)

    @property
    def rotation_due(self):
        """Tell whether the policy's day has come for a key still in use (not revoked)."""
        due_at = self.rotation_due_at
        return self.revoked_at is None and due_at is not None and due_at <= self.now()

    def revoke(self):
        self.is_active = False
        self.revoked_at = timezone.now()
        self.save(update_fields=["is_active", "revoked_at"])

    def touch(self):
        """Record that the key was used, at most once per LAST_USED_RESOLUTION.

        The usage writer's thread makes the UPDATE; the request does not wait for it.
        """
        from apikeys.writer import writer

        now = timezone.now()
        if self.last_used_at is None or now - self.last_used_at >= LAST_USED_RESOLUTION:
            self.last_used_at = now
            writer.touch(self.pk, now)


class UsageRecord(models.Model):
    OK = "ok"
    CLIENT_ERROR = "client_error"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_CLOSED = "client_closed"
    GATEWAY_ERROR = "gateway_error"
    TOKENS = "tokens"
    IMAGES = "images"
    AUDIO_SECONDS = "audio_seconds"
    CHARACTERS = "characters"
    DOCUMENTS = "documents"
    UNIT_CHOICES = [
        (TOKENS, "tokens"),
        (IMAGES, "images"),
        (AUDIO_SECONDS, "audio seconds"),
        (CHARACTERS, "characters"),
        (DOCUMENTS, "documents"),
    ]
    STATUS_CHOICES = [
        (OK, "ok"),
        (CLIENT_ERROR, "refused by the provider as invalid"),
        (UPSTREAM_ERROR, "provider failed"),
        (CLIENT_CLOSED, "client closed the stream"),
        (GATEWAY_ERROR, "gateway failed"),
    ]

    api_key = models.ForeignKey(
        ApiKey, null=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    # The key's name, kept so that records stay readable after the key is deleted.
    key_name = models.CharField(max_length=100)
    # The key's team when the request was made; a key moved later leaves its past here.
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    # The model that answered (a fallback, if the requested one failed), and the name the
    # client asked for (an alias, say).
    model = models.CharField(max_length=200, db_index=True)
    requested_model = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    endpoint = models.CharField(max_length=100)
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=OK)
    http_status = models.PositiveSmallIntegerField(default=200)
    error = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    # Of the prompt tokens, those the provider served from its prompt cache (priced at the
    # model's cached input price).
    cached_tokens = models.PositiveIntegerField(default=0)
    # Whether the token counts are the gateway's estimate (the provider reported none).
    tokens_estimated = models.BooleanField(default=False)
    # What the request is priced by, and how many: tokens for text, else the media
    # endpoint's own unit (the model's unit_price is per one of them).
    units = models.PositiveIntegerField(default=0)
    unit = models.CharField(max_length=20, choices=UNIT_CHOICES, default=TOKENS)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0, help_text="USD")
    latency_ms = models.PositiveIntegerField(default=0)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=64, db_index=True)
    # A fallback candidate that failed after reading the prompt (UsageMeter.attempt_failed),
    # recorded under the request's id beside the request's own record: its tokens and cost
    # count, but it is not a request of the client's, nor an error of one (apikeys/rollups.py
    # sums). A default in the database too, for rows written by SQL (bench/usage.py).
    attempt = models.BooleanField(
        default=False,
        db_default=False,
        help_text="A fallback candidate that failed: its tokens and cost count, not as a request",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["api_key", "created_at"]),
            # The limits of a team sum its keys' records of the current hour.
            models.Index(fields=["team", "created_at"], name="apikeys_usage_team_time"),
        ]

    def __str__(self):
        return f"{self.request_id} {self.model} {self.status}"


class RollupSums(models.Model):
    """The group and the sums of a usage rollup row (UsageRollup, UsageDayRollup)."""

    # No database constraint and nothing done when the key or team is deleted: a rollup row
    # keeps the id it was written with, so that deleting a key never merges (or collides
    # with) another row of the same hour. Reports go by key_name, kept as recorded.
    api_key = models.ForeignKey(
        ApiKey,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    key_name = models.CharField(max_length=100)
    team = models.ForeignKey(
        Team,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    model = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=UsageRecord.STATUS_CHOICES)
    unit = models.CharField(max_length=20, choices=UsageRecord.UNIT_CHOICES)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    units = models.BigIntegerField(default=0)
    # USD, to the 10^-8 of UsageRecord.cost; room for the sum of a day's records.
    cost = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    latency_ms = models.BigIntegerField(default=0)
    # Sum and count of time_to_first_token_ms over the records that have one.
    first_token_ms = models.BigIntegerField(default=0)
    first_token_count = models.BigIntegerField(default=0)

    class Meta:
        abstract = True

    @staticmethod
    def group_constraint(time, name):
        """The unique constraint on a rollup's group: the target of the writers' upsert.
        NULL is not equal to NULL in a unique index, so a missing key or team counts as 0."""
        return models.UniqueConstraint(
            time,
            Coalesce("api_key", 0),
            "key_name",
            Coalesce("team", 0),
            "model",
            "endpoint",
            "status",
            "unit",
            name=name,
        )

    @staticmethod
    def time_indexes(time, name):
        """The indexes a report filtered by key, team or model reads a range of `time` by."""
        return [
            models.Index(fields=[field, time], name=name.format(label))
            for field, label in [("api_key", "key"), ("team", "team"), ("model", "model")]
        ]


class UsageRollup(RollupSums):
    """The usage records of one UTC hour summed per key, team, model, endpoint, status and
    unit (apikeys/rollups.py); what reports and the limits' sums read.

    Written with its records, in the same transaction, by an upsert that adds to the sums,
    so that writers in several processes keep it exact; `manage.py rebuild_rollups`
    recomputes it from the records that are kept.
    """

    # The start of the UTC hour.
    hour = models.DateTimeField()

    class Meta:
        constraints = [RollupSums.group_constraint("hour", "apikeys_rollup_group")]
        indexes = RollupSums.time_indexes("hour", "apikeys_rollup_{}_hour")

    def __str__(self):
        return f"{self.hour:%Y-%m-%d %H}h {self.key_name} {self.model} {self.status}"


class UsageDayRollup(RollupSums):
    """The same sums per UTC day: what a period of more than a few days reads for its whole
    days, a row per group a day rather than one an hour (apikeys/rollups.py).

    Written with the hourly rows, in the same transaction and by the same kind of upsert;
    `manage.py rebuild_rollups` recomputes it from the hourly rows.
    """

    # The start of the UTC day (midnight).
    day = models.DateTimeField()

    class Meta:
        constraints = [RollupSums.group_constraint("day", "apikeys_day_rollup_group")]
        indexes = RollupSums.time_indexes("day", "apikeys_dayrollup_{}_day")

    def __str__(self):
        return f"{self.day:%Y-%m-%d} {self.key_name} {self.model} {self.status}"


class UsageReport(UsageRecord):
    """The admin's usage report (apikeys/admin.py): listed in the admin, no table of its own."""

    class Meta:
        proxy = True
        verbose_name = "usage report"
        verbose_name_plural = "usage report"
        # Its page is read by whoever may view usage records (UsageReportAdmin); the
        # permissions a proxy model would get are not needed.
        default_permissions = ()
