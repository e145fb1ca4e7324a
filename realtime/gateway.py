"""``GET /api/v1/ws``: hello, ready, heartbeats, and the socket's send, receive and sync tasks.

The protocol is in docs/realtime.md. A socket is served by its ASGI task (hello, then waiting for
the end), a reader task (the client's frames) and, while there is one to do, a sync task
(``Connection.follow``).
Frames are written to the socket's transport as they come (``realtime/wire.py``); the hub's
sweep closes sockets whose heartbeats stopped. Any of them ends the socket by
``Connection.close_soon``; nothing a client sends can raise out of here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import structlog
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from domain.session import Principal, SessionGone
from infra.aio import cancel_and_wait
from infra.presence import Change, DeviceStatus, Presence
from infra.settings import Settings
from realtime import protocol, subjects
from realtime.connection import Connection
from realtime.hub import Hub
from realtime.protocol import ProtocolError
from realtime.wire import AsgiSink, Sink, TransportSink, forget_handshake, raw_protocol

log = structlog.get_logger(__name__)

STATE_KEY = "realtime"
Authenticate = Callable[[str], Awaitable[Principal]]
"""token -> the session's principal, or ``SessionGone``."""


class Gateway:
    def __init__(
        self,
        hub: Hub,
        authenticate: Authenticate,
        settings: Settings,
        presence: Presence,
        report: Callable[[Change], None],
    ) -> None:
        self.hub, self.authenticate, self.settings = hub, authenticate, settings
        self.presence, self.report = presence, report
        self.heartbeat_s = settings.ws_heartbeat_s
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="realtime-heartbeats")

    async def stop(self, grace_s: float = 2.0) -> None:
        """Close every socket (1001: reconnect and resume, elsewhere or later); wait for them a little."""
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper])
        for conn in list(self.hub.connections):
            conn.close_soon(protocol.GOING_AWAY, "server shutting down; reconnect and resume")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.hub.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def serve(self, socket: WebSocket) -> None:
        if not self._origin_allowed(socket):
            log.info("realtime.origin_refused", origin=socket.headers.get("origin"))
            await socket.close(protocol.ORIGIN_REFUSED, "origin not allowed")  # before accept: HTTP 403
            return
        await socket.accept()
        forget_handshake(socket.scope)  # nothing after the accept reads the request's headers
        try:
            hello = await self._hello(socket)
            if hello is not None:
                await self._session(socket, *hello)
        except WebSocketDisconnect:
            pass
        except Exception:  # the database or NATS failed us: the client reconnects and resumes
            log.exception("realtime.socket_failed")
            await _close(socket, protocol.SERVER_ERROR, "server error; reconnect and resume")

    def _origin_allowed(self, socket: WebSocket) -> bool:
        origin = socket.headers.get("origin")
        if origin is None or origin in self.settings.allowed_origins:
            return True  # native apps and scripts send none; cross-site hijacking needs a browser
        return urlsplit(origin).netloc == socket.headers.get("host")

    async def _hello(self, socket: WebSocket) -> tuple[str, int | None] | None:
        try:
            async with asyncio.timeout(self.settings.ws_hello_timeout_s):
                while True:
                    message = await socket.receive()
                    if message["type"] == "websocket.disconnect":
                        return None
                    try:
                        return _hello_of(protocol.parse(message))
                    except ProtocolError as exc:
                        if exc.code in ("bad_hello", "bad_resume_from"):
                            await _close(
                                socket,
                                protocol.BAD_TOKEN if exc.code == "bad_hello" else protocol.BAD_HELLO,
                                exc.detail,
                                exc.frame(),
                            )
                            return None
                        await socket.send_text(exc.frame())
        except TimeoutError:
            await _close(socket, protocol.BAD_HELLO, f"no hello within {self.settings.ws_hello_timeout_s:g} s")
            return None

    async def _session(self, socket: WebSocket, token: str, resume_from: int | None) -> None:
        try:
            principal = await self.authenticate(token)
        except SessionGone as exc:
            await _close(socket, protocol.BAD_TOKEN, str(exc)[:120])
            return
        if resume_from is not None and resume_from > await self.hub.store.head():
            detail = "resume_from is beyond this log's newest event; connect with resume_from null and refetch"
            await _close(socket, protocol.BAD_HELLO, "bad resume_from", protocol.error_frame("bad_resume_from", detail))
            return
        sink = _sink(socket)
        conn = Connection(self.hub, principal.user_id, principal.session_id, self.settings.ws_send_queue, sink)
        self.hub.add(conn)
        tasks = [_guarded(conn, _sending(sink, conn))] if isinstance(sink, AsgiSink) else []
        try:
            upto = await conn.settle()
            await self.authenticate(token)  # a logout before we listened was not heard: check once more
            start = self._start(conn, resume_from, upto)
            conn.send(
                protocol.encode(
                    {
                        "op": "ready",
                        "position": start,
                        "heartbeat_s": self.heartbeat_s,
                        "session_id": principal.session_id,
                        "user_id": principal.user_id,
                        "resumed": start == resume_from,
                    }
                )
            )
            conn.live = True
            if resume_from is not None and start != resume_from:  # after ready: a client reads ready first
                conn.send(
                    protocol.error_frame(
                        "resume_unavailable",
                        "too much was missed to replay; refetch your "
                        "state over HTTP; events after the ready position follow",
                    )
                )
            conn.follow(start, upto)  # no await since live: a sync asked for meanwhile waits for this one
            log.info(
                "realtime.connected",
                user_id=principal.user_id,
                position=start,
                resume_from=resume_from,
                subjects=len(conn.subjects),
            )
            await self._seen(conn, "active")
            tasks.append(_guarded(conn, self._read(socket, conn)))
            await conn.done.wait()
        except SessionGone:
            conn.close_soon(protocol.BAD_TOKEN, "session ended (logged out or revoked); log in again")
        except Exception:
            log.exception("realtime.connect_failed", user_id=principal.user_id)
            conn.close_soon(protocol.SERVER_ERROR, "server error; reconnect and resume")
        finally:
            await cancel_and_wait([*tasks, *([conn.syncer] if conn.syncer else [])])
            await self.hub.remove(conn)
            await self._gone(conn)
        log.info("realtime.disconnected", user_id=principal.user_id, code=conn.close_code, position=conn.position)
        if conn.close_code is not None:
            await _close(socket, conn.close_code, conn.close_reason)

    def _start(self, conn: Connection, resume_from: int | None, upto: int) -> int:
        """Where the socket's events start: after ``resume_from`` if the log can replay that
        much, else after ``upto`` (the client then refetches its state)."""
        if resume_from is not None and upto - resume_from <= self.settings.ws_resume_max_events:
            conn.position = resume_from
            return resume_from
        conn.position = upto
        return upto

    async def _read(self, socket: WebSocket, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        conn.heard_at = loop.time()
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                conn.close_soon(None)
                return
            try:
                frame = protocol.parse(message)
                match frame["op"]:
                    case "heartbeat":
                        conn.heard_at = loop.time()
                        conn.send(protocol.HEARTBEAT_ACK)
                        await self._seen(conn, conn.status)
                    case "hello":
                        raise ProtocolError("already_hello", "hello is sent once, first")
                    case "typing":
                        channel_id = protocol.typing_channel(frame)
                        if subjects.channel(channel_id) not in conn.subjects:  # as for HTTP: unseen is unknown
                            raise ProtocolError("unknown_channel", "no such channel")
                        await self.hub.typing(conn, channel_id)
                    case "presence":
                        await self._seen(conn, protocol.presence_status(frame))
                    case _:
                        raise ProtocolError("unknown_op", "ops are hello, heartbeat, typing and presence")
            except ProtocolError as exc:
                conn.send(exc.frame())

    async def _seen(self, conn: Connection, status: DeviceStatus) -> None:
        """The socket is a device: alive for one heartbeat timeout more, active or away."""
        conn.status = status
        try:
            change = await self.presence.seen(conn.user_id, conn.device_id, status, 2.5 * self.heartbeat_s)
        except Exception as exc:  # noqa: BLE001 - Redis away: the socket works on, presence lags
            log.warning("realtime.presence_failed", user_id=conn.user_id, error=str(exc))
            return
        if change is not None:
            self.report(change)

    async def _gone(self, conn: Connection) -> None:
        try:
            change = await self.presence.gone(conn.user_id, conn.device_id)
        except Exception as exc:  # noqa: BLE001 - the device times out in Redis instead
            log.warning("realtime.presence_failed", user_id=conn.user_id, error=str(exc))
            return
        if change is not None:
            self.report(change)

    async def _sweep(self) -> None:
        """Close sockets that missed two heartbeats (with half an interval of slack for a slow
        network), looking every quarter interval: one task for all sockets, not one each."""
        allowed = 2.5 * self.heartbeat_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_s / 4)
            now = loop.time()
            for conn in list(self.hub.connections):
                if conn.heard_at and now - conn.heard_at > allowed:
                    conn.close_soon(protocol.HEARTBEAT_MISSED, f"no heartbeat for {allowed:g} s")


