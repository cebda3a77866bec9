from datetime import UTC

from django.db import migrations
from django.db.models import Count, Exists, F, OuterRef, Q, Sum
from django.db.models.functions import Coalesce, TruncDay, TruncHour

# The columns that name a rollup's group after its hour or day, as in 0010 and 0011.
GROUP_FIELDS = ("api_key_id", "key_name", "team_id", "model", "endpoint", "status", "unit")


def mark_attempts(apps, schema_editor):
    """Mark the failed fallback attempts recorded before `attempt` existed, and take them
    out of the rollups' requests, errors and latency, which counted them.

    An attempt is a record the provider failed (upstream_error) with a later record of the
    same request: the request's own, made once its last candidate had answered or failed.
    Later by the time it was made (created_at, stamped when the record was handed to the
    writer), then by id: a record the writer kept after a failed write is written late.
    Request ids are the gateway's own (gateway/middleware.py), one per request.

    The rollups are corrected by subtraction, a row per group of attempts, rather than
    summed again from the records: nothing else of the rollups changes, and the usage
    writers go on meanwhile. Written without the application's code (apikeys/rollups.py),
    which later migrations may change. Attempts whose records were pruned already, and the
    rollups of those hours, are left as they were.
    """
    record = apps.get_model("apikeys", "UsageRecord")
    later = record.objects.filter(request_id=OuterRef("request_id")).filter(
        Q(created_at__gt=OuterRef("created_at"))
        | Q(created_at=OuterRef("created_at"), id__gt=OuterRef("id"))
    )
    attempts = record.objects.filter(status="upstream_error", attempt=False)
    if not attempts.filter(Exists(later)).update(attempt=True):
        return
    marked = record.objects.filter(attempt=True)
    for rollup, time_name, trunc in [
        (apps.get_model("apikeys", "UsageRollup"), "hour", TruncHour),
        (apps.get_model("apikeys", "UsageDayRollup"), "day", TruncDay),
    ]:
        groups = (
            marked.annotate(at=trunc("created_at", tzinfo=UTC))
            .values("at", *GROUP_FIELDS)
            .annotate(count=Count("id"), latency=Coalesce(Sum("latency_ms"), 0))
            .order_by()
        )
        for group in groups:
            count, latency = group.pop("count"), group.pop("latency")
            rollup.objects.filter(**{time_name: group.pop("at")}, **group).update(
                requests=F("requests") - count,
                errors=F("errors") - count,
                latency_ms=F("latency_ms") - latency,
            )


class Migration(migrations.Migration):
    dependencies = [
        ("apikeys", "0012_usage_sums"),
    ]

    operations = [
        migrations.RunPython(mark_attempts, migrations.RunPython.noop),
    ]
