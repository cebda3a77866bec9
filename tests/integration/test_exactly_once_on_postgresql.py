"""Budget alerts left pending and usage digests, sent once by commands run at the same time
in separate processes on one PostgreSQL database, as timers on two machines would run them.

Always on PostgreSQL: when the test run itself is on SQLite, the project's scripts/services
starts it on loopback (as tests/integration/test_multiprocess.py does).
"""

import subprocess
import sys
from collections import Counter

import pytest

from tests.integration.test_multiprocess import monkeypatch_module, production_stack  # noqa: F401
from tests.live_server import ROOT, Database, gateway_env, migrate_and_run
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "whsec-test-0b7d41c29e5f8a36"
ALERTS = 8
SWEEPS = 3

SETUP = """
from datetime import timedelta
from decimal import Decimal
from django.utils import timezone
from alerts.models import BudgetAlert
from apikeys import periods
from apikeys.models import ApiKey, Team
from apikeys.writer import DatabaseStore

team = Team.objects.create(
    name="acme", contact_emails="ops@acme.test", webhook_url="{url}", webhook_secret="{secret}"
)
key, _ = ApiKey.objects.create_key(name="dave", team=team)
now = timezone.now()
# Alerts as a gateway process leaves them when it stops between recording and sending.
for threshold in range(1, {alerts} + 1):
    BudgetAlert.objects.create(
        scope="team", holder_id=team.pk, holder_name="acme", team=team, period="day",
        period_start=periods.start("day", now), period_end=periods.end("day", now),
        threshold=threshold, budget=Decimal("10"), spent=Decimal("5"),
        claimed_at=now - timedelta(hours=1), attempts=1,
    )
# One left pending before alerts/0002 (never claimed), of a day long over: sent by none.
last_week = periods.start("day", now) - timedelta(days=7)
BudgetAlert.objects.create(
    scope="team", holder_id=team.pk, holder_name="acme", team=team, period="day",
    period_start=last_week, period_end=periods.end("day", last_week), threshold=100,
    budget=Decimal("10"), spent=Decimal("10"),
)
# Through the usage writer's store, which adds the rollups the digest reads.
DatabaseStore().add_one(dict(
    api_key=key, key_name="dave", team=team, model="echo", endpoint="chat.completions",
    total_tokens=10, cost=Decimal("1.00"), request_id="req_yesterday",
    created_at=periods.start("day", now) - timedelta(hours=12),
))
"""


@pytest.fixture
def receiver():
    with WebhookReceiver(SECRET) as server:
        yield server


@pytest.fixture
def database(production_stack, tmp_path, receiver):  # noqa: F811
    database = Database(tmp_path, migrated=True)
    assert database.postgres
    env = gateway_env(
        database,
        EMAIL_URL="console://",
        BUDGET_ALERT_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
        BUDGET_ALERT_WEBHOOK_BACKOFF="0.01",
    )
    try:
        migrate_and_run(env, SETUP.format(url=receiver.url, secret=SECRET, alerts=ALERTS))
        yield database, env
    finally:
        database.drop()


def run_at_once(env, *args, count):
    """Start `count` management commands together; return their outputs once all ended."""
    command = [sys.executable, str(ROOT / "manage.py"), *args]
    processes = [
        subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * count, outputs
    return [out for out, _ in outputs]


def test_sweeps_run_at_once_send_each_pending_alert_once(database, receiver):
    database, env = database
    # Slow answers, so that every sweep is sending while the others are.
    receiver.delay = 0.3

    outputs = run_at_once(env, "send_pending_alerts", count=SWEEPS)

    posted = Counter(delivery["json"]["id"] for delivery in receiver.deliveries)
    assert len(posted) == ALERTS
    assert set(posted.values()) == {1}
    mails = Counter(
        line for out in outputs for line in out.splitlines() if line.startswith("Subject: ")
    )
    assert len(mails) == ALERTS
    assert set(mails.values()) == {1}
    rows = database.rows(
        "SELECT threshold, email_status, webhook_status, attempts, error FROM alerts_budgetalert"
    )
    current = [r for r in rows if r["threshold"] <= ALERTS]
    assert {(r["email_status"], r["webhook_status"], r["attempts"]) for r in current} == {
        ("sent", "sent", 2)
    }
    [over] = [r for r in rows if r["threshold"] > ALERTS]
    assert (over["email_status"], over["webhook_status"], over["attempts"]) == (
        "expired",
        "expired",
        0,
    )
    assert over["error"].count("budget period had ended") == 1


def test_digests_run_at_once_send_each_teams_digest_once(database):
    database, env = database

    outputs = run_at_once(env, "usage_digest", "--daily", count=2)

    subjects = [
        line for out in outputs for line in out.splitlines() if line.startswith("Subject: ")
    ]
    assert len(subjects) == 1
    assert subjects[0].startswith("Subject: Usage of team acme on ")
    [row] = database.rows("SELECT sent_at, attempts FROM alerts_digestdelivery")
    assert row["sent_at"] is not None
    assert row["attempts"] == 1
