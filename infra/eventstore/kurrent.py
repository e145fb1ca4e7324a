"""KurrentDB / EventStoreDB event store, through kurrentdbclient's asyncio client.

Same port and contract as the PostgreSQL backend; what differs:

- ``position`` is the event's KurrentDB *commit position*: unique per event, increasing in log
  order, but not contiguous (gaps are large and meaningless). Never compute ``position + 1``.
  A non-zero ``after`` given to ``read_all``/``subscribe`` must be a position this store
  returned (KurrentDB starts reads only at an existing commit position).
- No reader skips an event because KurrentDB has one writer that assigns commit positions in
  log order, and a ``$all`` subscription delivers in that order: no fence is needed here.
  Subscribers are pushed live events by the server's catch-up subscription (no polling).
- Versions: ours start at 1, KurrentDB stream positions at 0, so ``version = position + 1``
  and ``expected_version`` n is sent as ``current_version`` n - 1 (NO_STREAM as NO_STREAM).
- Idempotent event ids. KurrentDB dedupes repeated ids only within one stream, reliably only
  for an explicit expected version, and never across streams. So each append first *claims*
  each event id: one event in the stream ``hubbub-event-id-{id}``, appended with NO_STREAM,
  naming the owning stream. A claim held for another stream means ``DuplicateEventId``; a
  claim already held for this stream means the append may be a repeat, answered from the
  stream. ANY appends are sent with the version just read (and retried on conflict), so two
  racing repeats collide on the server's per-stream id check and only one lands.
  Costs: one claim event per appended event (claim streams are filtered out of ``read_all``,
  ``subscribe`` and ``head``); a claim outlives an append that then failed, so that id stays
  bound to its stream.
- ``recorded_at`` is the server's ``created`` timestamp, else ``meta.occurred_at``, else the
  time of reading.
- ``append_many`` claims every id as ``append`` does, then writes all entries in one
  ``multi_append_to_stream`` (KurrentDB's atomic multi-stream append), and reads each stream's
  copy back for the per-entry positions (the call answers only one position). Events' metadata
  travels there as record properties, which KurrentDB requires to be string-valued (ours are).
- Needs EventStoreDB >= 22.10 (stream reads carry commit positions since then) or KurrentDB;
  ``append_many`` needs KurrentDB >= 25.1 (the multi-stream append).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence

import msgspec
import structlog
from kurrentdbclient import AsyncKurrentDBClient, StreamState
from kurrentdbclient import NewEvent as KurrentNewEvent
from kurrentdbclient import NewEvents as KurrentNewEvents
from kurrentdbclient import RecordedEvent as KurrentRecordedEvent
from kurrentdbclient.exceptions import (
    AbortedByServerError,
    DeadlineExceededError,
    GrpcError,
    NotFoundError,
    ProgrammingError,
    WrongCurrentVersionError,
)

from domain.events import EventCodec, EventMeta, NewEvent, RecordedEvent
from infra.eventstore.port import (
    ANY,
    AppendResult,
    DuplicateEventId,
    EventStoreError,
    StreamAppend,
    WrongExpectedVersion,
    check_appends,
)

log = structlog.get_logger(__name__)

CLAIM_PREFIX = "hubbub-event-id-"
CLAIM_TYPE = "hubbub.event_id_claimed"
# Server-side filter on stream names: system streams and our id claims.
EXCLUDED_STREAMS = (r"\$.*", re.escape(CLAIM_PREFIX) + ".*")
ANY_ATTEMPTS = 50  # an ANY append retries this often while other writers keep moving the stream
RESUBSCRIBE_DELAY_S = 0.5
_TRANSIENT = (GrpcError, AbortedByServerError, DeadlineExceededError)  # resubscribe after these


class _Claim(msgspec.Struct, frozen=True):
    stream_id: str


# -- pure mapping (unit-tested without a server) ----------------------------------------------


def current_version_for(expected: int | None) -> int | StreamState:
    """Our ``expected_version`` as kurrentdbclient's ``current_version``."""
    if expected is ANY:
        return StreamState.ANY
    if expected < 0:
        raise ValueError(f"expected_version must be ANY (None) or >= 0, not {expected}")
    return StreamState.NO_STREAM if expected == 0 else expected - 1


def version_from_current(current: int | StreamState | None) -> int | None:
    """A stream's version from KurrentDB's current version; None when it does not say."""
    if current is StreamState.NO_STREAM:
        return 0
    return current + 1 if isinstance(current, int) else None


