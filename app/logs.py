"""JSON log lines, each carrying the request id of the request it belongs to."""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from time import perf_counter
from typing import IO, Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from app.keys import REQUEST_ID, REQUEST_STARTED

# A ContextVar rather than an app key: log records are made deep inside
# libraries that never see the request, yet must name it.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request id of the task that emitted it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            line["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "request_id":
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def json_handler(stream: IO[str]) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def configure(level: str) -> None:
    handler = json_handler(sys.stdout)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore logs every credential lookup at INFO.
    for noisy in ("botocore", "aiobotocore", "aioboto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


PROBE_PATHS = frozenset({"/healthz", "/readyz"})


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON line per response: who asked what, how it went, how long, how many bytes."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        started = request.get(REQUEST_STARTED)
        duration = perf_counter() - started if started is not None else time
        match_info = getattr(request, "match_info", None)
        route = getattr(getattr(match_info, "route", None), "resource", None)
        # A balancer probes every process twice a second: passing probes would drown the log.
        probe_passed = request.path in PROBE_PATHS and response.status < 400
        self.logger.log(
            logging.DEBUG if probe_passed else logging.INFO,
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={
                "request_id": request.get(REQUEST_ID),
                "method": request.method,
                "path": request.path,
                "route": route.canonical if route is not None else None,
                "status": response.status,
                "duration_ms": round(duration * 1000, 3),
                "bytes_in": request.content_length or 0,
                "bytes_out": response.body_length,
                "remote": request.remote,
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
