"""The EventStore contract: every backend must pass all of it."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.events import Event, EventMeta, NewEvent
from infra.eventstore import ANY, NO_STREAM, DuplicateEventId, EventStore, WrongExpectedVersion
from infra.eventstore.port import StreamAppend


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


# -- append_many: several streams, all or none --------------------------------------------------


async def versions(store: EventStore, *streams: str) -> list[list[int]]:
    return [[e.version for e in await store.read_stream(s)] for s in streams]


async def test_append_many_writes_every_stream_with_its_own_versions(store: EventStore) -> None:
    a, b = stream(), stream()
    await store.append(b, [new(0)], NO_STREAM)
    results = await store.append_many([StreamAppend(a, [new(1)], NO_STREAM), StreamAppend(b, [new(2), new(3)], 1)])
    assert [r.version for r in results] == [1, 3]
    [ea], eb = await store.read_stream(a), await store.read_stream(b)
    assert (ea.position, eb[-1].position) == (results[0].position, results[1].position)
    assert [e.event.n for e in eb] == [0, 2, 3]


@pytest.mark.parametrize("failing", [[0], [1], [0, 1]])
async def test_append_many_conflict_in_any_entry_appends_nothing_anywhere(
    store: EventStore, failing: list[int]
) -> None:
    a, b = stream(), stream()
    await store.append(a, [new(0)], NO_STREAM)
    await store.append(b, [new(0)], NO_STREAM)
    expected = [5 if i in failing else 1 for i in range(2)]
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append_many([StreamAppend(s, [new(1), new(2)], x) for s, x in zip((a, b), expected)])
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ((a, b)[failing[0]], 5, 1)
    assert await versions(store, a, b) == [[1], [1]]
    fresh = stream()  # NO_STREAM on a new stream passes, yet is not written when the other fails
    with pytest.raises(WrongExpectedVersion):
        await store.append_many([StreamAppend(fresh, [new(1)], NO_STREAM), StreamAppend(a, [new(1)], NO_STREAM)])
    assert await versions(store, fresh, a) == [[], [1]]


async def test_repeated_append_many_returns_the_first_results_and_appends_nothing(store: EventStore) -> None:
    a, b = stream(), stream()
    appends = [StreamAppend(a, [new(1), new(2)], NO_STREAM), StreamAppend(b, [new(3)], NO_STREAM)]
    first = await store.append_many(appends)
    await store.append(b, [new(4)], 1)  # the streams moved on: a repeat still gets the first answer
    assert await store.append_many(appends) == first
    assert await versions(store, a, b) == [[1, 2], [1, 2]]


async def test_partly_repeated_append_many_is_rejected_whole(store: EventStore) -> None:
    a, b, c = stream(), stream(), stream()
    first = [new(1)]
    await store.append_many([StreamAppend(a, first), StreamAppend(b, [new(2)])])
    with pytest.raises(DuplicateEventId):  # one entry repeated, the other new
        await store.append_many([StreamAppend(a, first), StreamAppend(c, [new(3)])])
    with pytest.raises(DuplicateEventId):  # an entry with a known id and a new one
        await store.append_many([StreamAppend(c, [new(3)]), StreamAppend(a, [first[0], new(4)])])
    with pytest.raises(DuplicateEventId):  # a known id sent to another stream
        await store.append_many([StreamAppend(c, first), StreamAppend(stream(), [new(5)])])
    assert await versions(store, a, b, c) == [[1], [1], []]


async def test_append_many_refuses_caller_bugs_before_writing(store: EventStore) -> None:
    a, b = stream(), stream()
    with pytest.raises(ValueError, match="twice"):
        await store.append_many([StreamAppend(a, [new(1)]), StreamAppend(b, [new(2)]), StreamAppend(a, [new(3)])])
    with pytest.raises(ValueError):
        await store.append_many([])
    with pytest.raises(ValueError):
        await store.append_many([StreamAppend(a, [new(1)]), StreamAppend(b, [])])
    assert await versions(store, a, b) == [[], []]


# -- expectations on streams an append reads but does not write ---------------------------------


async def test_an_append_expecting_other_streams_at_their_versions_is_written(store: EventStore) -> None:
    channel, session, message = stream(), stream(), stream()
    await store.append(channel, [new(0), new(1)], NO_STREAM)
    result = await store.append(message, [new(2)], NO_STREAM, expect=[(channel, 2), (session, 0)])
    assert result.version == 1 and [e.position for e in await store.read_stream(message)] == [result.position]
    [only] = await store.append_many([StreamAppend(stream(), [new(3)])], expect=[(channel, 2)])
    assert only.version == 1  # one result per written entry, none for an expectation
    assert await versions(store, channel, session) == [[1, 2], []]  # expected, not written


async def test_an_append_expecting_a_stream_that_moved_appends_nothing(store: EventStore) -> None:
    channel, message, other = stream(), stream(), stream()
    await store.append(channel, [new(0)], NO_STREAM)
    await store.append(channel, [new(1)], 1)  # a rename, a removal: the decision's read is stale
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append_many(
            [StreamAppend(message, [new(2)], NO_STREAM), StreamAppend(other, [new(3)])], expect=[(channel, 1)]
        )
    assert (info.value.stream_id, info.value.expected, info.value.actual) == (channel, 1, 2)
    assert await versions(store, message, other, channel) == [[], [], [1, 2]]


async def test_appends_expecting_a_stream_never_land_after_a_write_they_did_not_see(store: EventStore) -> None:
    """Many posts expecting their channel at version 1 race one write to the channel: every post
    that is written comes before that write in the log; the others are refused."""
    channel = stream()
    await store.append(channel, [new(0)], NO_STREAM)

    async def post(n: int) -> int | None:
        try:
            return (await store.append(stream(), [new(n)], NO_STREAM, expect=[(channel, 1)])).position
        except WrongExpectedVersion:
            return None

    # All queued before the store sends anything: one call could carry every one of them.
    posts = [asyncio.create_task(post(n)) for n in range(30)]
    rename = asyncio.create_task(store.append(channel, [new(99)], 1))
    more = [asyncio.create_task(post(n)) for n in range(30, 60)]
    written = [p for p in await asyncio.gather(*posts, *more) if p is not None]
    renamed = await rename
    assert written and all(p < renamed.position for p in written)
    assert len(written) < 60  # those queued after the write saw it and were refused


async def test_an_expectation_on_a_written_stream_is_a_caller_bug(store: EventStore) -> None:
    a = stream()
    with pytest.raises(ValueError):
        await store.append_many([StreamAppend(a, [new(1)])], expect=[(a, 0)])
    with pytest.raises(ValueError):
        await store.append_many([StreamAppend(a, [new(1)])], expect=[(stream(), -1)])
    assert await versions(store, a) == [[]]


async def test_concurrent_append_many_racing_for_one_claim_let_exactly_one_win(store: EventStore) -> None:
    claim = f"claim-{uuid.uuid4().hex}"
    others = [stream() for _ in range(10)]
    calls = [
        store.append_many([StreamAppend(claim, [new(i)], NO_STREAM), StreamAppend(other, [new(i)], NO_STREAM)])
        for i, other in enumerate(others)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    assert len(winners) == 1
    losers = [r for i, r in enumerate(results) if i not in winners]
    assert all(isinstance(r, WrongExpectedVersion) and r.stream_id == claim for r in losers)
    [claimed] = await store.read_stream(claim)
    assert claimed.event.n == winners[0]
    assert await versions(store, *others) == [[1] if i in winners else [] for i in range(10)]


async def test_append_many_mixed_with_single_appends_keeps_streams_contiguous_and_the_log_in_order(
    store: EventStore,
) -> None:
    start = await store.head()
    shared = [stream() for _ in range(6)]
    seen: list = []

    async def follow() -> None:
        async for batch in store.subscribe(start):
            seen.extend(batch)

    reader = asyncio.create_task(follow())
    written: list[tuple[str, list[int], int, int]] = []  # stream, ns, result version, result position

    async def worker(w: int) -> None:
        rng = random.Random(w)
        for i in range(15):
            picked = rng.sample(shared, rng.choice([1, 2, 3]))
            sizes = [rng.randint(1, 3) for _ in picked]
            entries = [StreamAppend(s, [new(w * 10_000 + i * 10 + k) for k in range(n)]) for s, n in zip(picked, sizes)]
            if len(entries) == 1 and rng.random() < 0.5:
                results = [await store.append(entries[0].stream_id, entries[0].events)]
            else:
                results = await store.append_many(entries)
            for entry, result in zip(entries, results, strict=True):
                written.append((entry.stream_id, [e.event.n for e in entry.events], result.version, result.position))

    await asyncio.gather(*(worker(w) for w in range(8)))
    total = sum(len(ns) for _, ns, _, _ in written)
    async with asyncio.timeout(30):
        while len(seen) < total:
            await asyncio.sleep(0.01)
    reader.cancel()
    positions = [e.position for e in seen]
    assert len(seen) == total and positions == sorted(set(positions)), "out of order, duplicated or extra"
    assert [e.position async for e in store.read_all(after=start)] == positions
    by_stream = {s: [e for e in seen if e.stream_id == s] for s in shared}
    for events in by_stream.values():
        assert [e.version for e in events] == list(range(1, len(events) + 1))
    for stream_id, ns, version, position in written:  # each answer names where its events landed
        landed = by_stream[stream_id][version - len(ns) : version]
        assert [e.event.n for e in landed] == ns and landed[-1].position == position


async def test_a_cancelled_append_many_caller_does_not_stall_the_others(store: EventStore) -> None:
    for delay in (0, 0.0005, 0.001, 0.002, 0.005, 0.02):
        calls = [
            asyncio.create_task(
                store.append_many([StreamAppend(stream(), [new(i)]), StreamAppend(stream(), [new(i)])])
                if i % 2
                else store.append(stream(), [new(i)])
            )
            for i in range(6)
        ]
        await asyncio.sleep(delay)
        calls[3].cancel()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 3)
    both = [StreamAppend(stream(), [new(1)]), StreamAppend(stream(), [new(2)])]
    assert [r.version for r in await asyncio.wait_for(store.append_many(both), 5)] == [1, 1]


async def test_an_event_the_log_cannot_hold_fails_alone(store: EventStore) -> None:
    from infra.eventstore.port import InvalidEvent

    streams = [stream() for _ in range(5)]
    calls = [asyncio.create_task(store.append(s, [new(i)])) for i, s in enumerate(streams)]
    poison = asyncio.create_task(store.append(stream(), [new(99, "a NUL \x00 in the text")]))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results), results
    try:
        await poison
    except InvalidEvent:
        pass  # refused before it was sent (PostgreSQL); a backend that can store NUL may accept it
    for s in streams:
        assert len(await store.read_stream(s)) == 1


async def test_appends_to_one_stream_land_in_call_order_even_when_a_batch_is_full(store: EventStore) -> None:
    big, s = stream(), stream()
    first = asyncio.create_task(store.append(big, [new(i) for i in range(9_500)]))
    a = asyncio.create_task(store.append(s, [new(i) for i in range(1_000)]))  # does not fit beside `first`
    b = asyncio.create_task(store.append(s, [new(-1)]))  # fits, but must not overtake `a`
    await asyncio.gather(first, a, b)
    events = await store.read_stream(s)
    assert [e.event.n for e in events] == [*range(1_000), -1]


async def test_close_answers_every_append_already_made(store: EventStore) -> None:
    calls = [asyncio.create_task(store.append(stream(), [new(i)])) for i in range(20)]
    await asyncio.sleep(0.001)  # some queued, some on the wire
    await store.close()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert all(not isinstance(r, asyncio.CancelledError) for r in results)


async def test_read_streams_reads_each_tail_in_the_order_asked(store: EventStore) -> None:
    a, b, missing = stream(), stream(), stream()
    await store.append(a, [new(1), new(2), new(3)], NO_STREAM)
    await store.append(b, [new(4)], NO_STREAM)
    tails = await store.read_streams([(b, 0), (missing, 0), (a, 1)])
    assert [[e.event for e in events] for events in tails] == [[Noted(n=4)], [], [Noted(n=2), Noted(n=3)]]
    assert [e.version for e in tails[2]] == [2, 3]
