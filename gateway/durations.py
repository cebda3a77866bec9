"""Durations written the way operators type them: 30m, 24h, 7d, 0."""

import re
from datetime import timedelta

DURATION_PATTERN = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """Return the timedelta of a whole number of s, m, h or d (30m, 24h, 7d), or of 0.

    Raise ValueError, saying what is expected, for anything else.
    """
    text = text.strip()
    if text == "0":
        return timedelta(0)
    match = DURATION_PATTERN.match(text)
    if not match:
        raise ValueError(
            f"'{text}' is not a duration: write a whole number with s, m, h or d "
            "(30m, 24h, 7d), or 0."
        )
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


def describe_duration(duration: timedelta) -> str:
    """Describe a duration in its largest whole unit: 7d, 24h ... 90s, 0."""
    seconds = int(duration.total_seconds())
    if seconds == 0:
        return "0"
    for unit, size in [("d", 86400), ("h", 3600), ("m", 60)]:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
