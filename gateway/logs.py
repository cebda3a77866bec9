"""Logs, a record a line, carrying the id of the request being served.

LOG_FORMAT=json (the default outside development) selects JsonFormatter in settings: one
JSON object a line. LOG_FORMAT=text selects TextFormatter, which keeps a record on its line
whatever its message holds.
"""

import contextvars
import json
import logging
import re
from datetime import UTC, datetime

# Set by RequestIdMiddleware for the duration of each request; tasks started by the
# request inherit it, so the usage writer's log lines carry it too.
request_id_var = contextvars.ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# Characters that end a line, or move the cursor, in a terminal or a log viewer: C0 and C1
# controls, DEL, and Unicode's line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text):
    """Return text with every control character written as its escape (\\n, \\x1b)."""
    return _CONTROL.sub(lambda match: _NAMED.get(match[0]) or ascii(match[0])[1:-1], text)


class TextFormatter(logging.Formatter):
    """A line per record, so that a message cannot forge another record.

    Messages carry text from clients and upstreams (an upstream's error message, a model
    name): a newline in one would start a line that reads as a record of its own. The
    message line is escaped; a traceback, which needs its lines, is indented under it, so
    that only a record starts at the beginning of a line.
    """

    def format(self, record):
        # Formatter.format() would reuse a traceback another handler's formatter left on
        # the record (exc_text), unindented; this one formats its own each time.
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        lines = [escape_controls(self.formatMessage(record))]
        if record.exc_info:
            lines.append(self._indented(self.formatException(record.exc_info)))
        elif record.exc_text:
            lines.append(self._indented(record.exc_text))
        if record.stack_info:
            lines.append(self._indented(self.formatStack(record.stack_info)))
        return "\n".join(lines)

    @staticmethod
    def _indented(text):
        return "\n".join("    " + escape_controls(line) for line in text.splitlines())
