"""Usage at scale on PostgreSQL: rollups stay exact under writers in several processes, and
no query of the reports, the key page, the CSV export or the limits reads the whole usage
record table (EXPLAIN, over enough rows that the planner weighs its indexes).

Always on PostgreSQL: when the test run itself is on SQLite, scripts/services starts it on
loopback (the production_stack fixture of test_multiprocess.py).
"""

import json
import subprocess
import sys

import psycopg
import pytest

from tests.integration.test_multiprocess import monkeypatch_module, production_stack  # noqa: F401
from tests.live_server import ROOT, Database, gateway_env, manage, migrate_and_run

pytestmark = pytest.mark.integration

# Records in the table the plans are read over (90 days): production holds more, but an
# hour of 100,000 records over 90 days is already few enough for the planner to use an index.
EXPLAIN_ROWS = 100_000
WRITERS = 4
BATCHES = 15
PER_BATCH = 40

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, Provider

provider = Provider.objects.create(name="p", kind="openai", base_url="http://127.0.0.1:9")
for name in ["model-a", "model-b", "model-c"]:
    Model.objects.create(name=name, provider=provider)
for number in range(20):
    ApiKey.objects.create_key(name=f"key-{number}")
"""

# Each writer process writes batches of records of the same few hours, keys and models, so
# that the writers add to the same rollup rows at the same moments.
WRITE = """
import os, random
from datetime import timedelta
from decimal import Decimal
from django.utils import timezone
from apikeys.models import ApiKey
from apikeys.writer import DatabaseStore

seed = int(os.environ["WRITER_SEED"])
chance = random.Random(seed)
keys = list(ApiKey.objects.order_by("id")[:2])
store = DatabaseStore()
now = timezone.now()
for batch in range({batches}):
    store.add([
        dict(
            api_key=key, key_name=key.name, model=chance.choice(["model-a", "model-b"]),
            endpoint="chat.completions",
            status=chance.choice(["ok", "ok", "upstream_error"]),
            prompt_tokens=chance.randrange(1000), completion_tokens=7, total_tokens=0,
            cost=Decimal(chance.randrange(10**6)) / 10**8, latency_ms=chance.randrange(900),
            request_id=f"w{{seed}}-{{batch}}-{{n}}",
            created_at=now - timedelta(minutes=chance.randrange(150)),
        )
        for n in range({per_batch})
        for key in [chance.choice(keys)]
    ])
"""

GROUPED = """
SELECT {hour} AS hour, key_name, model, status, {sums}
FROM {table} GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
RECORD_SUMS = (
    "count(*) AS requests, sum(prompt_tokens) AS prompt_tokens, sum(cost) AS cost, "
    "sum(latency_ms) AS latency_ms"
)
ROLLUP_SUMS = (
    "sum(requests) AS requests, sum(prompt_tokens) AS prompt_tokens, sum(cost) AS cost, "
    "sum(latency_ms) AS latency_ms"
)

