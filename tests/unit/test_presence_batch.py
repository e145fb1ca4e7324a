"""presence.changed frames group people by status: the fan-out's frame as published, and the
gateway's merge of those frames per person (the latest status wins), for every socket and for
a slow one that is owed several flushes."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgspec
import pytest

from infra.presence import Change
from realtime.connection import Connection
from realtime.presence import frame
from realtime.presence_batch import PresenceData, WorkspacePresence, decode
from tests.integration.realtime_sink import RecordingSink

SEEN = dt.datetime(2026, 11, 28, 10, 9, 36, 123456, tzinfo=dt.UTC)
SEEN_TEXT = "2026-11-28T10:09:36.123456Z"


def _socket() -> tuple[Connection, RecordingSink]:
    sink = RecordingSink()
    conn = Connection(hub=None, user_id="u", session_id="s", queue_size=8, sink=sink)  # type: ignore[arg-type]
    conn.live = True
    return conn, sink


def _published(*changes: Change) -> PresenceData:
    """What the gateway reads from NATS after the fan-out published ``changes``."""
    return decode(frame("w", list(changes))).data


def _data(sink: RecordingSink) -> list[dict[str, Any]]:
    return [json.loads(text)["data"] for text in sink.frames()]


def test_the_published_frame_is_ids_by_status_and_only_the_offline_carry_last_seen_at() -> None:
    published = json.loads(
        frame("w", [Change("a", "online", SEEN), Change("b", "away", SEEN), Change("c", "offline", SEEN)])
    )
    assert published == {
        "op": "event",
        "type": "presence.changed",
        "workspace_id": "w",
        "data": {"online": ["a"], "away": ["b"], "offline": [{"user_id": "c", "last_seen_at": SEEN_TEXT}]},
    }
    assert json.loads(frame("w", [Change("a", "away", SEEN)]))["data"] == {"online": [], "away": ["a"], "offline": []}


def test_a_payload_of_another_shape_is_not_a_presence_frame() -> None:
    old = {
        "op": "event",
        "type": "presence.changed",
        "workspace_id": "w",
        "data": {"items": [{"user_id": "a", "status": "online", "last_seen_at": None}]},
    }
    with pytest.raises(msgspec.DecodeError):
        decode(json.dumps(old).encode())


def test_a_person_changing_twice_between_flushes_appears_once_in_the_latest_status() -> None:
    batch = WorkspacePresence("w")
    conn, sink = _socket()
    batch.add(_published(Change("x", "offline", SEEN), Change("y", "online", SEEN)))
    batch.add(_published(Change("x", "online", SEEN), Change("y", "away", SEEN)))
    batch.add(_published(Change("z", "away", SEEN)))
    batch.add(_published(Change("z", "offline", SEEN)))
    batch.flush({conn}, now=1.0)
    [data] = _data(sink)
    assert data == {"online": ["x"], "away": ["y"], "offline": [{"user_id": "z", "last_seen_at": SEEN_TEXT}]}
    assert json.loads(sink.frames()[0])["workspace_id"] == "w" and "position" not in json.loads(sink.frames()[0])


def test_an_owed_slow_socket_gets_the_flushes_it_missed_merged_per_person() -> None:
    batch = WorkspacePresence("w")
    (fast, sf), (slow, ss) = _socket(), _socket()
    ss.stalled = True
    missed = [
        (Change("x", "online", SEEN), Change("y", "online", SEEN)),
        (Change("x", "offline", SEEN),),
        (Change("y", "away", SEEN), Change("v", "online", SEEN)),
    ]
    for t, changes in enumerate(missed):
        batch.add(_published(*changes))
        batch.flush({fast, slow}, now=float(t))
    assert len(sf.written) == 3 and not ss.written
    ss.stalled = False
    batch.flush({fast, slow}, now=4.0)  # nothing new: only the slow one is written to
    [data] = _data(ss)
    assert data == {"online": ["v"], "away": ["y"], "offline": [{"user_id": "x", "last_seen_at": SEEN_TEXT}]}
    assert len(sf.written) == 3 and not batch.busy
