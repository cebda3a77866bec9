"""What a key or a team has spent in a budget period, as budget alerts and the digest see it.

One function, so that the whole of alerts/ follows whatever the limits count by.
"""

from decimal import Decimal

from django.db.models import Sum

from apikeys import periods
from apikeys.models import Team, UsageRecord


def spent(holder, period, now):
    """Return the USD a key or team (`holder`) spent in the budget period holding `now`
    (an aware datetime or epoch seconds)."""
    records = UsageRecord.objects.filter(created_at__gte=periods.start(period, now))
    end = periods.end(period, now)
    if end is not None:
        records = records.filter(created_at__lt=end)
    if isinstance(holder, Team):
        records = records.filter(team_id=holder.pk)
    else:
        records = records.filter(api_key_id=holder.pk)
    return records.aggregate(spent=Sum("cost"))["spent"] or Decimal(0)
