"""Structured JSON logs carrying ids only; callers pass ids through `extra`, never PHI."""

import json
import logging
import re
from datetime import UTC, datetime

# Questionnaire and unsubscribe links are credentials; Flask's own messages (e.g. "Exception
# on /q/...") name the path, so every line is scrubbed of them before it is written.
_LINK_TOKEN = re.compile(r"/([qu])/[A-Za-z0-9_.-]+")

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: time, level, logger, event, then the extra ids."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record."""
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            # The type only: exception text can carry request data.
            line["error"] = record.exc_info[0].__name__
        return _LINK_TOKEN.sub(r"/\1/<redacted>", json.dumps(line, default=str))


def configure(level: str) -> None:
    """Send every log line to stderr as JSON, unless the host process already set up logging."""
    root = logging.getLogger()
    # Under pytest (or an embedding host) the root logger has handlers already: leave them be.
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler reports every successful tick, and Alembic every plugin it loads, at INFO;
    # only their problems are news.
    for chatty in ("apscheduler", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
