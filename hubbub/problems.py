"""Every error becomes an RFC 9457 problem (``application/problem+json``), here and nowhere else.

- Litestar's own errors (404, 405, 413, malformed JSON) keep their status;
- validation of well-formed input is 422 with ``errors: [{field, message, source}]``
  (400 stays for input that cannot be parsed at all);
- a ``DomainError`` carries its status (and ``headers``, if it has them, e.g. ``Retry-After``);
  other known exceptions map through ``PROBLEM_STATUS``, with a public detail per status (their own
  text names streams and versions: it goes to the log, with the request id);
- an unreachable PostgreSQL, Redis or NATS (``UNAVAILABLE``) is a 503 with ``Retry-After``;
- anything else is a 500 that names the request id and nothing of the failure.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import nats.errors
import nats.js.errors
import psycopg
import redis.exceptions
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.types import ExceptionHandlersMap

from domain.errors import DomainError
from infra.eventstore.port import AppendOutcomeUnknown, DuplicateEventId, InvalidEvent, WrongExpectedVersion
from infra.logging import REQUEST_ID_STATE_KEY

log = structlog.get_logger(__name__)

MEDIA_TYPE = "application/problem+json"

PROBLEM_STATUS: dict[type[Exception], int] = {
    WrongExpectedVersion: 409,
    DuplicateEventId: 409,
    InvalidEvent: 422,
    psycopg.DataError: 422,
}
"""Exceptions from outside ``domain`` that have a meaning for clients; add to it, don't special-case.
``psycopg.DataError``: a value the request brought that PostgreSQL cannot take, such as a NUL
character in a path or query parameter (psycopg refuses it before sending) or a number past bigint."""

PUBLIC_DETAIL: dict[int, str] = {
    409: "The resource changed while you were writing; read it again and retry.",
    422: "The request contains something that cannot be stored or looked up (such as a NUL character); "
    "remove it and retry.",
}
"""What a client reads for a ``PROBLEM_STATUS`` exception (the exception's own text is for the log)."""

UNAVAILABLE: tuple[type[Exception], ...] = (
    AppendOutcomeUnknown,
    psycopg.OperationalError,  # includes psycopg_pool.PoolTimeout, serialization failures, deadlocks
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
)
"""Infrastructure failures a retry can cure: 503 with ``Retry-After``, never a 500."""
RETRY_AFTER_S = 2
_RETRY = "Retry in a few seconds; repeat a command with the same Idempotency-Key, so it takes effect once."

_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    slug: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": f"urn:hubbub:problem:{slug or _slug(phrase)}",
        "title": title or phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _slug(text: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])|[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 500:  # a bug (or Litestar misconfigured): say nothing of it
        return _internal(request, exc)
    headers = exc.headers or None  # e.g. Allow on a 405
    detail = _helpful_detail(request, exc)
    if isinstance(exc.__cause__, SerializationException):  # Litestar's wrapper for a body it could not decode
        return problem(
            400, f"The request body is not valid JSON: {detail}", title="Malformed request body", slug="malformed-body"
        )
    return problem(exc.status_code, detail, headers=headers)


def _helpful_detail(request: Request, exc: HTTPException) -> str:
    generic = not exc.detail or exc.detail == HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and generic:
        return f"Nothing at {request.url.path}; the API is described at /schema/openapi.json."
    if exc.status_code == 405 and generic:
        allowed = (exc.headers or {}).get("allow", "")
        return f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}." if allowed else ".")
    if exc.status_code == 413:
        return "The request body is larger than this server accepts; send less."
    return exc.detail or HTTPStatus(exc.status_code).phrase


def _validation_error(request: Request, exc: ValidationException) -> Response:
    errors = [_field_error(item) for item in exc.extra or []] if isinstance(exc.extra, list) else []
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or exc.detail
    return problem(422, f"Some input is not valid: {summary}", title="Invalid input", slug="validation", errors=errors)


def _field_error(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        return {"field": None, "message": str(item), "source": None}
    message, field = str(item.get("message", "")), item.get("key")
    if named := _NAMED_FIELD.search(message):
        field = named.group(1)  # msgspec names the offending field in the message, not in the key
    if message == f"'{field}'":  # a KeyError: the body (or parameter) is absent
        message = "this is required"
    source = item.get("source")
    return {"field": field, "message": message, "source": getattr(source, "value", source)}


def _domain_error(request: Request, exc: DomainError) -> Response:
    errors = [{"field": exc.field, "message": exc.detail}] if exc.field else None
    headers = getattr(exc, "headers", None)  # HTTP-only extras (Retry-After) a subclass outside domain/ may carry
    return problem(
        exc.status, exc.detail, title=exc.title, slug=_slug(type(exc).__name__), errors=errors, headers=headers
    )


def _mapped_error(request: Request, exc: Exception) -> Response:
    status = next(s for t, s in PROBLEM_STATUS.items() if isinstance(exc, t))
    if status >= 500:
        return _internal(request, exc)
    log.info(
        "request.rejected",
        status=status,
        error=type(exc).__name__,
        reason=str(exc),
        method=request.method,
        path=request.url.path,
    )
    detail = PUBLIC_DETAIL.get(status, HTTPStatus(status).description)
    return problem(status, detail, slug=_slug(type(exc).__name__))


def _unavailable(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get(REQUEST_ID_STATE_KEY)
    log.warning("request.unavailable", exc_info=exc, method=request.method, path=request.url.path)
    if isinstance(exc, AppendOutcomeUnknown):
        detail = f"The connection broke while your change was being saved; it may or may not have been. {_RETRY}"
    else:
        detail = f"A service this server depends on is not answering right now. {_RETRY}"
    return problem(
        503,
        detail,
        title="Service Unavailable",
        slug="unavailable",
        request_id=request_id,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _internal(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get(REQUEST_ID_STATE_KEY)
    log.error("request.failed", exc_info=exc, method=request.method, path=request.url.path)
    return problem(
        500,
        f"Something went wrong on our side. Quote request id {request_id} when you report it.",
        request_id=request_id,
    )


def exception_handlers() -> ExceptionHandlersMap:
    """Handlers for ``Litestar(exception_handlers=...)``; Litestar picks the nearest class in the MRO."""
    return {
        **{exc_type: _mapped_error for exc_type in PROBLEM_STATUS},
        **{exc_type: _unavailable for exc_type in UNAVAILABLE},
        DomainError: _domain_error,
        ValidationException: _validation_error,
        HTTPException: _http_error,
        Exception: _internal,
    }