# Fills the table with EXPLAIN_ROWS records over 90 days in one statement, adds their
# rollups, and reads the plans of every query that the pages and the limits run.
PLANS = """
import json
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from apikeys import rollups
from apikeys.models import ApiKey

keys = list(ApiKey.objects.order_by("id"))
ids = ",".join(str(key.id) for key in keys)
names = ",".join("'" + key.name + "'" for key in keys)
with connection.cursor() as cursor:
    # No autovacuum worker, which the test's database could not be dropped under (it
    # belongs to the superuser); ANALYZE below does what the plans need.
    for table in ["apikeys_usagerecord", "apikeys_usagerollup", "apikeys_usagedayrollup"]:
        cursor.execute(f"ALTER TABLE {{table}} SET (autovacuum_enabled = false)")
    cursor.execute(f'''
        INSERT INTO apikeys_usagerecord (api_key_id, key_name, model, requested_model, provider,
            endpoint, stream, status, http_status, error, prompt_tokens, completion_tokens,
            total_tokens, cached_tokens, tokens_estimated, units, unit, cost, latency_ms,
            request_id, created_at)
        SELECT (ARRAY[{{ids}}])[1 + i % {{len(keys)}}], (ARRAY[{{names}}])[1 + i % {{len(keys)}}],
            (ARRAY['model-a','model-b','model-c'])[1 + i % 3], '', 'p', 'chat.completions',
            false, CASE WHEN i % 23 = 0 THEN 'upstream_error' ELSE 'ok' END, 200, '',
            i % 900, i % 300, i % 900 + i % 300, 0, false, 0, 'tokens', (i % 1000) / 1e6,
            i % 2000, 'req-' || i, now() - i * interval '90 days' / {rows}
        FROM generate_series(1, {rows}) AS i
    ''')
rollups.rebuild()
with connection.cursor() as cursor:
    cursor.execute("ANALYZE apikeys_usagerecord")
    cursor.execute("ANALYZE apikeys_usagerollup")
    cursor.execute("ANALYZE apikeys_usagedayrollup")

settings.ALLOWED_HOSTS.append("testserver")
admin = User.objects.create_superuser("operator", "operator@example.com", "unused-password")
client = Client()
client.force_login(admin)
key = keys[3]
pages = [
    "/admin/apikeys/usagereport/?period=24h",
    "/admin/apikeys/usagereport/?period=7d",
    "/admin/apikeys/usagereport/?period=30d",
    f"/admin/apikeys/usagereport/?period=30d&key={{key.pk}}",
    "/admin/apikeys/usagereport/?period=7d&model=model-b",
    "/admin/apikeys/usagereport/?period=custom&start=2020-01-01&end=2020-12-31",
    "/admin/apikeys/usagereport/csv/?period=30d",
    f"/admin/apikeys/apikey/{{key.pk}}/change/",
]
queries = []
for page in pages:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(page).status_code == 200, page
    queries += [query["sql"] for query in captured.captured_queries]
with CaptureQueriesContext(connection) as captured:
    since = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    rollups.usage_sums(api_key=key, since=since)
    rollups.usage_sums(api_key=key, since=since.replace(day=1))
    rollups.usage_sums(team=1, since=since)
queries += [query["sql"] for query in captured.captured_queries]
plans = []
with connection.cursor() as cursor:
    for sql in queries:
        if "apikeys_usage" not in sql or not sql.lstrip().upper().startswith("SELECT"):
            continue
        cursor.execute("EXPLAIN " + sql)
        plans.append([sql, "\\n".join(row[0] for row in cursor.fetchall())])
print(json.dumps(plans))
"""


@pytest.fixture(scope="module")
def postgres(production_stack, tmp_path_factory):  # noqa: F811
    database = Database(tmp_path_factory.mktemp("usage-scale"), migrated=True)
    assert database.postgres
    env = gateway_env(database)
    try:
        migrate_and_run(env, SETUP)
        yield database, env
    finally:
        database.drop()


def _grouped(database, by="hour"):
    """The records and the rollups of one level ("hour" or "day"), summed alike per group."""
    time = f"date_trunc('{by}', created_at AT TIME ZONE 'UTC')"
    records = database.rows(
        GROUPED.format(hour=time, sums=RECORD_SUMS, table="apikeys_usagerecord")
    )
    table = "apikeys_usagerollup" if by == "hour" else "apikeys_usagedayrollup"
    rolled = database.rows(
        GROUPED.format(hour=f"{by} AT TIME ZONE 'UTC'", sums=ROLLUP_SUMS, table=table)
    )
    return records, rolled


def test_rollups_equal_the_records_after_writers_in_four_processes_and_a_rebuild(postgres):
    database, env = postgres
    script = WRITE.format(batches=BATCHES, per_batch=PER_BATCH)
    writers = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "shell", "-c", script],
            env={**env, "WRITER_SEED": str(number)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(WRITERS)
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=300)
        assert writer.returncode == 0, errors

    records, rolled = _grouped(database)
    assert sum(row["requests"] for row in records) == WRITERS * BATCHES * PER_BATCH
    assert rolled == records
    days, rolled_days = _grouped(database, by="day")
    assert rolled_days == days

    manage(env, "rebuild_rollups")

    assert _grouped(database) == (records, records)
    assert _grouped(database, by="day") == (days, days)


def test_no_query_of_the_reports_or_the_limits_reads_the_whole_usage_table(postgres):
    database, env = postgres
    with psycopg.connect(database.url, autocommit=True) as db:
        db.execute("TRUNCATE apikeys_usagedayrollup, apikeys_usagerollup, apikeys_usagerecord")

    output = manage(env, "shell", "-c", PLANS.format(rows=EXPLAIN_ROWS))
    plans = json.loads(output.splitlines()[-1])

    read_records = [plan for sql, plan in plans if "apikeys_usagerecord" in sql]
    assert read_records, "no query read the usage records (the partial hours)"
    # The rollups of a month are a third of this table's 90 days: reading them whole is
    # the planner's right choice there, and their size follows the hours, not the records.
    scans = [(sql, plan) for sql, plan in plans if "Seq Scan on apikeys_usagerecord" in plan]
    assert scans == []
