"""Frames as bytes on the wire, built once per node and written as they are to every socket.

A server's WebSocket frames are not masked (RFC 6455, 5.1), so one event's frames are the same
bytes for every socket that gets them: ``text_frames`` builds them once and the gateway writes
that one ``bytes`` object to each socket's transport (uvicorn's sans-I/O websockets protocol,
which this gateway runs on; see ``TransportSink``). No permessage-deflate is negotiated (see
``hubbub/devserver.py``), so nothing per socket changes the bytes.

Sinks are what a ``Connection`` writes to; none of their methods but ``drained`` awaits:
- ``TransportSink``: straight to the transport; it buffers what the client has not read yet, and
  is *paused* above its high-water mark (the connection counts what it writes meanwhile: 4008).
- ``AsgiSink``: any other ASGI server, through ``websocket.send`` by a writer task (slower).
"""

from __future__ import annotations

import asyncio
import collections
import struct
from collections.abc import Iterable
from typing import Any, Protocol

from litestar.types import Empty
from litestar.utils.scope.state import ScopeState
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

_TEXT_FIN = 0x81


def text_frames(texts: Iterable[str]) -> bytes:
    """Unmasked, unfragmented text frames of ``texts``, in order, as one ``bytes``."""
    out = bytearray()
    for text in texts:
        payload = text.encode()
        size = len(payload)
        if size < 126:
            out += struct.pack("!BB", _TEXT_FIN, size)
        elif size < 1 << 16:
            out += struct.pack("!BBH", _TEXT_FIN, 126, size)
        else:
            out += struct.pack("!BBQ", _TEXT_FIN, 127, size)
        out += payload
    return bytes(out)


def text_frame(text: str) -> bytes:
    return text_frames((text,))


def split_text_frames(wire: bytes) -> list[str]:
    """``text_frames`` undone (for ``AsgiSink``, which hands texts to the ASGI server)."""
    texts, i = [], 0
    while i < len(wire):
        size, i = wire[i + 1] & 0x7F, i + 2
        if size == 126:
            (size,), i = struct.unpack_from("!H", wire, i), i + 2
        elif size == 127:
            (size,), i = struct.unpack_from("!Q", wire, i), i + 8
        texts.append(wire[i : i + size].decode())
        i += size
    return texts


class Sink(Protocol):
    def write(self, wire: bytes) -> None: ...

    def paused(self) -> bool:
        """Whether what is written now waits behind what the client has not read yet."""
        ...

    async def drained(self) -> None: ...


class TransportSink:
    """uvicorn's ``WebSocketsSansIOProtocol``: frames go to its transport, past uvicorn and the
    ``websockets`` state machine (which only needs to know of control frames: close goes through
    ASGI as before, after what was written here, on the same transport)."""

    __slots__ = ("_proto",)

    def __init__(self, proto: Any) -> None:
        self._proto = proto

    def write(self, wire: bytes) -> None:
        proto = self._proto
        if not (proto.close_sent or proto.disconnected or proto.transport.is_closing()):
            proto.transport.write(wire)

    def paused(self) -> bool:
        return not self._proto.writable.is_set()

    async def drained(self) -> None:
        await self._proto.writable.wait()


class AsgiSink:
    """Frames through ``websocket.send``, sent in order by ``run`` (the gateway's writer task)."""

    __slots__ = ("_pending", "_send", "_wake")

    def __init__(self, send_text: Any) -> None:
        self._send = send_text
        self._pending: collections.deque[bytes] = collections.deque()
        self._wake = asyncio.Event()

    def write(self, wire: bytes) -> None:
        self._pending.append(wire)
        self._wake.set()

    def paused(self) -> bool:
        return bool(self._pending)

    async def drained(self) -> None:
        while self._pending:
            await asyncio.sleep(0.01)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                for text in split_text_frames(self._pending[0]):
                    await self._send(text)
                self._pending.popleft()


RAW_TRANSPORT = "hubbub.raw_transport"
"""The ASGI scope extension under which ``GatewayProtocol`` hands itself to the gateway."""


class GatewayProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websockets protocol, offering itself to the app in the connection's
    scope (``extensions[RAW_TRANSPORT]``) so that the gateway can write frames to its transport.
    ``hubbub serve`` runs uvicorn with ``ws="realtime.wire:GatewayProtocol"``; under any other
    protocol the gateway sends through ASGI (``AsgiSink``)."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)  # makes the scope and the app's task, which has not run yet
        scope = getattr(self, "scope", None)
        if scope is not None and not self.close_sent:
            scope["extensions"][RAW_TRANSPORT] = self  # type: ignore[index]


def forget_handshake(scope: Any) -> None:
    """Drop what only the handshake needed, once the socket is accepted: the request headers in
    the scope (raw, and Litestar's parsed copy) and, under ``GatewayProtocol``, uvicorn's handshake
    request and response, and the request's headers, which websockets' parser keeps. An open
    socket held them for its whole life: its Python objects went from 30.4 to 23.1 KiB
    (``bench.realtime --quick --python-objects``). Nothing reads them after the accept."""
    scope["headers"] = []
    ScopeState.from_scope(scope).headers = Empty
    proto = raw_protocol(scope)
    if proto is not None and proto.handshake_complete:
        if proto.request is not None:  # websockets' parser keeps the request object itself to the end
            proto.request.headers.clear()
        proto.request = proto.response = None


def raw_protocol(scope: Any) -> GatewayProtocol | None:
    """The protocol a socket's frames may be written through, if the server offers it."""
    return (scope.get("extensions") or {}).get(RAW_TRANSPORT)
