"""The server's log: one access line per request, and uvicorn's and vitsearch's own lines, on stderr,
as text or as JSON lines (``--log-json``)."""

from __future__ import annotations

import json
import logging
import logging.config
import time

ACCESS_LOGGER = "vitsearch.access"
SERVER_LOGGER = "vitsearch.serve"
MAX_PATH = 300


def safe_path(path: str) -> str:
    """A request path fit for a log line: control characters escaped (no forged lines), and cut short."""
    cleaned = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in path)
    return cleaned if len(cleaned) <= MAX_PATH else cleaned[:MAX_PATH] + "…"


def access_line(logger: logging.Logger, scope: dict, route: str, status: int, seconds: float, sent: int) -> None:
    """Log one access line: ``POST /images 201 412.3ms 187B 127.0.0.1`` as text, its fields as JSON."""
    client = scope.get("client") or ("", 0)
    fields = {"method": scope.get("method", ""), "path": safe_path(scope.get("path", "")), "route": route,
              "status": status, "ms": round(seconds * 1000, 1), "bytes": sent, "client": client[0]}
    logger.info("%s %s %d %.1fms %dB %s", fields["method"], fields["path"], status, fields["ms"], sent,
                fields["client"], extra={"http": fields})


class TextFormatter(logging.Formatter):
    """``2025-01-31T12:00:00.123Z INFO vitsearch.access POST /images 201 412.3ms 187B 127.0.0.1``"""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, and for access lines
    ``method``, ``path``, ``route``, ``status``, ``ms``, ``bytes``, ``client``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "http", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str = "info", json_lines: bool = False) -> None:
    """Send uvicorn's and vitsearch's server logs to stderr in one format; uvicorn's own access log is
    off (``vitsearch.access`` replaces it)."""
    formatter = f"{__name__}.{'JsonFormatter' if json_lines else 'TextFormatter'}"
    level = level.upper()
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": {"()": formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "vitsearch": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    })
