"""The gateway's per-process pieces without sockets: a slow socket is cut off with 4008 instead of
holding anyone up, repeats are dropped by position, the hub hands events out in log order even
when NATS subscriptions hand them over out of order, and what a socket buffered while it re-synced
its memberships goes out only if the user may still see it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from infra.eventstore.port import EventStore
from infra.eventstore.postgres import PostgresEventStore
from realtime import subjects
from realtime.connection import TOO_SLOW, Connection
from realtime.gateway import STATE_KEY as GATEWAY
from realtime.hub import Hub
from realtime.subjects import Envelope
from realtime.wire import split_text_frames, text_frames
from tests.integration.conftest import register
from tests.integration.messaging_helpers import (
    add_to_channel,
    channels_of,
    create_channel,
    create_workspace,
    join_workspace,
)
from tests.integration.realtime_sink import RecordingSink


def _conn(queue_size: int = 4, stalled: bool = False) -> tuple[Connection, RecordingSink]:
    sink = RecordingSink()
    sink.stalled = stalled
    conn = Connection(hub=None, user_id="u", session_id="s", queue_size=queue_size, sink=sink)  # type: ignore[arg-type]
    conn.buffer = None  # live
    conn.subjects = {subjects.channel("c")}
    return conn, sink


def _envelope(position: int, subject: str = subjects.channel("c"), **extra: Any) -> Envelope:
    return Envelope(subject, position, (f'{{"op":"event","position":{position}}}',), **extra)


def test_a_socket_whose_client_falls_behind_is_closed_with_4008_and_a_resume_hint() -> None:
    conn, sink = _conn(queue_size=3, stalled=True)
    for position in range(1, 4):
        conn.offer(_envelope(position))
        conn.flush()
    conn.offer(_envelope(4))
    conn.offer(_envelope(5))
    conn.flush()  # one write of two frames: neither is sent
    assert conn.done.is_set() and conn.close_code == TOO_SLOW
    assert "resume_from 3" in conn.close_reason
    conn.offer(_envelope(9))  # a closed socket takes nothing more
    conn.flush()
    assert len(sink.frames()) == 3


def test_a_client_that_catches_up_may_fall_behind_again() -> None:
    conn, sink = _conn(queue_size=3, stalled=True)
    for position in range(1, 4):
        conn.offer(_envelope(position))
        conn.flush()
    sink.stalled = False
    conn.offer(_envelope(4))  # the client read what was waiting
    conn.flush()
    sink.stalled = True
    for position in range(5, 8):
        conn.offer(_envelope(position))
        conn.flush()
    assert not conn.done.is_set() and len(sink.frames()) == 7


def test_a_socket_that_buffers_too_much_while_catching_up_is_closed_with_4008() -> None:
    conn, sink = _conn(queue_size=1)
    conn.buffer = []
    for position in range(1, conn.buffer_limit + 2):
        conn.offer(_envelope(position))
    assert conn.close_code == TOO_SLOW and not sink.written


def test_an_event_at_or_below_the_last_position_is_dropped() -> None:
    conn, sink = _conn()
    conn.offer(_envelope(5))
    conn.offer(_envelope(5, subjects.user("u")))  # the same event on the user's own subject
    conn.offer(_envelope(4))
    conn.flush()
    assert sink.frames() == ['{"op":"event","position":5}'] and conn.position == 5


def test_what_one_dispatch_pass_offers_a_socket_is_one_write_in_order() -> None:
    conn, sink = _conn()
    for position in (1, 2, 3):
        conn.offer(_envelope(position))
    assert not sink.written
    conn.flush()
    assert len(sink.written) == 1 and [f[-2] for f in sink.frames()] == ["1", "2", "3"]


def test_frames_are_unmasked_text_frames_of_every_length_class() -> None:
    texts = ["", "a" * 125, "é" * 63, "b" * 126, "c" * 65_535, "d" * 65_536]
    wire = text_frames(texts)
    assert split_text_frames(wire) == texts
    assert wire[:2] == b"\x81\x00" and all(byte & 0x80 == 0 for byte in wire[1:2])


@dataclass
class _Msg:
    subject: str
    position: int
    data: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.headers = {subjects.POSITION: str(self.position)}


@dataclass(eq=False)
class _Listener:
    session_id: str = "s"
    got: list[int] = field(default_factory=list)

    def offer(self, envelope: Envelope) -> None:
        self.got.append(envelope.position)

    def request_sync(self, after: int) -> None:
        pass

    def flush(self) -> None:
        pass


async def test_the_hub_hands_out_in_log_order_whatever_order_subscriptions_deliver_in() -> None:
    hub = Hub(nats_url="nats://unused", store=None, pool=None, read_models=())  # type: ignore[arg-type]
    listener = _Listener()
    for subject in ("hubbub.ch.a", "hubbub.user.u"):
        hub.listeners[subject].add(listener)  # type: ignore[arg-type]
    dispatcher = asyncio.create_task(hub._dispatch())
    try:
        # One read from the NATS socket: subscription "a" runs its callbacks before "user" does.
        for msg in (_Msg("hubbub.ch.a", 1), _Msg("hubbub.ch.a", 3), _Msg("hubbub.user.u", 2)):
            await hub._collect(msg)  # type: ignore[arg-type]
        for _ in range(3):
            await asyncio.sleep(0)
        assert listener.got == [1, 2, 3]
    finally:
        dispatcher.cancel()


class _Unsubscribed:
    """What a socket's sync needs of its hub (the database, the log, the read models), without
    NATS: the test hands the socket its live events itself, at the moment it chooses."""

    def __init__(self, pool: AsyncConnectionPool, store: EventStore, read_models: tuple[str, ...]) -> None:
        self.pool, self.store, self.read_models = pool, store, read_models

    async def watch(self, conn: Connection, wanted: Any) -> None:
        pass

    async def unwatch(self, conn: Connection, unwanted: Any) -> None:
        pass


async def test_an_event_of_a_channel_lost_during_a_resync_is_dropped_from_the_buffer(
    api: AsyncTestClient, pool: AsyncConnectionPool, migrated_url: str
) -> None:
    team = await create_workspace(api, await register(api, "Owner"))
    lou = await join_workspace(api, team, "Lou")
    hush = await create_channel(api, team, team.owner, "hush", private=True)
    await add_to_channel(api, team, hush, team.owner, lou)
    assert hush in await channels_of(api, team, lou)  # the read models have it
    store = PostgresEventStore(pool, migrated_url)
    sink = RecordingSink()
    conn = Connection(
        _Unsubscribed(pool, store, api.app.state[GATEWAY].hub.read_models),  # type: ignore[arg-type]
        lou.id,
        "s",
        queue_size=16,
        sink=sink,
    )
    upto = await conn.settle()
    conn.follow(upto, upto)
    assert conn.syncer is not None
    await conn.syncer
    conn.live = True
    assert subjects.channel(hush) in conn.subjects and conn.buffer is None

    removed = await api.delete(f"/api/v1/channels/{hush}/members/{lou.id}", headers=team.owner.auth)
    assert removed.status_code == 200, removed.text
    team.position = removed.json()["position"]
    assert hush not in await channels_of(api, team, lou)
    conn.request_sync(team.position)  # what the hub does when the removal reaches the socket
    # Two events published after the sync reads the read models' position, so above it: a post in
    # the channel (it comes while the socket still listens there) and one on the user's own subject.
    late = await store.head() + 1
    conn.offer(Envelope(subjects.channel(hush), late, ('{"op":"event","said":"in hush"}',)))
    conn.offer(Envelope(subjects.user(lou.id), late + 1, ('{"op":"event","said":"to lou"}',)))
    assert not sink.written  # buffered while the sync runs
    assert conn.syncer is not None
    await conn.syncer
    assert subjects.channel(hush) not in conn.subjects
    assert sink.frames() == ['{"op":"event","said":"to lou"}'] and conn.position == late + 1
