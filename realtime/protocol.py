"""The WebSocket protocol's frames, close codes and limits (API.md, *WebSocket*; docs/realtime.md).

Client frames are checked here, before anything acts on them: ``parse`` turns a raw frame into
a ``dict`` with a string ``op``, or a ``ProtocolError`` that becomes an ``error`` frame.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

MAX_FRAME_BYTES = 64 * 1024
MAX_POSITION = 2**63 - 1

BAD_TOKEN = 4001
"""No, unknown, logged-out or revoked token (also sent when the session ends while connected)."""
BAD_HELLO = 4002
"""No valid hello within the hello timeout, or a ``resume_from`` that is not a position of this log."""
ORIGIN_REFUSED = 4003
TOO_SLOW = 4008
HEARTBEAT_MISSED = 4009
GOING_AWAY = 1001
SERVER_ERROR = 1011

_ENCODER = msgspec.json.Encoder()


class ProtocolError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail

    def frame(self) -> str:
        return error_frame(self.code, self.detail)


def error_frame(code: str, detail: str) -> str:
    return _ENCODER.encode({"op": "error", "code": code, "detail": detail}).decode()


def encode(frame: dict[str, Any]) -> str:
    return _ENCODER.encode(frame).decode()


HEARTBEAT_ACK = encode({"op": "heartbeat_ack"})


def parse(message: dict[str, Any]) -> dict[str, Any]:
    """A client frame (an ASGI ``websocket.receive`` message) as a JSON object with an ``op``."""
    text = message.get("text")
    if text is None:
        raise ProtocolError("not_json", "frames are JSON text frames, not binary")
    if len(text) > MAX_FRAME_BYTES // 4 and len(text.encode()) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", f"a frame holds at most {MAX_FRAME_BYTES} bytes")
    try:
        frame = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested deeper than the decoder goes
        raise ProtocolError("not_json", 'a frame must be one JSON object, such as {"op":"heartbeat"}') from None
    if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
        raise ProtocolError("no_op", 'a frame must be a JSON object with a string "op"')
    return frame


def hello_fields(frame: dict[str, Any]) -> tuple[str, int | None]:
    """``token`` and ``resume_from`` of a hello; positions are checked against the log later."""
    token, resume_from = frame.get("token"), frame.get("resume_from")
    if not isinstance(token, str) or not token:
        raise ProtocolError("bad_hello", 'hello needs "token": the token that login or register answered')
    if resume_from is not None and (
        isinstance(resume_from, bool) or not isinstance(resume_from, int) or not 0 <= resume_from <= MAX_POSITION
    ):
        raise ProtocolError(
            "bad_resume_from", "resume_from is the position of the last event received (a whole number >= 0) or null"
        )
    return token, resume_from


def typing_channel(frame: dict[str, Any]) -> str:
    """The ``channel_id`` of a typing frame."""
    channel_id = frame.get("channel_id")
    if not isinstance(channel_id, str) or not channel_id or len(channel_id) > 100:
        raise ProtocolError("bad_typing", 'typing needs "channel_id": the channel being typed in')
    return channel_id


def presence_status(frame: dict[str, Any]) -> Literal["active", "away"]:
    """The ``status`` of a presence frame."""
    status = frame.get("status")
    if status not in ("active", "away"):
        raise ProtocolError("bad_presence", 'presence needs "status": "active" or "away"')
    return status
