"""Contact addresses and alert thresholds as operators type them, read and checked.

No model is imported here: the settings check BUDGET_ALERT_THRESHOLDS with these too.
"""

import re

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

# The highest alert threshold, in percent of the budget: spend can pass the budget when
# requests admitted together finish, and an operator may want to hear of 150 %.
MAX_ALERT_THRESHOLD = 1000


def parse_emails(text):
    """Return the addresses in text separated by commas or new lines, each once, in order."""
    addresses = (address.strip() for address in re.split(r"[,;\n]", text or ""))
    return list(dict.fromkeys(address for address in addresses if address))


def validate_emails(value):
    for address in parse_emails(value):
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError(
                "Enter e-mail addresses separated by commas: %(address)s is not one.",
                code="invalid",
                params={"address": address},
            ) from None


def parse_thresholds(text):
    """Return the percentages in text ("50,80,95,100") as sorted whole numbers, each once."""
    return sorted({int(part) for part in re.split(r"[,\s]+", text or "") if part})


def validate_thresholds(value):
    try:
        thresholds = parse_thresholds(value)
    except ValueError:
        thresholds = None
    if not thresholds or not all(0 < t <= MAX_ALERT_THRESHOLD for t in thresholds):
        raise ValidationError(
            "Enter percentages of the budget separated by commas, each from 1 to "
            f"{MAX_ALERT_THRESHOLD}, for example 50,80,95,100.",
            code="invalid",
        )
