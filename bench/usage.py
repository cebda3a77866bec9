"""Time the usage pages and limits over N usage records on PostgreSQL.

    make bench-usage ROWS=1000000
    .venv/bin/python -m bench.usage --rows 1000000
    .venv/bin/python -m bench.usage --reuse

`--reuse` times the pages and sums again over the records the last run loaded (its database
is kept), without loading or pruning: loading ten million records takes minutes, timing
the pages seconds, so that the pages can be timed again on a quiet machine.

Starts PostgreSQL on loopback with scripts/services (GATEWAY_PG_PORT, GATEWAY_REDIS_PORT as
usual), makes a fresh database `gateway_bench_usage`, loads N records spread over 100 days
with INSERT ... SELECT from generate_series (20 keys, 5 models, a few percent of failures,
half of those fallback candidates that failed) and their hourly and daily rollups
(apikeys/rollups.rebuild), then times, in this process through Django's test client (the
view and its queries, no HTTP): the admin's usage report for 24 h, 7 d and 30 d, of all keys
and of one key; the CSV export; a key's change page; the day's and the month's sums a limit
reads when its cache counter is missing; a lifetime budget's sum; and prune_usage
(USAGE_RETENTION_DAYS=90, so about a tenth of the records) while a thread writes batches of
records as the API's usage writer does, whose slowest batch is reported. Each page is timed
REPEAT times after one warm-up; the median is shown, and beside it the time its SQL queries
took (one more run, with Django's query log on): the rest is Python and templates. The last
line is
`slowest page at N rows: X ms`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "gateway_bench_usage"
DAYS = 100
KEYS = 20
MODELS = ["@cf/meta/llama-3.1-8b-instruct", "gpt-4o-mini", "gpt-4o", "claude-3-5", "embed"]
REPEAT = 5
# Rows inserted per statement (and transaction).
INSERT_CHUNK = 1_000_000
COLUMNS = (
    "api_key_id, key_name, team_id, model, requested_model, provider, endpoint, stream, status,"
    " http_status, error, prompt_tokens, completion_tokens, total_tokens, cached_tokens,"
    " tokens_estimated, units, unit, cost, latency_ms, time_to_first_token_ms, request_id,"
    " created_at, attempt"
)


def _services():
    output = subprocess.run(
        [str(ROOT / "scripts" / "services"), "start"], check=True, capture_output=True, text=True
    ).stdout
    urls = dict(assignment.partition("=")[::2] for assignment in output.split())
    return urls["DATABASE_URL"], urls["REDIS_URL"]


def _fresh_database(main_url):
    import psycopg

    with psycopg.connect(main_url, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        db.execute(f"CREATE DATABASE {DATABASE}")
    return main_url.rsplit("/", 1)[0] + "/" + DATABASE


def _setup():
    from django.contrib.auth.models import User

    from apikeys.models import ApiKey, Team
    from completions.models import Model, Provider

    provider = Provider.objects.create(name="bench", kind="openai", base_url="http://127.0.0.1:9")
    for name in MODELS:
        Model.objects.create(name=name, provider=provider)
    team = Team.objects.create(name="research")
    keys = [
        ApiKey.objects.create_key(name=f"key-{n:02d}", team=team if n < 5 else None)[0]
        for n in range(KEYS)
    ]
    admin = User.objects.create_superuser("bench", "bench@example.com", "unused-password")
    return keys, admin


def _load(url, keys, rows, now):
    """Insert `rows` records spread evenly over DAYS days up to `now`, oldest first.

    Made by PostgreSQL itself from generate_series, a million rows per statement: no row
    crosses the connection, so ten million load in minutes rather than the better part of
    an hour that COPY fed row by row from Python took here.
    """
    import psycopg

    start = now - timedelta(days=DAYS)
    step_us = DAYS * 86_400 * 10**6 / rows
    key_rows = ", ".join(
        f"({n}, {key.pk}, '{key.name}', {key.team_id or 'NULL'}::bigint)"
        for n, key in enumerate(keys)
    )
    model_rows = ", ".join(f"({n}, '{name}')" for n, name in enumerate(MODELS))
    prompt, completion = "(200 + i %% 1800)", "((i * 31) %% 700)"
    insert = f"""
        WITH k(n, id, name, team_id) AS (VALUES {key_rows}),
             m(n, model) AS (VALUES {model_rows})
        INSERT INTO apikeys_usagerecord ({COLUMNS})
        SELECT k.id, k.name, k.team_id, m.model, m.model, 'bench',
            CASE WHEN m.model = 'embed' THEN 'embeddings' ELSE 'chat.completions' END, false,
            CASE WHEN i %% 50 = 0 THEN 'upstream_error' WHEN i %% 97 = 0 THEN 'client_closed'
                 ELSE 'ok' END,
            200, '', {prompt}, {completion}, {prompt} + {completion}, {prompt} / 4, false,
            {prompt} + {completion}, 'tokens',
            ({prompt} * 15 + {completion} * 60)::numeric / 100000000, 300 + i %% 4000, NULL,
            'bench-' || i, %(start)s::timestamptz + (%(step)s * i) * interval '1 microsecond',
            -- Half the provider's failures are fallback candidates that failed.
            i %% 100 = 0
        FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
        -- Each key mostly on one model, now and then on the next.
        JOIN k ON k.n = ((i * 7919) # (i >> 3)) %% {KEYS}
        JOIN m ON m.n = CASE WHEN i %% 10 <> 0 THEN k.id %% 5 ELSE (k.id + 1) %% 5 END
    """
    started = time.monotonic()
    with psycopg.connect(url) as db:
        for first in range(0, rows, INSERT_CHUNK):
            last = min(first + INSERT_CHUNK, rows) - 1
            db.execute(insert, {"start": start, "step": step_us, "first": first, "last": last})
            db.commit()
    return time.monotonic() - started


def _timed(work, repeat=REPEAT):
    work()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _page(client, url):
    def get():
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)

    return get


def _sql_ms(work):
    """Return the milliseconds the database took for the queries of one run of `work`."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        work()
    return sum(float(query["time"]) for query in captured.captured_queries) * 1000


class Writer(threading.Thread):
    """Write batches of 10 records every 20 ms, as the usage writer does under load."""

    def __init__(self, key):
        super().__init__(daemon=True)
        self.key = key
        self.stop = threading.Event()
        self.latencies = []

    def run(self):
        from django.db import connection
        from django.utils import timezone

        from apikeys.writer import DatabaseStore

        store = DatabaseStore()
        n = 0
        while not self.stop.is_set():
            batch = []
            for _ in range(10):
                n += 1
                batch.append(
                    dict(
                        api_key=self.key,
                        key_name=self.key.name,
                        model=MODELS[0],
                        endpoint="chat.completions",
                        prompt_tokens=10,
                        completion_tokens=5,
                        total_tokens=15,
                        cost=Decimal("0.0001"),
                        request_id=f"live-{n}",
                        created_at=timezone.now(),
                    )
                )
            started = time.perf_counter()
            store.add(batch)
            self.latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
        connection.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time the pages over the records of the last run, without loading or pruning",
    )
    args = parser.parse_args()

    main_url, redis_url = _services()
    os.environ.update(
        DATABASE_URL=(
            main_url.rsplit("/", 1)[0] + "/" + DATABASE if args.reuse else _fresh_database(main_url)
        ),
        REDIS_URL=redis_url.rsplit("/", 1)[0] + "/2",
        DJANGO_SETTINGS_MODULE="gateway.settings",
        ENVIRONMENT="development",
        DEBUG="false",
        USAGE_RETENTION_DAYS="90",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from apikeys import retention, rollups

    settings.ALLOWED_HOSTS.append("testserver")
    call_command("migrate", "--no-input", verbosity=0)
    now = timezone.now()
    if args.reuse:
        from django.contrib.auth.models import User

        from apikeys.models import ApiKey, UsageRecord

        keys = list(ApiKey.objects.order_by("name"))
        admin = User.objects.get(username="bench")
        args.rows = UsageRecord.objects.count()
        print(f"Reusing {args.rows:,} records", flush=True)
    else:
        keys, admin = _setup()
        print(f"Loading {args.rows:,} records over {DAYS} days...", flush=True)
        load_seconds = _load(os.environ["DATABASE_URL"], keys, args.rows, now)
        started = time.monotonic()
        _, rollup_rows = rollups.rebuild()
        rollup_seconds = time.monotonic() - started
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE apikeys_usagerecord")
            cursor.execute("VACUUM ANALYZE apikeys_usagerollup")
            cursor.execute("VACUUM ANALYZE apikeys_usagedayrollup")
        print(
            f"Loaded in {load_seconds:.0f} s; {rollup_rows:,} rollup rows (hourly and daily) "
            f"in {rollup_seconds:.0f} s",
            flush=True,
        )

    client = Client()
    client.force_login(admin)
    key = keys[3]
    report = "/admin/apikeys/usagereport/"
    rows = []
    pages = [
        (f"report {period}, all keys", f"{report}?period={period}")
        for period in ("24h", "7d", "30d")
    ] + [
        (f"report {period}, one key", f"{report}?period={period}&key={key.pk}")
        for period in ("24h", "7d", "30d")
    ]
    pages += [
        ("CSV export, 30d", f"{report}csv/?period=30d"),
        ("key page (24 h and month)", f"/admin/apikeys/apikey/{key.pk}/change/"),
    ]
    for label, url in pages:
        rows.append((label, _timed(_page(client, url)), "ms", _sql_ms(_page(client, url))))
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rows.append(
        (
            "limit: a day's sum (cache missing)",
            _timed(lambda: rollups.usage_sums(api_key=key, since=day)),
            "ms",
            _sql_ms(lambda: rollups.usage_sums(api_key=key, since=day)),
        )
    )
    rows.append(
        (
            "limit: a month's sum (cache missing)",
            _timed(lambda: rollups.usage_sums(api_key=key, since=day.replace(day=1))),
            "ms",
            _sql_ms(lambda: rollups.usage_sums(api_key=key, since=day.replace(day=1))),
        )
    )

    lifetime = now - timedelta(days=DAYS + 1)
    rows.append(
        (
            f"budget: a lifetime's sum ({DAYS} days)",
            _timed(lambda: rollups.usage_sums(api_key=key, since=lifetime)),
            "ms",
            _sql_ms(lambda: rollups.usage_sums(api_key=key, since=lifetime)),
        )
    )

    if args.reuse:
        _print(rows, len(pages), args.rows)
        return
    writer = Writer(keys[0])
    writer.start()
    pruned = retention.prune()
    writer.stop.set()
    writer.join()
    rows.append(("prune_usage: records deleted", pruned.records, "records"))
    rows.append(("prune_usage: time", pruned.seconds, "s"))
    rows.append(("prune_usage: rate", pruned.records / max(pruned.seconds, 1e-9), "records/s"))
    rows.append(
        (
            "writer batch (10 records) during pruning, slowest",
            max(writer.latencies, default=0),
            "ms",
        )
    )
    rows.append(
        (
            "writer batch during pruning, median",
            statistics.median(writer.latencies or [0]),
            "ms",
        )
    )

    _print(rows, len(pages), args.rows)


def _print(rows, pages, records):
    width = max(len(row[0]) for row in rows)
    print(f"\n| {'measure':<{width}} | value | of which SQL |")
    print(f"| {'-' * width} | ----: | ----: |")
    for label, value, unit, *sql in rows:
        shown = f"{value:,.0f} {unit}" if unit != "ms" else f"{value:,.1f} ms"
        print(f"| {label:<{width}} | {shown} | {f'{sql[0]:,.1f} ms' if sql else ''} |")
    slowest = max(row[1] for row in rows[:pages])
    print(f"\nslowest page at {records:,} rows: {slowest:.0f} ms")


if __name__ == "__main__":
    main()
