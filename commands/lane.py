"""The post lane: ``POST /api/v1/channels/{ch}/messages`` answered without Litestar's per-request
machinery (routing, the connection object, keyword arguments, the response object).

Posting is the request a chat server serves most, and Litestar spent more on it than the post's
own code: a trivial JSON POST route answers about 4,000 requests/s on one core here, raw ASGI
16,000 under the same uvicorn. Measured by ``bench/ab.py`` (two servers, interleaved rounds of
32 closed-loop posters), this lane cuts the server's CPU per post by about a sixth and raises
posts/s by about a tenth, in every paired round (``docs/benchmarks.md``, *Posting, A against B*).

The lane answers only what it can answer exactly as the route would: a POST on that path with a
JSON content type and a body that decodes into ``PostBody``, strictly. Anything else (another
content type, a body that does not decode or is larger than the server accepts) goes on to
Litestar untouched, with the bytes read so far replayed, before anything has been done, so its
problem response is the route's. A post the lane takes is decided by the same code as the route
(``commands.messages.accept_post``), and an exception it raises is answered by the same handler
the app registers for it (``hubbub/problems.py``), through Litestar's own ``Response``. The route
stays: it is what the OpenAPI document describes and where every irregular request is answered.
``RequestContext`` (request id, access log) wraps the lane as it wraps the app.

Before reading a byte the lane also hands over what Litestar refuses unread: a ``Host`` header
that is not a valid host (400), a ``Content-Length`` over the limit (413, without waiting for the
body). A client that disconnects before its body is whole posts nothing. What the lane skips (CORS,
CSRF, compression, allowed hosts, ``before_send``, and the route's guards, hooks and middleware) is
checked when the app is built: if any of them ever applies to posting, ``PostLane`` refuses to
start and says so, rather than answer posts without it.

The lane leans on Litestar's insides (``litestar._asgi.utils.is_valid_host``, what a route
applies), so ``pyproject.toml`` pins Litestar to the minor version it was measured with (2.25).
To raise the pin: upgrade, run the lane's tests (``tests/integration/test_post_lane.py``), then
measure what the lane is still worth: take it out of ``hubbub/app.py`` in the working tree and
run ``make bench-ab`` (HEAD, with the lane, against the working tree without it), twice. The lane
stays only while posting through it is at least 10 % more posts/s; otherwise delete it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar._asgi.utils import is_valid_host
from litestar.routes import HTTPRoute
from litestar.types import ExceptionHandlersMap

from commands.edge import STATE_KEY
from commands.messages import PostBody, accept_post
from infra.http import POSITION_HEADER
from projections.consistency import ReadYourWritesMiddleware

_DECODER = msgspec.json.Decoder(PostBody)
_ENCODER = msgspec.json.Encoder()
_JSON = b"application/json"
_POSITION = POSITION_HEADER.lower().encode()


class PostLane:
    """ASGI app in front of Litestar's ``asgi_handler``; see the module docstring."""

    def __init__(
        self,
        app: Callable[..., Any],
        litestar: Litestar,
        prefix: str,
        max_body_bytes: int,
        handlers: ExceptionHandlersMap,
    ) -> None:
        """``handlers``: the app's exception handlers (``hubbub/problems.py``), to answer as it does."""
        self.app, self.litestar, self.max_body_bytes = app, litestar, max_body_bytes
        self.path = re.compile(re.escape(prefix) + r"/channels/([^/]+)/messages")
        self.handlers = handlers
        skipped = _skipped_for_posts(litestar, prefix + "/channels/{channel_id:str}/messages")
        if skipped:
            raise RuntimeError(
                f"the post lane (commands/lane.py) would answer posts without {', '.join(skipped)}; "
                "apply them in the lane, or take the lane out of hubbub/app.py"
            )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        matched = scope["type"] == "http" and scope["method"] == "POST" and self.path.fullmatch(scope["path"])
        if not matched:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope["headers"])
        if not self._may_take(headers):
            await self.app(scope, receive, send)
            return
        chunks, whole = await self._body(receive)
        if whole is None:  # the client is gone: nothing to answer, and nothing is posted
            return
        data = _decoded(chunks) if whole else None
        if data is None:
            await self.app(scope, _replay(chunks, whole, receive), send)
            return
        try:
            out = await accept_post(self.litestar.state[STATE_KEY], headers.get, matched.group(1), data)
        except Exception as exc:  # noqa: BLE001 - answered as the app answers it, by type
            await self._problem(scope, receive, send, exc)
            return
        body = _ENCODER.encode(out)
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [
                    (b"content-type", _JSON),
                    (b"content-length", str(len(body)).encode()),
                    (_POSITION, str(out.position).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _may_take(self, headers: dict[str, str]) -> bool:
        """JSON, and nothing Litestar would refuse before reading the body."""
        if not _is_json(headers.get("content-type")):
            return False
        host = headers.get("host")
        if host is not None and not is_valid_host(host.encode("latin-1")):
            return False
        length = headers.get("content-length")
        return length is None or (length.isdigit() and int(length) <= self.max_body_bytes)

    async def _body(self, receive: Any) -> tuple[list[bytes], bool | None]:
        """The body's chunks, and whether that is all of it (reading stops past the size limit);
        None for a client that disconnected first."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return chunks, None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return chunks, False
            if not message.get("more_body", False):
                return chunks, True

    async def _problem(self, scope: Any, receive: Any, send: Any, exc: Exception) -> None:
        handler = next(self.handlers[kind] for kind in type(exc).__mro__ if kind in self.handlers)
        request: Request[Any, Any, Any] = Request(scope, receive)
        response = handler(request, exc)
        await response.to_asgi_response(None, request)(scope, receive, send)


def _skipped_for_posts(litestar: Litestar, template: str) -> list[str]:
    """What Litestar would apply to a post that the lane does not (see the module docstring)."""
    app_level = {
        "CORS": litestar.cors_config,
        "CSRF": litestar.csrf_config,
        "compression": litestar.compression_config,
        "allowed hosts": litestar.allowed_hosts,
        "before_send hooks": litestar.before_send,
    }
    skipped = [name for name, value in app_level.items() if value]
    routes = [route for route in litestar.routes if isinstance(route, HTTPRoute) and route.path == template]
    if len(routes) != 1 or "POST" not in routes[0].route_handler_map:
        return [*skipped, f"the route it stands for (no POST {template})"]
    handler, _ = routes[0].route_handler_map["POST"]
    middleware = [
        m for m in handler.resolve_middleware() if not isinstance(m, ReadYourWritesMiddleware)
    ]  # GET/HEAD only
    route_level = {
        "middleware": middleware,
        "guards": handler.resolve_guards(),
        "before_request": handler.resolve_before_request(),
        "after_response": handler.resolve_after_response(),
        "response headers": handler.resolve_response_headers(),
        "response cookies": handler.resolve_response_cookies(),
    }
    return skipped + [f"the route's {name}" for name, value in route_level.items() if value]


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case name -> the first value, as ``request.headers.get`` answers."""
    headers: dict[str, str] = {}
    for name, value in raw:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers


def _is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


def _decoded(chunks: list[bytes]) -> PostBody | None:
    try:
        return _DECODER.decode(b"".join(chunks))
    except (msgspec.MsgspecError, RecursionError):  # nested past the decoder's depth: the route answers 400
        return None


def _replay(chunks: list[bytes], whole: bool, receive: Any) -> Any:
    """``receive`` for Litestar: the chunks already read (as one), then whatever is still to come."""
    pending = [b"".join(chunks)] if chunks else []

    async def replayed() -> dict[str, Any]:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": not whole}
        return await receive()

    return replayed