def _hello_of(frame: dict[str, Any]) -> tuple[str, int | None]:
    if frame["op"] != "hello":
        raise ProtocolError("hello_first", 'the first frame is {"op":"hello","token":...,"resume_from":...}')
    return protocol.hello_fields(frame)


def _guarded(conn: Connection, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.create_task(conn.guard(coro))


async def _close(socket: WebSocket, code: int, reason: str, frame: str | None = None) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            if frame is not None:
                await socket.send_text(frame)
            await socket.close(code, reason)


def _sink(socket: WebSocket) -> Sink:
    """Straight to the transport when the server offers it (``realtime.wire.GatewayProtocol``,
    as ``hubbub serve`` runs); else through ASGI, by a writer task (``_sending``)."""
    proto = raw_protocol(socket.scope)
    return AsgiSink(socket.send_text) if proto is None else TransportSink(proto)


async def _sending(sink: AsgiSink, conn: Connection) -> None:
    try:
        await sink.run()
    except (WebSocketDisconnect, OSError):
        conn.close_soon(None)


@websocket("/ws", opt={"exclude_from_auth": True})
async def ws_endpoint(socket: WebSocket) -> None:
    """The realtime gateway (docs/realtime.md)."""
    gateway: Gateway = socket.app.state[STATE_KEY]
    await gateway.serve(socket)
