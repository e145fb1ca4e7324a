"""The EventStore contract: every backend must pass all of it."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.events import Event, EventMeta, NewEvent
from infra.eventstore import ANY, NO_STREAM, DuplicateEventId, EventStore, WrongExpectedVersion


class Noted(Event, frozen=True, tag="test.noted"):
    n: int
    text: str = ""


def new(n: int, text: str = "", event_id: uuid.UUID | None = None) -> NewEvent:
    meta = EventMeta(actor_id="u1", correlation_id="c1", occurred_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    return NewEvent(event=Noted(n=n, text=text), event_id=event_id or uuid.uuid4(), meta=meta)


def stream() -> str:
    return f"test-{uuid.uuid4().hex}"


async def take(store: EventStore, after: int, count: int, timeout: float = 10) -> list:
    seen: list = []

    async def consume() -> None:
        async for batch in store.subscribe(after):
            seen.extend(batch)
            if len(seen) >= count:
                return

    await asyncio.wait_for(consume(), timeout)
    return seen


async def test_append_then_read_stream_round_trips_events_and_metadata(store: EventStore) -> None:
    s = stream()
    result = await store.append(s, [new(1, "héllo"), new(2)], NO_STREAM)
    events = await store.read_stream(s)
    assert [e.version for e in events] == [1, 2]
    assert [e.event for e in events] == [Noted(n=1, text="héllo"), Noted(n=2)]
    assert events[0].meta.actor_id == "u1" and events[0].meta.occurred_at == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert events[0].position < events[1].position == result.position
    assert result.version == 2
    assert [e.version for e in await store.read_stream(s, after_version=1)] == [2]


async def test_expected_version_conflict_appends_nothing(store: EventStore) -> None:
    s = stream()
    await store.append(s, [new(1)], NO_STREAM)
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append(s, [new(2), new(3)], NO_STREAM)
    assert info.value.actual == 1
    with pytest.raises(WrongExpectedVersion):
        await store.append(s, [new(2)], 5)
    assert [e.version for e in await store.read_stream(s)] == [1]
    assert (await store.append(s, [new(2)], 1)).version == 2


async def test_concurrent_appends_at_the_same_version_let_exactly_one_win(store: EventStore) -> None:
    s = stream()
    await store.append(s, [new(0)], NO_STREAM)
    results = await asyncio.gather(*(store.append(s, [new(i)], 1) for i in range(10)), return_exceptions=True)
    wins = [r for r in results if not isinstance(r, Exception)]
    assert len(wins) == 1
    assert all(isinstance(r, WrongExpectedVersion) for r in results if r not in wins)
    assert len(await store.read_stream(s)) == 2


async def test_repeated_append_returns_first_result_and_appends_nothing(store: EventStore) -> None:
    s = stream()
    batch = [new(1), new(2)]
    first = await store.append(s, batch, NO_STREAM)
    again = await store.append(s, batch, NO_STREAM)  # a retry after a lost answer
    assert again == first
    assert len(await store.read_stream(s)) == 2


async def test_racing_repeats_append_once(store: EventStore) -> None:
    s = stream()
    batch = [new(1)]
    results = await asyncio.gather(*(store.append(s, batch, ANY) for _ in range(8)))
    assert len(set(results)) == 1
    assert len(await store.read_stream(s)) == 1


async def test_partly_repeated_event_ids_are_rejected_whole(store: EventStore) -> None:
    s = stream()
    known = new(1)
    await store.append(s, [known])
    with pytest.raises(DuplicateEventId):
        await store.append(s, [known, new(2)])
    with pytest.raises(DuplicateEventId):
        await store.append(stream(), [known])
    assert len(await store.read_stream(s)) == 1


async def test_read_all_is_in_log_order_after_a_position(store: EventStore) -> None:
    start = await store.head()
    a, b = stream(), stream()
    await store.append(a, [new(1)])
    await store.append(b, [new(2), new(3)])
    await store.append(a, [new(4)])
    events = [e async for e in store.read_all(after=start)]
    assert [e.event.n for e in events] == [1, 2, 3, 4]
    assert [e.stream_id for e in events] == [a, b, b, a]
    assert events[-1].position == await store.head()
    assert [e.event.n async for e in store.read_all(after=events[1].position, limit=1)] == [3]


async def test_subscriber_catches_up_then_follows_live(store: EventStore) -> None:
    start = await store.head()
    s = stream()
    await store.append(s, [new(1)])
    task = asyncio.create_task(take(store, start, 3))
    await asyncio.sleep(0.1)
    await store.append(s, [new(2)])
    await store.append(s, [new(3)])
    seen = await task
    assert [e.event.n for e in seen] == [1, 2, 3]


async def test_subscriber_wakes_within_milliseconds_of_a_commit(store: EventStore) -> None:
    start = await store.head()
    task = asyncio.create_task(take(store, start, 1))
    await asyncio.sleep(0.2)  # let it go idle, waiting for a wake-up
    sent = asyncio.get_running_loop().time()
    await store.append(stream(), [new(1)])
    await task
    # Far below the 1 s safety poll: it was woken, not polled. (Speed is measured in bench/.)
    assert asyncio.get_running_loop().time() - sent < 0.5


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writers=st.integers(2, 16), per_writer=st.integers(1, 30), batch=st.integers(1, 5))
async def test_concurrent_appenders_and_a_live_subscriber_see_every_event_once_in_order(
    store: EventStore, writers: int, per_writer: int, batch: int
) -> None:
    start = await store.head()
    expected = writers * per_writer * batch
    reader = asyncio.create_task(take(store, start, expected, timeout=60))

    async def writer(w: int) -> None:
        s = stream()
        for i in range(per_writer):
            await store.append(s, [new(w * 10_000 + i * 10 + k) for k in range(batch)], i * batch)
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(w) for w in range(writers)))
    seen = await reader
    positions = [e.position for e in seen]
    assert positions == sorted(set(positions)), "out of order or duplicated"
    assert len(seen) == expected
    replay = [e.position async for e in store.read_all(after=start)]
    assert replay == positions
    by_stream: dict[str, list[int]] = {}
    for e in seen:
        by_stream.setdefault(e.stream_id, []).append(e.version)
    assert all(v == list(range(1, len(v) + 1)) for v in by_stream.values()), "a stream's versions out of order"


async def test_event_of_unknown_type_reads_as_unknown(store: EventStore) -> None:
    class Later(Event, frozen=True, tag="test.later_version_only"):
        x: int

    s = stream()
    await store.append(s, [NewEvent(event=Later(x=1), event_id=uuid.uuid4())])
    [recorded] = await store.read_stream(s)
    assert recorded.type == "test.later_version_only"
    assert msgspec.json.decode(msgspec.json.encode(recorded.event))["x"] == 1


async def test_a_caller_giving_up_does_not_stall_the_others(store: EventStore) -> None:
    # Give up while the append is queued, while it is on the wire, and after it landed.
    for delay in (0, 0.0005, 0.001, 0.002, 0.005, 0.02):
        calls = [asyncio.create_task(store.append(stream(), [new(i)])) for i in range(6)]
        await asyncio.sleep(delay)
        calls[2].cancel()  # a request timed out, or its client went away
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 2)
    assert (await asyncio.wait_for(store.append(stream(), [new(9)]), 5)).version == 1
