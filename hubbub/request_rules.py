"""What every HTTP request is held to before a handler sees it, in one place for every route
(docs/design/messaging-core.md, *Request rules*).

- ``JsonRequest`` is the app's request class: Litestar decodes every JSON body through its
  ``json()``, so the rules of JSON bodies live there. A body declared as anything but JSON
  (``application/json`` or ``application/*+json``) is 415; a body without a ``Content-Type`` is
  read as JSON (RFC 9110 8.3 lets the recipient look at the data), as before. A body nested
  deeper than the decoder can go (msgspec stops at Python's recursion limit with a
  ``RecursionError``, not a ``DecodeError``) is 400 like any other malformed body.
- ``CompleteAllow`` corrects the ``Allow`` header of the ``OPTIONS`` answers Litestar makes: when
  two controllers serve one path (a command and a query), Litestar 2 lists only the methods of the
  first one registered (litestar#4169, fixed in Litestar 3).
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.exceptions import HTTPException, SerializationException
from litestar.routes import HTTPRoute


def is_json(content_type: str | None) -> bool:
    """``application/json`` or a ``+json`` type (RFC 6839), whatever its parameters; no header
    counts as JSON."""
    if content_type is None:
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class JsonRequest(Request[Any, Any, Any]):
    """Litestar's ``Request``, refusing JSON bodies the way ``hubbub/problems.py`` answers them."""

    async def json(self) -> Any:
        content_type = self.headers.get("content-type")
        if not is_json(content_type):
            raise HTTPException(
                status_code=415,
                detail=f"The request body must be JSON, sent as Content-Type: application/json, not {content_type}.",
            )
        try:
            return await super().json()
        except RecursionError:
            raise SerializationException("it nests arrays or objects deeper than this server reads") from None


class CompleteAllow:
    """ASGI wrapper: an ``OPTIONS`` answer's ``Allow`` lists every method its path serves."""

    def __init__(self, app: Any, litestar: Litestar) -> None:
        self.app = app
        self.allow = {
            route.path_format: ", ".join(sorted(route.methods)).encode()
            for route in litestar.routes
            if isinstance(route, HTTPRoute)
        }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return

        async def send_complete(message: dict[str, Any]) -> None:
            allow = self.allow.get(scope.get("path_template", ""))  # set by Litestar's router once it matched
            if message["type"] == "http.response.start" and allow is not None:
                headers = [(k, allow if k.lower() == b"allow" else v) for k, v in message.get("headers", [])]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_complete)
