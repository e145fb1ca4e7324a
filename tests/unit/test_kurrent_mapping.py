"""KurrentDB backend without a server: the pure mappings, then the append/read logic over a fake
client that mimics KurrentDB's documented semantics (0-based stream positions, gapped commit
positions, per-stream id dedupe only for an explicit expected version, reads from a commit
position that include it, subscriptions that exclude it). The real contract runs in
tests/contract when HUBBUB_KURRENTDB_URL is set."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from kurrentdbclient import RecordedEvent as KRecordedEvent
from kurrentdbclient import StreamState
from kurrentdbclient.common import construct_filter_exclude_regex
from kurrentdbclient.exceptions import NotFoundError, WrongCurrentVersionError

from domain.events import Event, EventCodec, EventMeta, NewEvent, RecordedEvent, UnknownEvent
from infra.eventstore import ANY, NO_STREAM, AppendResult, DuplicateEventId, WrongExpectedVersion
from infra.eventstore.kurrent import (
    CLAIM_PREFIX,
    EXCLUDED_STREAMS,
    KurrentEventStore,
    claim_stream,
    claimed_by,
    current_version_for,
    drain_ready,
    is_ours,
    repeat_result,
    start_position,
    to_claim_event,
    to_new_event,
    to_recorded,
    version_from_current,
)

WHEN = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


class Pinged(Event, frozen=True, tag="test.kurrent_pinged"):
    n: int


def raw(
    stream: str = "channel-1",
    type_: str = "test.kurrent_pinged",
    data: bytes = b'{"type":"test.kurrent_pinged","n":1}',
    metadata: bytes = b'{"actor_id":"u1","occurred_at":"2026-01-02T00:00:00Z"}',
    position: int = 0,
    commit: int = 1234,
    recorded_at: dt.datetime | None = WHEN,
    event_id: uuid.UUID | None = None,
    link: KRecordedEvent | None = None,
) -> KRecordedEvent:
    return KRecordedEvent(
        type=type_, data=data, metadata=metadata, content_type="application/json", id=event_id or uuid.uuid4(),
        stream_name=stream, stream_position=position, commit_position=commit, prepare_position=commit,
        recorded_at=recorded_at, link=link,
    )  # fmt: skip


def new(n: int, event_id: uuid.UUID | None = None) -> NewEvent:
    return NewEvent(event=Pinged(n=n), event_id=event_id or uuid.uuid4(), meta=EventMeta(actor_id="u1"))


# -- versions and positions -------------------------------------------------------------------


def test_expected_versions_map_to_zero_based_current_versions() -> None:
    assert current_version_for(ANY) is StreamState.ANY
    assert current_version_for(NO_STREAM) is StreamState.NO_STREAM
    assert current_version_for(1) == 0
    assert current_version_for(7) == 6
    with pytest.raises(ValueError, match="expected_version"):
        current_version_for(-1)


def test_current_versions_map_back_to_our_versions() -> None:
    assert version_from_current(StreamState.NO_STREAM) == 0
    assert version_from_current(0) == 1
    assert version_from_current(41) == 42
    assert version_from_current(StreamState.ANY) is None
    assert version_from_current(StreamState.EXISTS) is None
    assert version_from_current(None) is None
    assert all(version_from_current(current_version_for(v)) == v for v in range(50))


def test_the_actual_version_in_a_client_conflict_error_maps_to_ours() -> None:
    # The client turns the server's -1 into StreamState.NO_STREAM; revisions stay 0-based ints.
    assert version_from_current(WrongCurrentVersionError("x", actual_version=-1).actual_version) == 0
    assert version_from_current(WrongCurrentVersionError("x", actual_version=3).actual_version) == 4
    assert version_from_current(WrongCurrentVersionError("x").actual_version) is None


def test_reads_start_at_the_log_start_for_zero_else_at_the_position() -> None:
    assert start_position(0) is None
    assert start_position(98765) == 98765


# -- filtering ------------------------------------------------------------------------------


def test_only_our_events_pass_the_filter() -> None:
    assert is_ours(raw())
    assert not is_ours(raw(stream="$$channel-1", type_="$metadata"))
    assert not is_ours(raw(stream="$ce-channel", type_="$>"))
    assert not is_ours(raw(stream="$stats-127.0.0.1:2113", type_="$statsCollected"))
    assert not is_ours(raw(type_="$>"))
    assert not is_ours(raw(stream=claim_stream(uuid.uuid4()), type_="hubbub.event_id_claimed"))
    assert not is_ours(raw(link=raw(stream="$et-x")))


def test_the_server_side_stream_filter_excludes_system_streams_and_claims() -> None:
    regex = re.compile(construct_filter_exclude_regex(EXCLUDED_STREAMS))
    assert regex.match("channel-1") and regex.match("message-abc") and regex.match("test-0f")
    assert not regex.match("$all") and not regex.match("$$channel-1") and not regex.match("$ce-channel")
    assert not regex.match(claim_stream(uuid.uuid4()))
    assert regex.match(CLAIM_PREFIX.rstrip("-"))  # only the prefix with its dash is ours


# -- encoding and decoding ------------------------------------------------------------------


def test_new_events_are_typed_json_with_our_id_and_metadata() -> None:
    codec, event_id = EventCodec(), uuid.uuid4()
    meta = EventMeta(actor_id="u1", correlation_id="c1", occurred_at=WHEN)
    out = to_new_event(NewEvent(event=Pinged(n=3), event_id=event_id, meta=meta), codec)
    assert (out.type, out.id, out.content_type) == ("test.kurrent_pinged", event_id, "application/json")
    assert msgspec.json.decode(out.data) == {"type": "test.kurrent_pinged", "n": 3}
    assert codec.decode_meta(out.metadata) == meta


def test_recorded_events_decode_with_version_one_above_the_stream_position() -> None:
    event_id = uuid.uuid4()
    got = to_recorded(raw(position=4, commit=5551, event_id=event_id), EventCodec())
    assert got == RecordedEvent(
        position=5551, stream_id="channel-1", version=5, event_id=event_id, event=Pinged(n=1),
        meta=EventMeta(actor_id="u1", occurred_at=WHEN), recorded_at=WHEN,
    )  # fmt: skip


def test_recorded_at_falls_back_to_occurred_at_then_to_now() -> None:
    codec, now = EventCodec(), dt.datetime(2030, 5, 5, tzinfo=dt.UTC)
    assert to_recorded(raw(recorded_at=None), codec, now).recorded_at == WHEN
    assert to_recorded(raw(recorded_at=None, metadata=b"{}"), codec, now).recorded_at == now
    assert to_recorded(raw(recorded_at=None, metadata=b""), codec, now).meta == EventMeta()


def test_a_type_this_build_does_not_know_decodes_as_unknown() -> None:
    data = b'{"type":"test.kurrent_from_the_future","x":1}'
    got = to_recorded(raw(type_="test.kurrent_from_the_future", data=data), EventCodec())
    assert got.event == UnknownEvent(type="test.kurrent_from_the_future", data=data)


def test_a_new_event_round_trips_through_a_recorded_one() -> None:
    codec, original = EventCodec(), new(9)
    out = to_new_event(original, codec)
    back = to_recorded(raw(type_=out.type, data=out.data, metadata=out.metadata, event_id=out.id), codec)
    assert (back.event, back.event_id, back.meta) == (original.event, original.event_id, original.meta)


def test_claims_name_their_stream_and_never_share_an_id() -> None:
    first, second = to_claim_event("channel-1"), to_claim_event("channel-1")
    assert first.id != second.id  # a second claim must conflict, not be deduplicated
    assert claimed_by(raw(stream=claim_stream(uuid.uuid4()), data=first.data)) == "channel-1"


# -- repeats and batches --------------------------------------------------------------------


def test_a_repeat_answers_with_the_last_event_of_the_first_append() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    stored = [raw(event_id=a, position=3, commit=700), raw(event_id=b, position=4, commit=900)]
    assert repeat_result("s", [a, b], stored) == AppendResult(900, 5)
    assert repeat_result("s", [uuid.uuid4()], stored) is None
    with pytest.raises(DuplicateEventId):
        repeat_result("s", [a, uuid.uuid4()], stored)


def test_batches_take_what_is_ready_up_to_the_limit_and_stop_at_an_error() -> None:
    codec = EventCodec()
    events = [to_recorded(raw(commit=c), codec) for c in range(1, 8)]
    queue: asyncio.Queue[RecordedEvent | BaseException] = asyncio.Queue()
    for e in events[1:]:
        queue.put_nowait(e)
    assert drain_ready(queue, events[0], 3) == (events[:3], None)
    assert drain_ready(queue, queue.get_nowait(), 100) == (events[3:], None)
    boom = RuntimeError("lost")
    queue.put_nowait(boom)
    assert drain_ready(queue, events[0], 10) == ([events[0]], boom)
    assert drain_ready(queue, boom, 10) == ([], boom)


# -- the store over a fake client -----------------------------------------------------------


class _Read:
    def __init__(self, items: Sequence[KRecordedEvent]) -> None:
        self._items = iter(list(items))

    async def __aenter__(self) -> _Read:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> _Read:
        return self

    async def __anext__(self) -> KRecordedEvent:
        await asyncio.sleep(0)
        try:
            return next(self._items)
        except StopIteration:
            raise StopAsyncIteration from None


class FakeKurrent:
    """KurrentDB as its docs describe it, in memory; yields to the loop inside every call."""

    def __init__(self) -> None:
        self.log: list[KRecordedEvent] = [raw(stream="$epoch", type_="$epoch-information", commit=0)]
        self.streams: dict[str, list[KRecordedEvent]] = {}
        self._commit = itertools.count(1000, 137)  # gapped, like real commit positions
        self.appended = asyncio.Event()

    async def append_to_stream(self, stream_name: str, *, events: Any, current_version: Any) -> int:
        await asyncio.sleep(0)
        stream = self.streams.get(stream_name, [])
        events = list(events)
        actual: int | StreamState = len(stream) - 1 if stream else StreamState.NO_STREAM
        if current_version is not StreamState.ANY and current_version != actual:
            start = 0 if current_version is StreamState.NO_STREAM else current_version + 1
            window = stream[start : start + len(events)]
            if [e.id for e in window] == [e.id for e in events]:  # the server's own id check
                return window[-1].commit_position
            raise WrongCurrentVersionError("conflict", stream_name=stream_name, actual_version=actual)
        for e in events:
            recorded = raw(stream_name, e.type, e.data, e.metadata, len(stream), next(self._commit), WHEN, e.id)
            stream.append(recorded)
            self.log.append(recorded)
        self.streams[stream_name] = stream
        self.appended.set()
        return stream[-1].commit_position

    async def get_current_version(self, stream_name: str) -> int | StreamState:
        await asyncio.sleep(0)
        stream = self.streams.get(stream_name)
        return len(stream) - 1 if stream else StreamState.NO_STREAM

    async def get_stream(
        self, stream_name: str, *, stream_position: int | None = None, limit: int = 10**9
    ) -> tuple[KRecordedEvent, ...]:
        await asyncio.sleep(0)
        if stream_name not in self.streams:
            raise NotFoundError(stream_name)
        return tuple(self.streams[stream_name][stream_position or 0 :][:limit])

    async def read_stream(self, stream_name: str, *, backwards: bool = False) -> _Read:
        stream = await self.get_stream(stream_name)
        return _Read(stream[::-1] if backwards else stream)

    async def read_all(self, *, commit_position: int | None = None, backwards: bool = False, **filters: Any) -> _Read:
        await asyncio.sleep(0)
        assert filters == {"filter_exclude": EXCLUDED_STREAMS, "filter_by_stream_name": True}
        regex = re.compile(construct_filter_exclude_regex(EXCLUDED_STREAMS))
        log = [e for e in self.log if regex.match(e.stream_name)]
        if backwards:
            return _Read(log[::-1])
        return _Read([e for e in log if commit_position is None or e.commit_position >= commit_position])

    async def subscribe_to_all(self, *, commit_position: int | None = None, **filters: Any) -> Any:
        read = await self.read_all(commit_position=commit_position, **filters)
        return _Live(self, [e for e in read._items if commit_position is None or e.commit_position > commit_position])

    async def close(self) -> None:
        pass


class _Live(_Read):
    def __init__(self, fake: FakeKurrent, items: list[KRecordedEvent]) -> None:
        super().__init__(items)
        self._fake, self._last = fake, fake.log[-1].commit_position

    async def __anext__(self) -> KRecordedEvent:
        try:
            return await super().__anext__()
        except StopAsyncIteration:
            while self._fake.log[-1].commit_position == self._last:
                self._fake.appended.clear()
                await self._fake.appended.wait()
            fresh = [e for e in self._fake.log if e.commit_position > self._last]
            self._last = fresh[-1].commit_position
            self._items = iter(fresh)
            return await self.__anext__()


@pytest.fixture
def fake() -> FakeKurrent:
    return FakeKurrent()


@pytest.fixture
def store(fake: FakeKurrent) -> KurrentEventStore:
    store = KurrentEventStore("esdb://localhost:2113?Tls=false")
    store._client = fake  # type: ignore[assignment]
    return store


async def test_append_then_read_maps_versions_and_positions(store: KurrentEventStore, fake: FakeKurrent) -> None:
    result = await store.append("channel-1", [new(1), new(2)], NO_STREAM)
    events = await store.read_stream("channel-1")
    assert [e.version for e in events] == [1, 2] and [e.event for e in events] == [Pinged(n=1), Pinged(n=2)]
    assert result == AppendResult(events[-1].position, 2)
    assert [e.version for e in await store.read_stream("channel-1", after_version=1)] == [2]
    assert await store.read_stream("channel-404") == []
    assert sum(s.startswith(CLAIM_PREFIX) for s in fake.streams) == 2


async def test_conflicts_report_our_actual_version(store: KurrentEventStore) -> None:
    await store.append("channel-1", [new(1)], NO_STREAM)
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append("channel-1", [new(2), new(3)], NO_STREAM)
    assert (info.value.expected, info.value.actual) == (0, 1)
    with pytest.raises(WrongExpectedVersion):
        await store.append("channel-1", [new(2)], 5)
    assert (await store.append("channel-1", [new(2)], 1)).version == 2


async def test_repeats_return_the_first_result_and_append_nothing(store: KurrentEventStore) -> None:
    batch = [new(1), new(2)]
    first = await store.append("channel-1", batch, NO_STREAM)
    assert await store.append("channel-1", batch, NO_STREAM) == first
    assert await store.append("channel-1", batch, ANY) == first
    assert len(await store.read_stream("channel-1")) == 2


async def test_racing_repeats_append_once(store: KurrentEventStore) -> None:
    await store.append("channel-1", [new(0)])
    batch = [new(1)]
    results = await asyncio.gather(*(store.append("channel-1", batch, ANY) for _ in range(8)))
    assert len(set(results)) == 1
    assert len(await store.read_stream("channel-1")) == 2


async def test_partly_repeated_or_foreign_ids_are_rejected_whole(store: KurrentEventStore) -> None:
    known = new(1)
    await store.append("channel-1", [known])
    with pytest.raises(DuplicateEventId):
        await store.append("channel-1", [known, new(2)])
    with pytest.raises(DuplicateEventId):
        await store.append("channel-2", [known])
    with pytest.raises(DuplicateEventId):
        await store.append("channel-3", [new(3, known.event_id), new(4, known.event_id)])
    assert len(await store.read_stream("channel-1")) == 1
    assert await store.read_stream("channel-2") == []


async def test_read_all_and_head_skip_claims_and_system_events(store: KurrentEventStore) -> None:
    assert await store.head() == 0
    assert [e async for e in store.read_all()] == []
    await store.append("a", [new(1)])
    await store.append("b", [new(2), new(3)])
    await store.append("a", [new(4)])
    events = [e async for e in store.read_all()]
    assert [e.event.n for e in events] == [1, 2, 3, 4]  # type: ignore[union-attr]
    assert events[-1].position == await store.head()
    after = events[1].position
    assert [e.event.n async for e in store.read_all(after=after, limit=1)] == [3]  # type: ignore[union-attr]
    assert [e.event.n async for e in store.read_all(after=after)] == [3, 4]  # type: ignore[union-attr]


async def test_subscribe_catches_up_then_follows_live_in_batches(store: KurrentEventStore) -> None:
    await store.append("a", [new(1), new(2)])
    start = (await store.read_stream("a"))[0].position
    batches: list[list[int]] = []

    async def consume() -> None:
        async for batch in store.subscribe(after=start, batch_size=2):
            assert batch
            batches.append([e.event.n for e in batch])  # type: ignore[union-attr]
            if sum(map(len, batches)) >= 3:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    await store.append("b", [new(3), new(4)])
    await asyncio.wait_for(task, 2)
    assert [n for b in batches for n in b] == [2, 3, 4]
    assert all(len(b) <= 2 for b in batches)
