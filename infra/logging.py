"""Structured logs: one JSON object per line (or a console rendering for humans), with the
request id on every line logged while a request is handled.

stdlib loggers (uvicorn, psycopg, litestar) go through the same formatter, so an operator sees
one format. ``RequestContext`` wraps the whole ASGI app rather than sitting in Litestar's
middleware list, because Litestar runs that list only for matched routes and a 404 or 405 must
get a request id and an access log line too.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from typing import IO, Any

import structlog
import structlog.tracebacks

from infra.client_address import STATE_KEY as CLIENT_ADDRESS_STATE_KEY
from infra.client_address import TrustedProxies, client_address

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_STATE_KEY = "request_id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

log = structlog.get_logger("hubbub.http")


def configure_logging(level: str = "info", fmt: str = "json", stream: IO[str] | None = None) -> None:
    """Our structlog loggers and stdlib logging (uvicorn, psycopg, litestar) write the same lines
    to ``stream`` (default stderr). Ours render and write directly, with levels below ``level``
    turned into no-ops: the stdlib round trip cost about 5% of a post's CPU in the access log alone.
    """
    out = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail = _renderers(fmt)
    structlog.configure(
        processors=[*shared, _add_logger_name, *tail],
        logger_factory=lambda *args: _NamedWriteLogger(out, args[0] if args else "hubbub"),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # Not cached: a module's logger must follow a later configure_logging (tests capture
        # logs by pointing them at a buffer); assembling one costs microseconds.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # library warnings become log lines too, not stray stderr text
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []  # let them reach the root handler, once
        logging.getLogger(name).propagate = True
    # RequestContext writes the access line (with the request id); uvicorn's would be a second
    # one per request, and uvicorn logs it whenever the logger has any handler up the tree.
    access = logging.getLogger("uvicorn.access")
    access.handlers, access.propagate, access.disabled = [], False, True


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's line writer, which also knows the name it was got by (``logger`` field)."""

    def __init__(self, file: IO[str], name: str) -> None:
        super().__init__(file)
        self.name = name


def _add_logger_name(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event.setdefault("logger", getattr(logger, "name", None))
    return event


def _renderers(fmt: str) -> list[Any]:
    # Tracebacks never carry frame locals: they hold passwords, tokens and message text, and
    # structlog (26) and rich show them by default.
    if fmt == "console":
        return [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]
    no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    return [structlog.processors.ExceptionRenderer(no_locals), structlog.processors.JSONRenderer()]


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-Id`` when it is a sane token (so it can be logged as is), else a new one."""
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            if _SANE_ID.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex


def _with_request_id(headers: list[tuple[bytes, bytes]], request_id: str) -> list[tuple[bytes, bytes]]:
    """``headers`` whose only ``X-Request-Id`` is ``request_id``."""
    name = REQUEST_ID_HEADER.encode()
    return [(k, v) for k, v in headers if k.lower() != name] + [(name, request_id.encode())]


class RequestContext:
    """ASGI wrapper: a request id per HTTP request (bound for logging, echoed in the response,
    kept in ``scope["state"]``), the client's address (``infra/client_address.py``, kept there too,
    for rate limits) and one access log line when the response has been sent.

    The request's own ``X-Request-Id`` header is replaced by that id, so what the app reads there
    (the events' ``correlation_id``) is the id the log has, never the client's raw value."""

    def __init__(self, app: Any, trusted_proxies: TrustedProxies | None = None) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies or TrustedProxies()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))
        scope["headers"] = _with_request_id(scope.get("headers", []), request_id)
        client = client_address(scope, self.trusted_proxies)
        state = scope.setdefault("state", {})
        state[REQUEST_ID_STATE_KEY], state[CLIENT_ADDRESS_STATE_KEY] = request_id, client
        status = {"code": 500}  # if the app dies before answering, the server sends a 500
        started = time.perf_counter()

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                log.info(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status["code"],
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                    client=client,
                )
