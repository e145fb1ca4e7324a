"""The post lane: ``POST /api/v1/channels/{ch}/messages`` answered without Litestar's per-request
machinery (routing, the connection object, keyword arguments, the response object).

Posting is the request a chat server serves most, and Litestar spent more on it than the post's
own code: a trivial JSON POST route answers about 4,000 requests/s on one core here, raw ASGI
16,000 under the same uvicorn. Measured by ``bench/ab.py`` (two servers, interleaved rounds of
32 closed-loop posters): this lane cut the server's CPU per post by about a sixth and raised
posts/s by about an eighth, in every paired round.

The lane answers only what it can answer exactly as the route would: a POST on that path with a
JSON content type and a body that decodes into ``PostBody``, strictly. Anything else (another
content type, a body that does not decode or is larger than the server accepts) goes on to
Litestar untouched, with the bytes read so far replayed, before anything has been done, so its
problem response is the route's. A post the lane takes is decided by the same code as the route
(``commands.messages.accept_post``), and an exception it raises is answered by the same handler
the app registers for it (``hubbub/problems.py``), through Litestar's own ``Response``. The route
stays: it is what the OpenAPI document describes and where every irregular request is answered.
``RequestContext`` (request id, access log) wraps the lane as it wraps the app.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Litestar, Request

from commands.messages import PostBody, accept_post
from hubbub import deps
from hubbub.problems import exception_handlers
from infra.http import POSITION_HEADER

_DECODER = msgspec.json.Decoder(PostBody)
_ENCODER = msgspec.json.Encoder()
_JSON = b"application/json"
_POSITION = POSITION_HEADER.lower().encode()


class PostLane:
    """ASGI app in front of Litestar's ``asgi_handler``; see the module docstring."""

    def __init__(self, app: Callable[..., Any], litestar: Litestar, prefix: str, max_body_bytes: int) -> None:
        self.app, self.litestar, self.max_body_bytes = app, litestar, max_body_bytes
        self.path = re.compile(re.escape(prefix) + r"/channels/([^/]+)/messages")
        self.handlers = exception_handlers()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        matched = scope["type"] == "http" and scope["method"] == "POST" and self.path.fullmatch(scope["path"])
        if not matched:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope["headers"])
        chunks, whole = await self._body(receive) if _is_json(headers.get("content-type")) else ([], False)
        data = _decoded(chunks) if whole else None
        if data is None:
            await self.app(scope, _replay(chunks, whole, receive), send)
            return
        try:
            out = await accept_post(self.litestar.state[deps.STATE_KEY], headers.get, matched.group(1), data)
        except Exception as exc:  # noqa: BLE001 - answered as the app answers it, by type
            await self._problem(scope, receive, send, exc)
            return
        body = _ENCODER.encode(out)
        await send({"type": "http.response.start", "status": 201, "headers": [
            (b"content-type", _JSON), (b"content-length", str(len(body)).encode()),
            (_POSITION, str(out.position).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _body(self, receive: Any) -> tuple[list[bytes], bool]:
        """The body's chunks, and whether that is all of it (reading stops past the size limit)."""
        chunks, size = [], 0
        while True:
            message = await receive()
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
    except msgspec.MsgspecError:
        return None


def _replay(chunks: list[bytes], whole: bool, receive: Any) -> Any:
    """``receive`` for Litestar: the chunks already read (as one), then whatever is still to come."""
    pending = [b"".join(chunks)] if chunks else []

    async def replayed() -> dict[str, Any]:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": not whole}
        return await receive()

    return replayed
