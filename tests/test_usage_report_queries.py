"""What the usage pages read: hourly rollups and the records of partial hours, never a scan
of every record for their filters. (The plans on PostgreSQL: tests/integration/
test_usage_scale.py.)"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db

REPORT = "/admin/apikeys/usagereport/"


def _record_queries(client, *pages):
    with CaptureQueriesContext(connection) as captured:
        for page in pages:
            assert client.get(page).status_code == 200
    return [q["sql"] for q in captured.captured_queries if "apikeys_usagerecord" in q["sql"]]


def test_the_model_filter_lists_the_catalogue_without_reading_the_records(admin_client, cloudflare):
    html = admin_client.get(REPORT).content.decode()
    queries = _record_queries(admin_client, REPORT)

    assert f'<option value="{LLAMA}">' in html
    assert not [sql for sql in queries if "DISTINCT" in sql.upper()]


def test_the_record_list_counts_a_bounded_number_of_records(admin_client):
    queries = _record_queries(admin_client, "/admin/apikeys/usagerecord/")

    counts = [sql for sql in queries if "COUNT(" in sql.upper()]
    assert counts
    assert all("LIMIT" in sql.upper() for sql in counts), counts


def test_every_query_of_the_report_on_the_records_is_bounded_by_time(admin_client, alice):
    queries = _record_queries(
        admin_client,
        f"{REPORT}?period=30d",
        f"{REPORT}csv/?period=7d",
        f"/admin/apikeys/apikey/{alice.key.pk}/change/",
    )

    assert queries
    assert all('"created_at" <' in sql for sql in queries), queries
