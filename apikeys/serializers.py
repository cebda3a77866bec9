"""The query of GET /v1/usage, validated as the API's request bodies are.

    start, end   ISO 8601 dates or dates and times, or Unix seconds; [start, end)
    bucket       day or hour
    group_by     model, endpoint, or both (comma-separated or repeated)

A date, or a date and time without an offset, is read in settings.LIMITS_TIME_ZONE, the
zone the day buckets are cut in.
"""

import re
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.utils import html

from apikeys import periods
from apikeys.self_service import GROUPS

# The range when none is asked for: the last seven days, as `usage_report --days 7`.
DEFAULT_SPAN = timedelta(days=7)
# The longest range of each kind of bucket: a leap year of days, the longest month of hours.
LONGEST_SPAN = {"day": timedelta(days=366), "hour": timedelta(days=31)}
UNIX_SECONDS = re.compile(r"\d+", re.ASCII)
DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# A `+` in a query string is a space once decoded, so "10:00:00+01:00" sent unescaped
# arrives as "10:00:00 01:00": a space between a time and an offset is read as the `+`.
SPACED_OFFSET = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")
# Moments outside these are refused: before the epoch no usage exists, and near year 9999
# the end of a bucket would not fit in a datetime.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class MomentField(serializers.Field):
    default_error_messages = {
        "invalid": "write a date (2026-11-30), a date and time (2026-11-30T12:00:00Z) or "
        "Unix seconds (1764460800).",
        "out_of_range": "write a moment from 1970 to 8999.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        text = data.strip()
        try:
            moment = self._parse(text)
        except (ValueError, OverflowError, OSError):
            self.fail("invalid")
        if not EARLIEST <= moment < LATEST:
            self.fail("out_of_range")
        return moment

    @staticmethod
    def _parse(text):
        if UNIX_SECONDS.fullmatch(text):
            return datetime.fromtimestamp(int(text), UTC)
        if DATE.fullmatch(text):
            day = datetime.strptime(text, "%Y-%m-%d")
            return datetime(day.year, day.month, day.day, tzinfo=periods.zone())
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = datetime.fromisoformat(SPACED_OFFSET.sub(r"\1+\2", text))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=periods.zone())
        # Compared with EARLIEST and LATEST in UTC, which fails loudly now, not later, for
        # a moment at the edge of what a datetime holds.
        return moment.astimezone(UTC)


class GroupByField(serializers.Field):
    default_error_messages = {"invalid": "group by {groups}, not '{name}'."}

    def get_value(self, dictionary):
        # Repeated (group_by=model&group_by=endpoint) or comma-separated, or both.
        values = dictionary.getlist(self.field_name) if html.is_html_input(dictionary) else []
        if not html.is_html_input(dictionary) and self.field_name in dictionary:
            values = [dictionary[self.field_name]]
        if not any(values):
            return empty
        return ",".join(str(value) for value in values)

    def to_internal_value(self, data):
        names = [name.strip() for name in str(data).split(",")]
        for name in names:
            if name not in GROUPS:
                self.fail("invalid", groups=" or ".join(GROUPS), name=name)
        # In one order whatever the order asked, so that the results' order is stable.
        return tuple(group for group in GROUPS if group in names)


class UsageQuerySerializer(serializers.Serializer):
    start = MomentField(required=False)
    end = MomentField(required=False)
    bucket = serializers.ChoiceField(choices=["day", "hour"], default="day")
    group_by = GroupByField(required=False, default=())

    def validate(self, data):
        end = data.get("end") or timezone.now()
        start = data.get("start") or end - DEFAULT_SPAN
        if end <= start:
            # Name the parameter given: with end left out, it is start that is wrong.
            param = "end" if "end" in data else "start"
            raise serializers.ValidationError(
                {param: f"end ({_utc(end)}) must be after start ({_utc(start)})."}
            )
        longest = LONGEST_SPAN[data["bucket"]]
        if end - start > longest:
            raise serializers.ValidationError(
                {
                    "start": f"{data['bucket']} buckets may span {longest.days} days at most, "
                    f"not {_days(end - start)} (from {_utc(start)} to {_utc(end)})."
                }
            )
        return {**data, "start": start, "end": end}


def _utc(moment):
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _days(span):
    return f"{span / timedelta(days=1):g} days"
