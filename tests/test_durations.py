"""gateway/durations.py: durations as operators type them."""

from datetime import timedelta

import pytest

from gateway.durations import describe_duration, parse_duration


@pytest.mark.parametrize(
    "text, duration",
    [
        ("0", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        (" 2h ", timedelta(hours=2)),
    ],
)
def test_it_reads_a_whole_number_of_a_unit(text, duration):
    assert parse_duration(text) == duration


@pytest.mark.parametrize("text", ["", "24", "h", "1w", "-1h", "1.5h", "0h5m", "1 h"])
def test_it_refuses_anything_else_saying_what_it_takes(text):
    with pytest.raises(ValueError, match="30m, 24h, 7d"):
        parse_duration(text)


@pytest.mark.parametrize(
    "duration, text",
    [
        (timedelta(0), "0"),
        (timedelta(days=7), "7d"),
        (timedelta(hours=24), "1d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=30), "30m"),
        (timedelta(seconds=90), "90s"),
    ],
)
def test_it_describes_a_duration_in_its_largest_whole_unit(duration, text):
    assert describe_duration(duration) == text
