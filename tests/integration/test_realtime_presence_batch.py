"""A workspace's presence frames in one gateway process: one frame per flush, the same bytes to
every socket; a socket whose client is behind is skipped and later gets what it missed merged
into one frame, never a backlog of them."""

from __future__ import annotations

import json

from realtime.connection import TOO_SLOW, Connection
from realtime.presence_batch import HISTORY, PresenceData, WorkspacePresence
from tests.integration.realtime_sink import RecordingSink


class _Sink(RecordingSink):
    def statuses(self) -> list[dict[str, str]]:
        frames = [json.loads(text)["data"] for text in self.frames()]
        return [
            {u: s for s in ("online", "away") for u in f[s]} | {i["user_id"]: "offline" for i in f["offline"]}
            for f in frames
        ]


def _socket() -> tuple[Connection, _Sink]:
    sink = _Sink()
    conn = Connection(hub=None, user_id="u", session_id="s", queue_size=8, sink=sink)  # type: ignore[arg-type]
    conn.live = True
    return conn, sink


def _item(user_id: str, status: str) -> PresenceData:
    return PresenceData([user_id] if status == "online" else [], [user_id] if status == "away" else [], [])


def test_every_socket_gets_the_same_bytes_once_per_flush() -> None:
    batch = WorkspacePresence("w")
    (a, sa), (b, sb) = _socket(), _socket()
    for item in (_item("x", "away"), _item("y", "online"), _item("x", "online")):
        batch.add(item)
    batch.flush({a, b}, now=1.0)
    assert sa.written == sb.written and sa.written[0] is sb.written[0]
    assert sa.statuses() == [{"x": "online", "y": "online"}]
    batch.flush({a, b}, now=2.0)  # nothing new: nothing sent
    assert len(sa.written) == 1 and not batch.busy


def test_a_socket_whose_client_is_behind_gets_what_it_missed_merged_in_one_frame() -> None:
    batch = WorkspacePresence("w")
    (fast, sf), (slow, ss) = _socket(), _socket()
    ss.stalled = True
    for t, (user, status) in enumerate([("x", "away"), ("y", "away"), ("x", "online")]):
        batch.add(_item(user, status))
        batch.flush({fast, slow}, now=float(t))
    assert len(sf.written) == 3 and not ss.written and batch.busy
    ss.stalled = False
    batch.flush({fast, slow}, now=4.0)  # nothing new, but the slow one is owed
    assert ss.statuses() == [{"x": "online", "y": "away"}] and len(sf.written) == 3
    assert not batch.busy


def test_a_socket_behind_for_longer_than_the_history_is_closed_with_4008() -> None:
    batch = WorkspacePresence("w")
    conn, sink = _socket()
    sink.stalled = True
    for t in range(HISTORY + 1):
        batch.add(_item("x", "away" if t % 2 else "online"))
        batch.flush({conn}, now=float(t))
    assert conn.close_code == TOO_SLOW and not sink.written
