"""A workspace's ``presence.changed`` frames in one gateway process: changes gathered between
two flushes, one frame built per flush and written as the same bytes to every socket of the
workspace (presence is the same for all its members: ``realtime/access.py`` gives the workspace
subject, and so its presence companion, to every non-guest member and no one else).

A socket whose client has not read what it was sent (its transport is paused) is skipped, not
queued to: it is *owed* the flushes it missed, and gets them merged into one frame (the latest
status of each person) at the first flush after its client caught up. So a slow client gets
fewer frames, each smaller than the ones it missed together, and never a burst of them. What it
is owed is kept for ``HISTORY`` flushes; a socket still behind after that is closed with 4008
(it reconnects and reads the presence list again).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec

from realtime.wire import text_frame

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from realtime.connection import Connection

HISTORY = 16
"""Flushes a socket may miss before it is closed (16 flushes, 1.25 s apart at least: 20 s behind)."""
TOO_SLOW = 4008

_ENCODER = msgspec.json.Encoder()


class WorkspacePresence:
    __slots__ = ("workspace_id", "pending", "sent_at", "_seq", "_history", "_owed")

    def __init__(self, workspace_id: str | None) -> None:
        self.workspace_id = workspace_id
        self.pending: dict[str, Any] = {}
        """user_id -> the latest item since the last flush."""
        self.sent_at = float("-inf")
        self._seq = 0
        self._history: deque[tuple[int, dict[str, Any]]] = deque(maxlen=HISTORY)
        self._owed: dict[Connection, int] = {}
        """Sockets skipped while their clients were behind -> the first flush they missed."""

    def add(self, items: Iterable[dict[str, Any]]) -> None:
        for item in items:
            self.pending[item["user_id"]] = item  # the latest status wins

    @property
    def busy(self) -> bool:
        """Whether a flush has anything to do."""
        return bool(self.pending or self._owed)

    def flush(self, listeners: Collection[Connection], now: float) -> None:
        self.sent_at = now
        new = bool(self.pending)
        if new:
            self._seq += 1
            self._history.append((self._seq, self.pending))
            self.pending = {}
        frames: dict[int, bytes] = {}  # first flush included -> the frame, built once
        for conn in listeners if new else list(self._owed):
            if not conn.live or conn not in listeners:  # before ready, a client reads the list after it
                continue
            first = self._owed.get(conn)
            if first is not None and first <= self._seq - HISTORY:  # what it missed is let go
                conn.close_soon(TOO_SLOW, "too slow for presence; reconnect and read the presence list")
                continue
            if conn.sink is not None and conn.sink.paused():
                if first is None and new:
                    self._owed[conn] = self._seq
                continue
            if first is None and not new:
                continue
            since = self._seq if first is None else first
            self._owed.pop(conn, None)
            if since not in frames:
                frames[since] = self._frame(since)
            conn.write(frames[since])
        self._owed = {c: s for c, s in self._owed.items() if not c.done.is_set() and c in listeners}
        keep = min(self._owed.values(), default=self._seq + 1)  # what no one is owed is let go
        while self._history and self._history[0][0] < keep:
            self._history.popleft()

    def _frame(self, since: int) -> bytes:
        items: dict[str, Any] = {}
        for seq, flushed in self._history:
            if seq >= since:
                items.update(flushed)
        return text_frame(_ENCODER.encode({"op": "event", "type": "presence.changed", "workspace_id": self.workspace_id,
                                           "data": {"items": list(items.values())}}).decode())
