"""What a key or a team has spent in a budget's period, read from the usage rollups.

The records are what was billed; apikeys/throttling.py may know of spend not yet written
by the usage writer (a few seconds behind) or reserved by requests still running, so a
figure from here can lag what the limit goes by.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.utils import timezone

from apikeys import periods
from apikeys.models import ApiKey, Team
from apikeys.rollups import usage_sums


def spent(holder, period, now=None):
    """Return the USD spent by a key or a team since the start of the period holding now.

    Read from the hourly rollups and the records of the hour under way
    (apikeys/rollups.usage_sums), so that a lifetime budget costs what its hours hold, not
    its records. A team's spend is that of the usage made under it, so a key moved to
    another team leaves its past spend with the team it had.
    """
    now = now or timezone.now()
    if not isinstance(now, datetime):
        # Epoch seconds, the limits' clock (apikeys/throttling.timer).
        now = datetime.fromtimestamp(now, UTC)
    if isinstance(holder, Team):
        sums = usage_sums(team=holder, since=periods.start(period, now), now=now)
    elif isinstance(holder, ApiKey):
        sums = usage_sums(api_key=holder, since=periods.start(period, now), now=now)
    else:
        raise TypeError(f"Spend is kept for keys and teams, not {type(holder).__name__}")
    return sums["cost"]


@dataclass
class BudgetUse:
    """One budget of a key or a team, and what its current period has used of it."""

    period: str
    budget: Decimal
    spent: Decimal
    # The instant the period starts afresh, in settings.LIMITS_TIME_ZONE, and the seconds
    # until then; None for lifetime.
    resets_at: datetime | None
    resets_in: float | None

    LABELS = {"day": "Daily", "week": "Weekly", "month": "Monthly", "lifetime": "Lifetime"}
    # Shares of a budget past which its bar turns amber, then red (<meter>'s low and high).
    WARN_SHARE = Decimal("0.75")
    ALARM_SHARE = Decimal("0.9")

    @property
    def label(self):
        return self.LABELS[self.period]

    @property
    def left(self):
        return max(self.budget - self.spent, Decimal(0))

    @property
    def percent(self):
        """Percent of the budget used, whole, capped at 100 so that a bar stays drawable."""
        if self.budget <= 0:
            return 100
        return min(int(100 * self.spent / self.budget), 100)

    @property
    def warn_at(self):
        return self.budget * self.WARN_SHARE

    @property
    def alarm_at(self):
        return self.budget * self.ALARM_SHARE

    @property
    def exceeded(self):
        return self.spent >= self.budget


def budget_uses(holder, now=None):
    """Return a BudgetUse for each budget the key or team has set, in periods.PERIODS order."""
    now = now or timezone.now()
    uses = []
    for period, budget in holder.budgets().items():
        resets_at = periods.end(period, now)
        resets_in = (resets_at - now).total_seconds() if resets_at else None
        uses.append(BudgetUse(period, budget, spent(holder, period, now), resets_at, resets_in))
    return uses
