"""Logging for node processes: plain text or one JSON object per line (`noex-lab node --log-format json`).

The runtime logs through the standard `logging` module under `noex_lab.*` loggers (refusals and
overloads at WARNING, node transitions at INFO); this module only formats and routes them.
Fields a record carries in `extra` whose names start with `noex_` (`noex_node`, `noex_peer`,
`noex_event`) become JSON fields without the prefix.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from .core.errors import InvalidArgumentError

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "TextFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the `noex_*`
    extras, and the exception's type, message and traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key.startswith("noex_"):
                doc[key.removeprefix("noex_")] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["exception"] = {"type": type(exc).__name__, "message": str(exc),
                                "traceback": self.formatException(record.exc_info)}
        return json.dumps(doc, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, except for crash reports (`noex_lab.crash`): those are whole blocks that start
    with their own `=CRASH REPORT====` header line, as Erlang prints them, so they go out as they are
    (a notebook kernel recognises them on its local nodes' stderr by that header)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "noex_lab.crash":
            return record.getMessage()
        return super().format(record)


def configure_logging(fmt: str = "text", level: str = "warning", stream: TextIO | None = None) -> logging.Handler:
    """Send the `noex_lab` loggers' records at `level` and above to `stream` (stderr) as `fmt`."""
    if fmt not in LOG_FORMATS:
        raise InvalidArgumentError(f"log format must be one of {LOG_FORMATS}, not {fmt!r}")
    if level.lower() not in LOG_LEVELS:
        raise InvalidArgumentError(f"log level must be one of {LOG_LEVELS}, not {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger = logging.getLogger("noex_lab")
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False  # one line per record, whatever the root logger does
    return handler