def start_position(after: int) -> int | None:
    """``commit_position`` argument for reads after ``after`` (0: from the start of the log)."""
    return after if after > 0 else None


def claim_stream(event_id: uuid.UUID) -> str:
    return f"{CLAIM_PREFIX}{event_id}"


def is_ours(raw: KurrentRecordedEvent) -> bool:
    """False for system events and streams, links, and our own id claims."""
    return not (raw.stream_name.startswith(("$", CLAIM_PREFIX)) or raw.type.startswith("$") or raw.link is not None)


def to_new_event(new: NewEvent, codec: EventCodec) -> KurrentNewEvent:
    return KurrentNewEvent(
        type=new.event.type_name,
        data=codec.encode(new.event),
        metadata=codec.encode_meta(new.meta),
        content_type="application/json",
        id=new.event_id,
    )


def to_claim_event(stream_id: str) -> KurrentNewEvent:
    # A random id, so that a second claim of the same event id always conflicts (never dedupes).
    return KurrentNewEvent(type=CLAIM_TYPE, data=msgspec.json.encode(_Claim(stream_id)), id=uuid.uuid4())


def claimed_by(raw: KurrentRecordedEvent) -> str:
    return msgspec.json.decode(raw.data, type=_Claim).stream_id


def recorded_time(recorded_at: dt.datetime | None, meta: EventMeta, now: dt.datetime) -> dt.datetime:
    return recorded_at or meta.occurred_at or now


def to_recorded(raw: KurrentRecordedEvent, codec: EventCodec, now: dt.datetime | None = None) -> RecordedEvent:
    meta = codec.decode_meta(raw.metadata) if raw.metadata else EventMeta()
    return RecordedEvent(
        position=raw.commit_position,
        stream_id=raw.stream_name,
        version=raw.stream_position + 1,
        event_id=raw.id,
        event=codec.decode(raw.type, raw.data),
        meta=meta,
        recorded_at=recorded_time(raw.recorded_at, meta, now or dt.datetime.now(dt.UTC)),
    )


def repeat_result(
    stream_id: str, ids: Sequence[uuid.UUID], found: Iterable[KurrentRecordedEvent]
) -> AppendResult | None:
    """The first result of an append whose ids are all in ``found``; None if none are there."""
    wanted = set(ids)
    stored = [raw for raw in found if raw.id in wanted]
    if not stored:
        return None
    if {raw.id for raw in stored} != wanted:
        raise DuplicateEventId(f"some event ids of this append to {stream_id!r} already exist")
    return AppendResult(max(r.commit_position for r in stored), max(r.stream_position for r in stored) + 1)


def drain_ready(
    queue: asyncio.Queue[RecordedEvent | BaseException], first: RecordedEvent | BaseException, limit: int
) -> tuple[list[RecordedEvent], BaseException | None]:
    """``first`` plus what ``queue`` holds right now, up to ``limit`` events; stops at an error."""
    batch: list[RecordedEvent] = []
    item = first
    while True:
        if isinstance(item, BaseException):
            return batch, item
        batch.append(item)
        if len(batch) >= limit:
            return batch, None
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            return batch, None


# -- the store ------------------------------------------------------------------------------


