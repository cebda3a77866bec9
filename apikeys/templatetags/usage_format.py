"""Template filters for usage figures: amounts in USD, durations."""

from decimal import Decimal

from django import template

from apikeys.throttling import format_duration

register = template.Library()


@register.filter
def usd(value):
    """Write an amount in USD: cents from 1 USD up, four decimals below, and all eight that
    a usage record keeps below 0.0001 USD, so that a request costing a fraction of a cent
    does not read as zero. 1,234.50, 0.0153, 0.00000416.
    """
    if value is None or value == "":
        return "–"
    value = Decimal(value)
    if value == 0:
        return "0.00"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    if abs(value) >= Decimal("0.0001"):
        return f"{value:.4f}"
    return f"{value:.8f}".rstrip("0")


@register.filter
def duration(seconds):
    """Write seconds as the rate limit headers do: 20ms, 59s, 6m0s, 1h2m3s."""
    return format_duration(seconds)
