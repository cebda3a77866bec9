"""Budget alerts: each threshold of each budget, once per budget period, by e-mail and webhook.

After a usage record is written and its cost settled (apikeys/usage.py), `check_after(key)`
schedules a check and returns at once: the request never waits for it. The check reads what
the key and its team have spent in each period they have a budget for, as the limits count
it (apikeys/throttling.budget_status) and, for every threshold crossed
(AlertContacts.thresholds(), percent of the budget), inserts a BudgetAlert. The insert
decides who sends: its unique constraint lets one insert through, whichever process or task
gets there first, and only that one, holding the alert's claim, sends it
(alerts/delivery.py; send_pending_alerts sends what a process that died left pending).
Budgets of zero alert nothing: they refuse every request by design.

Who is told:
    a key's alert    the key's contact e-mails (else its team's), and its team's webhook
    a team's alert   the team's contact e-mails and webhook

A record of a key with no budget, in no team or in a team with none, schedules nothing: the
request's key comes with its team (ApiKeyManager), so this costs no query. Checks of one key
in one process are run one at a time, and start CHECK_INTERVAL_SECONDS apart at least: a
record written while its key is being checked, or within the interval after, asks for one
more check once the interval is over, so that a busy key costs one check a second, and the
last check sees the last record.
"""

import asyncio
import logging
import time
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from alerts.delivery import alert_sender
from alerts.models import BudgetAlert
from apikeys import periods
from apikeys.models import ApiKey, Team
from apikeys.throttling import budget_status
from gateway.db import off_the_request_thread

logger = logging.getLogger(__name__)

# Seconds between the starts of two checks of one key, at least. A check reloads the key and
# reads its and its team's budgets; a key writing hundreds of records a second pays that once
# a second, and an alert is sent at most this late after the record that crossed it.
CHECK_INTERVAL_SECONDS = 1.0
# The places of a budget (USD), as Limits and BudgetAlert store it.
CENTS = Decimal("0.01")


class BudgetAlerts:
    """Schedule checks of budgets and send the alerts they find.

    `timer` (seconds since the epoch) says which period is the current one, `clock` and
    `interval` space the checks of a key, and `sender` sends; all are class attributes for
    tests to replace.
    """

    timer = staticmethod(time.time)
    # What spaces the checks of a key (seconds, monotonic): not `timer`, which tests stop.
    clock = staticmethod(time.monotonic)
    interval = CHECK_INTERVAL_SECONDS
    sender = alert_sender

    def __init__(self):
        # Checks and deliveries under way, kept so that the event loop does not drop them.
        self._tasks = set()
        # Keys with a check waiting for its turn or running: {key id: whether a record came
        # since that check started}.
        self._checking = {}
        # When the last check of a key started (`clock`), until `interval` has passed.
        self._last_check = {}

    def check_after(self, key):
        """Check the budgets of the key and its team soon, without waiting for it."""
        if not _has_budgets(key):
            return
        if key.pk in self._checking:
            self._checking[key.pk] = True
            return
        self._checking[key.pk] = False
        self._spawn(self._check(key.pk))

    async def settled(self):
        """Wait until every check and delivery started so far has ended (for tests, exit)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coroutine):
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, key_id):
        try:
            while True:
                await self._wait_turn(key_id)
                # Records settled before this point are in this check; later ones ask for
                # the next.
                self._checking[key_id] = False
                started = self.clock()
                self._last_check[key_id] = started
                asyncio.get_running_loop().call_later(self.interval, self._forget, key_id, started)
                for alert, holder, team in await _crossed(key_id, self.timer()):
                    self._spawn(self.sender.send(alert, holder, team))
                if not self._checking[key_id]:
                    break
        except Exception:
            logger.exception("Checking the budgets of key %s for alerts failed", key_id)
        finally:
            del self._checking[key_id]

    async def _wait_turn(self, key_id):
        last = self._last_check.get(key_id)
        if last is not None:
            wait = last + self.interval - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)

    def _forget(self, key_id, started):
        # Past the interval, a key's last check no longer delays its next.
        if self._last_check.get(key_id) == started:
            del self._last_check[key_id]


@off_the_request_thread
def _crossed(key_id, now):
    """Record the thresholds the key and its team have newly crossed; return
    [(alert, holder, team)] for this caller to send."""
    key = ApiKey.objects.select_related("team").filter(pk=key_id).first()
    if key is None:
        return []
    found = []
    for holder in [key, key.team] if key.team else [key]:
        for alert in _crossed_by(holder, now):
            found.append((alert, holder, key.team))
    return found


def _has_budgets(key):
    """Tell whether the key or its team has a budget, from what the request loaded."""
    if key.budgets():
        return True
    if key.team_id is None:
        return False
    if not ApiKey.team.is_cached(key):
        # Not loaded with the key (the request path's keys always are): rather a check
        # than a query here on every record.
        return True
    return bool(key.team.budgets())


def _crossed_by(holder, now):
    scope = BudgetAlert.TEAM if isinstance(holder, Team) else BudgetAlert.KEY
    thresholds = holder.thresholds()
    for status in budget_status(holder, now):
        # The budget as set, to the cent, for the alert's record and payload: the limit
        # holds it in whole 10^-8 USD, so that a budget of cents comes back exact.
        period, budget, spend = status.period, status.limit.quantize(CENTS), status.spent
        if budget <= 0:
            continue
        crossed = [t for t in thresholds if spend * 100 >= budget * t]
        if not crossed:
            continue
        start = periods.start(period, now)
        sent = set(
            BudgetAlert.objects.filter(
                scope=scope, holder_id=holder.pk, period=period, period_start=start
            ).values_list("threshold", flat=True)
        )
        for threshold in crossed:
            if threshold in sent:
                continue
            try:
                with transaction.atomic():
                    alert = BudgetAlert.objects.create(
                        scope=scope,
                        holder_id=holder.pk,
                        holder_name=holder.name,
                        team=holder if scope == BudgetAlert.TEAM else holder.team,
                        period=period,
                        period_start=start,
                        period_end=periods.end(period, now),
                        threshold=threshold,
                        budget=budget,
                        spent=spend,
                        # Claimed by this process, which sends it now.
                        claimed_at=timezone.now(),
                        attempts=1,
                    )
            except IntegrityError:
                # Another process or task inserted it first: it sends.
                continue
            yield alert


budget_alerts = BudgetAlerts()
check_after = budget_alerts.check_after