class KurrentEventStore:
    """EventStore on KurrentDB / EventStoreDB (``esdb://``, ``kurrentdb://`` or ``kdb://`` URIs)."""

    def __init__(self, uri: str, codec: EventCodec | None = None) -> None:
        self._client = AsyncKurrentDBClient(uri=uri)
        self._codec = codec or EventCodec()

    # -- writing -------------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None = ANY,
        *,
        expect: Sequence[tuple[str, int]] = (),
    ) -> AppendResult:
        if expect:
            [result] = await self.append_many([StreamAppend(stream_id, events, expected_version)], expect=expect)
            return result
        if not events:
            raise ValueError("append needs at least one event")
        ids = [e.event_id for e in events]
        if len(set(ids)) != len(ids):
            raise DuplicateEventId(f"an append to {stream_id!r} repeats an event id within itself")
        since = await self._claim(stream_id, ids)
        if since == 0 and (repeat := await self._find_repeat(stream_id, ids, 0)):
            return repeat
        new = [to_new_event(e, self._codec) for e in events]
        return await self._write(stream_id, ids, new, expected_version, since)

    async def append_many(
        self, appends: Sequence[StreamAppend], *, expect: Sequence[tuple[str, int]] = ()
    ) -> list[AppendResult]:
        check_appends(appends, expect)
        ids = [[e.event_id for e in a.events] for a in appends]
        sinces = [await self._claim(a.stream_id, i) for a, i in zip(appends, ids, strict=True)]
        if 0 in sinces and (repeat := await self._find_repeats(appends, ids, [0] * len(appends))):
            return repeat
        # KurrentDB has no condition on a stream an append does not write: the expectations are
        # read just before it (a change in between is not caught, as with a read-then-append).
        for stream_id, version in expect:
            current = version_from_current(await self._client.get_current_version(stream_id)) or 0
            if current != version:
                raise WrongExpectedVersion(stream_id, version, current)
        for _ in range(ANY_ATTEMPTS):
            try:
                await self._client.multi_append_to_stream(await self._new_events(appends))
            except WrongCurrentVersionError:
                if repeat := await self._find_repeats(appends, ids, sinces):
                    return repeat
                if wrong := await self._first_wrong_version(appends):
                    raise wrong from None
                continue  # only an ANY entry's stream moved: read again and retry
            # The call answers one position; each entry's comes from reading its stream back.
            if written := await self._find_repeats(appends, ids, sinces):
                return written
            raise EventStoreError("multi_append_to_stream succeeded but its events are not in their streams")
        raise EventStoreError(f"streams kept changing during {ANY_ATTEMPTS} ANY multi-stream appends; try again")

    async def _new_events(self, appends: Sequence[StreamAppend]) -> list[KurrentNewEvents]:
        # ANY entries go with the version just read, as in _write, so racing repeats collide.
        return [
            KurrentNewEvents(
                a.stream_id,
                [to_new_event(e, self._codec) for e in a.events],
                current_version_for(a.expected_version)
                if a.expected_version is not ANY
                else await self._client.get_current_version(a.stream_id),
            )
            for a in appends
        ]

    async def _find_repeats(
        self, appends: Sequence[StreamAppend], ids: Sequence[Sequence[uuid.UUID]], sinces: Sequence[int]
    ) -> list[AppendResult] | None:
        """Every entry's copy in its stream, or None if no entry has one; some but not all: an error."""
        found = [
            await self._find_repeat(a.stream_id, i, since) for a, i, since in zip(appends, ids, sinces, strict=True)
        ]
        if all(r is None for r in found):
            return None
        if any(r is None for r in found):
            raise DuplicateEventId("some entries of this append_many were appended before, not all")
        return [r for r in found if r is not None]

    async def _first_wrong_version(self, appends: Sequence[StreamAppend]) -> WrongExpectedVersion | None:
        for a in appends:
            if a.expected_version is ANY:
                continue
            actual = version_from_current(await self._client.get_current_version(a.stream_id)) or 0
            if actual != a.expected_version:
                return WrongExpectedVersion(a.stream_id, a.expected_version, actual)
        return None

    async def _claim(self, stream_id: str, ids: Sequence[uuid.UUID]) -> int:
        """Claim every id for ``stream_id``. Returns the lowest position of the claims when all
        are new (no copy of these events can precede it), 0 when some were claimed before."""
        results = await asyncio.gather(*(self._claim_one(stream_id, i) for i in ids), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        positions = [r for r in results if isinstance(r, int)]
        return min(positions) if len(positions) == len(ids) and min(positions) > 0 else 0

    async def _claim_one(self, stream_id: str, event_id: uuid.UUID) -> int | None:
        """The claim's position if new, None if this stream held it already."""
        name = claim_stream(event_id)
        try:
            return await self._client.append_to_stream(
                name, events=[to_claim_event(stream_id)], current_version=StreamState.NO_STREAM
            )
        except WrongCurrentVersionError:
            [claim] = await self._client.get_stream(name, limit=1)
            if claimed_by(claim) != stream_id:
                raise DuplicateEventId(f"event id {event_id} belongs to stream {claimed_by(claim)!r}") from None
            return None

    async def _write(
        self, stream_id: str, ids: Sequence[uuid.UUID], new: Sequence[KurrentNewEvent], expected: int | None, since: int
    ) -> AppendResult:
        for _ in range(ANY_ATTEMPTS):
            current = (
                current_version_for(expected)
                if expected is not ANY
                else await self._client.get_current_version(stream_id)
            )
            try:
                position = await self._client.append_to_stream(stream_id, events=new, current_version=current)
            except WrongCurrentVersionError as exc:
                if repeat := await self._find_repeat(stream_id, ids, since):
                    return repeat
                if expected is ANY:
                    continue
                actual = await self._actual_version(stream_id, exc)
                raise WrongExpectedVersion(stream_id, expected, actual) from None
            version = (version_from_current(current) or 0) + len(new)
            if position <= 0 or since == 0:
                # The server may have answered a repeat (its own id check) without a position.
                return await self._find_repeat(stream_id, ids, 0) or AppendResult(position, version)
            return AppendResult(position, version)
        raise EventStoreError(f"stream {stream_id!r} kept changing during {ANY_ATTEMPTS} ANY appends; try again")

    async def _actual_version(self, stream_id: str, exc: WrongCurrentVersionError) -> int:
        actual = version_from_current(exc.actual_version)
        if actual is None:
            actual = version_from_current(await self._client.get_current_version(stream_id))
        return actual or 0

    async def _find_repeat(self, stream_id: str, ids: Sequence[uuid.UUID], since: int) -> AppendResult | None:
        """The stream's copy of these events, read from its end back to commit position ``since``."""
        wanted, found = set(ids), []
        try:
            async with await self._client.read_stream(stream_id, backwards=True) as response:
                async for raw in response:
                    if raw.commit_position < since:
                        break
                    if raw.id in wanted:
                        found.append(raw)
                        if len(found) == len(wanted):
                            break
        except NotFoundError:
            return None
        return repeat_result(stream_id, ids, found)

    # -- reading -------------------------------------------------------------------------------

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        try:
            raws = await self._client.get_stream(stream_id, stream_position=after_version or None)
        except NotFoundError:
            return []
        return [to_recorded(raw, self._codec) for raw in raws if is_ours(raw)]

    async def read_streams(self, tails: Sequence[tuple[str, int]]) -> list[list[RecordedEvent]]:
        return [await self.read_stream(stream_id, after) for stream_id, after in tails]

    async def read_all(self, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        end = await self.head()
        if after >= end or limit == 0:
            return
        count = 0
        response = await self._client.read_all(
            commit_position=start_position(after), filter_exclude=EXCLUDED_STREAMS, filter_by_stream_name=True
        )
        async with response:
            async for raw in response:
                if raw.commit_position > end:
                    return
                if raw.commit_position <= after or not is_ours(raw):
                    continue  # a read from `after` includes the event at `after`
                yield to_recorded(raw, self._codec)
                count += 1
                if count == limit:
                    return

    async def subscribe(self, after: int = 0, batch_size: int = 500) -> AsyncIterator[Sequence[RecordedEvent]]:
        queue: asyncio.Queue[RecordedEvent | BaseException] = asyncio.Queue(maxsize=2 * batch_size)
        pump = asyncio.create_task(self._pump(after, queue), name="kurrent-subscription")
        try:
            while True:
                first = await queue.get()
                await asyncio.sleep(0)  # let the pump move what the server has already sent
                batch, error = drain_ready(queue, first, batch_size)
                if batch:
                    yield batch
                if error is not None:
                    raise error
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump(self, after: int, queue: asyncio.Queue[RecordedEvent | BaseException]) -> None:
        """Feed ``queue`` from a ``$all`` catch-up subscription; resubscribe after transient errors."""
        while True:
            try:
                subscription = await self._client.subscribe_to_all(
                    commit_position=start_position(after),
                    filter_exclude=EXCLUDED_STREAMS,
                    filter_by_stream_name=True,
                )
                async with subscription:
                    async for raw in subscription:
                        if raw.commit_position <= after or not is_ours(raw):
                            continue
                        await queue.put(to_recorded(raw, self._codec))
                        after = raw.commit_position
            except _TRANSIENT as exc:
                log.warning("eventstore.kurrent_resubscribing", error=str(exc), position=after)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, raised from its `async for`
                await queue.put(exc)
                return
            await asyncio.sleep(RESUBSCRIBE_DELAY_S)

    async def head(self) -> int:
        response = await self._client.read_all(
            backwards=True, filter_exclude=EXCLUDED_STREAMS, filter_by_stream_name=True
        )
        async with response:
            async for raw in response:
                if is_ours(raw):
                    return raw.commit_position
        return 0

    async def close(self) -> None:
        with contextlib.suppress(ProgrammingError):  # never connected: nothing to close
            await self._client.close()
