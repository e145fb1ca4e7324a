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

The frame groups people by status (``PresenceData``), as Slack's batched ``presence_change``
does: an online or away person costs only their quoted id; only offline people carry a
``last_seen_at`` (a lost connection's is a heartbeat timeout before the change, so it is news;
an online or away person's is "now"). ``realtime/presence.py`` publishes the same shape on NATS,
one frame per workspace a second; a flush here merges those frames per person, the latest wins.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from typing import TYPE_CHECKING, Literal, assert_never

import msgspec

from realtime.wire import text_frame

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from realtime.connection import Connection

HISTORY = 16
"""Flushes a socket may miss before it is closed (16 flushes, 1.25 s apart at least: 20 s behind)."""
TOO_SLOW = 4008


class Offline(msgspec.Struct, frozen=True):
    user_id: str
    last_seen_at: dt.datetime | None


class PresenceData(msgspec.Struct, frozen=True):
    """A ``presence.changed`` frame's ``data``: each person at most once, under their status.
    All three lists are always there (possibly empty), so clients iterate without checks."""

    online: list[str]
    away: list[str]
    offline: list[Offline]


class PresenceChanged(msgspec.Struct, frozen=True, kw_only=True):
    """The frame as sockets get it, and as ``realtime/presence.py`` publishes it (no position)."""

    op: Literal["event"] = "event"
    type: Literal["presence.changed"] = "presence.changed"
    workspace_id: str | None
    data: PresenceData


Latest = Literal["online", "away"] | Offline
"""A person's latest status: online or away, or the offline item with its last_seen_at."""

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(PresenceChanged)


def decode(payload: bytes) -> PresenceChanged:
    """A published frame; ``msgspec.DecodeError`` if it is not one."""
    return _DECODER.decode(payload)


def grouped(latest: Iterable[tuple[str, Latest]]) -> PresenceData:
    data = PresenceData([], [], [])
    for user_id, status in latest:
        match status:
            case "online":
                data.online.append(user_id)
            case "away":
                data.away.append(user_id)
            case Offline():
                data.offline.append(status)
            case _:
                assert_never(status)
    return data


class WorkspacePresence:
    __slots__ = ("_history", "_owed", "_seq", "pending", "sent_at", "workspace_id")

    def __init__(self, workspace_id: str | None) -> None:
        self.workspace_id = workspace_id
        self.pending: dict[str, Latest] = {}
        """user_id -> their latest status since the last flush."""
        self.sent_at = float("-inf")
        self._seq = 0
        self._history: deque[tuple[int, dict[str, Latest]]] = deque(maxlen=HISTORY)
        self._owed: dict[Connection, int] = {}
        """Sockets skipped while their clients were behind -> the first flush they missed."""

    def add(self, data: PresenceData) -> None:
        """Merge a published frame into what the next flush sends: the latest status wins."""
        pending = self.pending
        for user_id in data.online:
            pending[user_id] = "online"
        for user_id in data.away:
            pending[user_id] = "away"
        for item in data.offline:
            pending[item.user_id] = item

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
        latest: dict[str, Latest] = {}
        for seq, flushed in self._history:
            if seq >= since:
                latest.update(flushed)  # later flushes win, as in add
        frame = PresenceChanged(workspace_id=self.workspace_id, data=grouped(latest.items()))
        return text_frame(_ENCODER.encode(frame).decode())
