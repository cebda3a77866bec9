from datetime import UTC, datetime

import pytest

from apikeys import periods


def test_a_week_starts_on_monday_at_midnight_in_utc_by_default():
    sunday_evening = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    assert periods.start("week", sunday_evening) == datetime(2026, 11, 23, tzinfo=UTC)
    assert periods.end("week", sunday_evening) == datetime(2026, 11, 30, tzinfo=UTC)


def test_a_month_ends_at_the_next_months_first_midnight_across_a_year():
    assert periods.end("month", datetime(2026, 12, 31, 12, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


def test_a_day_follows_the_configured_time_zone_across_a_daylight_saving_change(settings):
    settings.LIMITS_TIME_ZONE = "Europe/Berlin"
    # 2026-10-25 is the day Berlin goes back from UTC+2 to UTC+1: it lasts 25 hours.
    noon = datetime(2026, 10, 25, 11, tzinfo=UTC)
    assert periods.start("day", noon) == datetime(2026, 10, 24, 22, tzinfo=UTC)
    assert periods.end("day", noon) == datetime(2026, 10, 25, 23, tzinfo=UTC)


def test_a_lifetime_never_resets():
    assert periods.end("lifetime", 1_800_000_000) is None
    assert periods.start("lifetime", 1_800_000_000) <= datetime(2001, 1, 1, tzinfo=UTC)


def test_it_refuses_an_unknown_period():
    with pytest.raises(ValueError, match="fortnight"):
        periods.start("fortnight", 0)
