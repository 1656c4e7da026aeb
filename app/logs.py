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
from aiohttp.http_exceptions import HttpProcessingError

from app.keys import CLIENT_ADDRESS, REQUEST_ID, REQUEST_STARTED

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


class MalformedRequestFilter(logging.Filter):
    """A request the HTTP parser refused is the client's fault: one warning line, no trace.

    aiohttp logs each one as an ERROR with a traceback, so anyone could fill the logs
    with tracebacks by sending broken request lines; it has already answered 400.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            # aiohttp logs these as ("Error handling request from %s", peer).
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            first_line = (error.message or "").strip().splitlines()[:1]
            reason = first_line[0][:200] if first_line else type(error).__name__
            record.msg = "refused a malformed request from %s: %s"
            record.args = (peer, reason)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.status = error.code
            record.exc_info = record.exc_text = None
        return True


MALFORMED_REQUESTS = MalformedRequestFilter()


def configure(level: str) -> None:
    handler = json_handler(sys.stdout)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore logs every credential lookup at INFO.
    for noisy in ("botocore", "aiobotocore", "aioboto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(MALFORMED_REQUESTS)  # once, however often


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
                # Behind a trusted balancer, the address it forwarded; else the peer again.
                "client": request.get(CLIENT_ADDRESS, request.remote),
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
