"""What a key or a team has spent in a budget period, as budget alerts and the digest see it.

One function, so that the whole of alerts/ follows whatever the limits count by.
"""

from apikeys import spend


def spent(holder, period, now):
    """Return the USD a key or team (`holder`) spent in the budget period holding `now`
    (an aware datetime or epoch seconds): the spend the admin's budget bars show."""
    return spend.spent(holder, period, now)
