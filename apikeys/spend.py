"""What a key or a team had spent in a budget's period up to a given moment, read from the
usage rollups.

What a budget has spent *now* is apikeys/throttling.budget_status: the limit's own ledger,
which every reader of the current period shows (GET /v1/key, the x-budget-* headers, the
admin, the budget alerts). The ledger keeps the current period only, so a figure for a
moment past (the usage digest's last moment of the previous day or week) is summed here.
"""

from datetime import UTC, datetime, timedelta

from django.utils import timezone

from apikeys import periods
from apikeys.models import ApiKey, Team
from apikeys.rollups import usage_sums


def spent(holder, period, now=None):
    """Return the USD spent by a key or a team from the start of the period holding `now`
    until `now` (an aware datetime or epoch seconds; the current moment when None).

    Read from the daily and hourly rollups and the records of the partial hours
    (apikeys/rollups.usage_sums), so that a lifetime budget costs what its days hold, not
    its records; nothing made after `now` counts. A team's spend is that of the usage
    made under it, so a key moved to another team leaves its past spend with the team it
    had.
    """
    now = now or timezone.now()
    if not isinstance(now, datetime):
        # Epoch seconds, the limits' clock (apikeys/throttling.timer).
        now = datetime.fromtimestamp(now, UTC)
    since = periods.start(period, now)
    # `now` included: the span's end is exclusive.
    until = now + timedelta(microseconds=1)
    if isinstance(holder, Team):
        sums = usage_sums(team=holder, since=since, until=until)
    elif isinstance(holder, ApiKey):
        sums = usage_sums(api_key=holder, since=since, until=until)
    else:
        raise TypeError(f"Spend is kept for keys and teams, not {type(holder).__name__}")
    return sums["cost"]
