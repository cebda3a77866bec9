from django.db import models
from django.utils import timezone


class BudgetAlert(models.Model):
    """One threshold of one budget crossed in one period, and how it was sent.

    The row is inserted before anything is sent, and its unique constraint lets exactly one
    of the processes and tasks that see the threshold crossed together insert it: that
    one claims it (claimed_at) and sends. A process that dies before a channel's outcome is
    recorded leaves that channel pending; `manage.py send_pending_alerts` claims alerts
    left pending longer than its --older-than and sends what is left (alerts/claims.py),
    unless the alert's budget period is over: then its pending channels expire unsent.
    """

    KEY = "key"
    TEAM = "team"
    SCOPE_CHOICES = [(KEY, "API key"), (TEAM, "team")]
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    NONE = "none"
    EXPIRED = "expired"
    STATUS_CHOICES = [
        (PENDING, "pending"),
        (SENT, "sent"),
        (FAILED, "failed"),
        (NONE, "nowhere to send"),
        # Left pending until its budget period was over (alerts/delivery.py): too late.
        (EXPIRED, "period over, not sent"),
    ]

    scope = models.CharField(max_length=4, choices=SCOPE_CHOICES)
    # The key's or team's id; no foreign key, so that alerts outlive what they were about.
    holder_id = models.BigIntegerField()
    holder_name = models.CharField(max_length=100)
    # The team itself, or the key's team: whose members may read the alert.
    team = models.ForeignKey(
        "apikeys.Team",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="budget_alerts",
    )
    period = models.CharField(max_length=10)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField(null=True, blank=True)
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the budget.")
    budget = models.DecimalField(max_digits=12, decimal_places=2, help_text="USD")
    spent = models.DecimalField(
        max_digits=16, decimal_places=8, help_text="USD spent in the period when crossed"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    email_status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=PENDING)
    email_recipients = models.TextField(blank=True)
    webhook_status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=PENDING)
    webhook_attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="When a process last took on sending it."
    )
    attempts = models.PositiveSmallIntegerField(
        default=0,
        help_text="Times a process took on sending it: at once, then send_pending_alerts.",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "holder_id", "period", "period_start", "threshold"],
                name="one_alert_per_threshold_and_period",
            )
        ]

    def __str__(self):
        return f"{self.holder_name}: {self.threshold}% of the {self.period} budget"

    @classmethod
    def pending(cls):
        """Return the alerts with a channel not yet tried."""
        return cls.objects.filter(
            models.Q(email_status=cls.PENDING) | models.Q(webhook_status=cls.PENDING)
        )

    def describe_period(self):
        """Say which period: "day of 2026-11-30", "week from 2026-11-30", "lifetime"."""
        if self.period == "lifetime":
            return "lifetime"
        start = timezone.localtime(self.period_start, self.period_start.tzinfo)
        return f"{self.period} from {start:%Y-%m-%d}"


class DigestDelivery(models.Model):
    """One team's usage digest of one day or week (alerts/digest.py), sent once.

    Inserted before the mail is sent: its unique constraint lets one run of usage_digest
    through for each team and period, however many run at once or again later, and that
    run sends. A run that fails to send lets its claim go, so that the next run sends it;
    one that dies leaves the claim to go stale (alerts/claims.py). --force sends again.
    """

    PERIOD_CHOICES = [("day", "daily"), ("week", "weekly")]

    team = models.ForeignKey(
        "apikeys.Team", on_delete=models.CASCADE, related_name="digest_deliveries"
    )
    period = models.CharField(max_length=4, choices=PERIOD_CHOICES)
    period_start = models.DateTimeField()
    recipients = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="When a run last took on sending it."
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True, db_index=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-period_start", "team"]
        verbose_name_plural = "digest deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["team", "period", "period_start"], name="one_digest_per_team_and_period"
            )
        ]

    def __str__(self):
        return f"{self.team}: {self.get_period_display()} digest from {self.period_start:%Y-%m-%d}"
