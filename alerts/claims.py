"""Claims: which one of several processes sends a recorded alert or digest.

A row to send (BudgetAlert, DigestDelivery) carries `claimed_at` and `attempts`. Whoever
records it claims it in the same insert; a process that finds it later takes it over only
while it is unsent and its claim is older than the caller's `stale_before`: the process
holding the claim has then died, or sending failed and let the claim go (claimed_at null).

The takeover is one conditional UPDATE, autocommitted, the same on both databases. On
PostgreSQL (READ COMMITTED), a second UPDATE of a row another transaction is updating waits
for it to commit, then evaluates its WHERE clause again against the row as committed
(PostgreSQL's manual, 13.2.1), finds the fresh claim and changes nothing; SQLite runs one
writer at a time. Either way exactly one of the processes that try at once updates the row,
and no transaction stays open while anything is sent. The trade-off: a process that sends
and dies before recording it leaves the row unsent, and the next claim sends it again.
"""

from django.db.models import F, Q


def claimable(unsent, stale_before):
    """Return the rows of the queryset `unsent` (the rows still to send) whose claim is
    older than `stale_before` or was let go: those a caller may take over."""
    return unsent.filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale_before))


def claim(unsent, pk, now, stale_before):
    """Take over the row `pk` of the queryset `unsent` (the rows still to send) when its
    claim is older than `stale_before` or let go; return whether this caller got it."""
    taken = (
        claimable(unsent, stale_before)
        .filter(pk=pk)
        .update(claimed_at=now, attempts=F("attempts") + 1)
    )
    return taken == 1
