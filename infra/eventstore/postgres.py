"""PostgreSQL event store: the default backend.

Appends from this process go through one writer connection that commits them in batches
(group commit): concurrent ``append`` calls that arrive while a batch is committing share the
next transaction and its fsync. The ``events_serialise`` trigger makes commit order equal
position order across processes (see migration 0001), so readers simply read ``position > p``.
The batch is one call of ``events_append`` (migrations 0002, 0003). An ``append_many`` is one
request whose entries share a group number there: the server appends them all or none.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
import structlog
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from domain.events import EventCodec, NewEvent, RecordedEvent
from infra.aio import cancel_and_wait, wait_event
from infra.eventstore.port import (
    ANY,
    AppendOutcomeUnknown,
    AppendResult,
    DuplicateEventId,
    EventStoreError,
    InvalidEvent,
    StreamAppend,
    WrongExpectedVersion,
    check_appends,
)

log = structlog.get_logger(__name__)

CHANNEL = "hubbub_events"
MAX_BATCH_EVENTS = 10_000
SAFETY_POLL_S = 1.0  # a lost NOTIFY (listener reconnecting) delays a subscriber by at most this

_COLUMNS = "position, stream_id, version, event_id, type, data::text, metadata::text, recorded_at"
_EXISTING_IDS = "SELECT event_id, stream_id, version, position FROM events WHERE event_id = ANY(%s::uuid[])"
_APPEND = "SELECT idx, current, known, last_position, group_ok FROM events_append(%s::jsonb)"
# A synchronous commit that writes WAL (a transactional logical message does, without touching a
# table); its flush covers every earlier commit record, the writer's async commits included.
_FLUSH = "SELECT pg_logical_emit_message(true, 'hubbub', 'flush')"


class _WireEvent(msgspec.Struct, array_like=False):
    i: uuid.UUID
    t: str
    d: msgspec.Raw
    m: msgspec.Raw


class _WireAppend(msgspec.Struct):
    s: str
    x: int | None
    e: list[_WireEvent]
    g: int = 0  # the request's number in its call, set by the writer


@dataclass(eq=False)
class _Append:
    """One caller's request: an ``append`` (one entry) or an ``append_many`` (all or none)."""

    entries: list[_WireAppend]
    future: asyncio.Future[list[AppendResult]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    streams: list[str] = field(init=False)
    """The streams it writes."""
    checked: list[str] = field(init=False)
    """The streams it only expects at a version (entries without events)."""
    ids: list[uuid.UUID] = field(init=False)

    def __post_init__(self) -> None:
        self.streams = [w.s for w in self.entries if w.e]
        self.checked = [w.s for w in self.entries if not w.e]
        self.ids = [e.i for w in self.entries for e in w.e]


class PostgresEventStore:
    """EventStore on PostgreSQL. Reads use ``pool``; the writer, the flusher and the listener
    own a connection each."""

    def __init__(self, pool: AsyncConnectionPool, conninfo: str, codec: EventCodec | None = None) -> None:
        self._pool = pool
        self._conninfo = conninfo
        self._codec = codec or EventCodec()
        self._encoder = msgspec.json.Encoder()
        self._pending: list[_Append] = []
        self._has_pending = asyncio.Event()
        self._unflushed: list[tuple[_Append, list[AppendResult]]] = []
        self._has_unflushed = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._wakeups: set[asyncio.Event] = set()
        self._repeats: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- writing -------------------------------------------------------------------------------
    #
    # append() encodes at once (outside any lock) and queues. The writer sends everything
    # queued as one events_append() call, committed asynchronously: the append lock is held
    # only while the server inserts, never during the fsync, so writers in other processes
    # overlap their fsyncs with ours. The flusher then makes the batch durable with one small
    # synchronous commit (WAL is sequential: flushing a later commit record flushes every earlier
    # one) and only then answers the callers. Readers may see a batch a moment before it is
    # durable; a projection commits after it in the WAL, so it can never keep the effect of an
    # event that a crash lost, and no caller was told such an event was appended.

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None = ANY,
        *,
        expect: Sequence[tuple[str, int]] = (),
    ) -> AppendResult:
        [result] = await self.append_many([StreamAppend(stream_id, events, expected_version)], expect=expect)
        return result

    async def append_many(
        self, appends: Sequence[StreamAppend], *, expect: Sequence[tuple[str, int]] = ()
    ) -> list[AppendResult]:
        check_appends(appends, expect)
        wires = [_WireAppend(a.stream_id, a.expected_version, [self._wire(e) for e in a.events]) for a in appends]
        # An expectation is an entry without events in the same group: events_append inserts
        # nothing for it, and the group passes only if its version matches.
        return await self._submit(wires + [_WireAppend(stream_id, version, []) for stream_id, version in expect])

    async def _submit(self, entries: list[_WireAppend]) -> list[AppendResult]:
        if self._closed:
            raise RuntimeError("event store is closed")
        request = _Append(entries)
        self._pending.append(request)
        self._has_pending.set()
        self._ensure_tasks()
        try:
            return await request.future
        finally:
            # A refusal raised from the future keeps this frame in its traceback; the frame must
            # not keep the future (which keeps the refusal): that cycle would hold every caller's
            # frame up the traceback, with their locals (a decider state: a whole workspace),
            # until a full collection.
            del request

    def _wire(self, new: NewEvent) -> _WireEvent:
        data, meta = self._codec.encode(new.event), self._codec.encode_meta(new.meta)
        if b"\\u0000" in data or b"\\u0000" in meta:  # jsonb cannot hold NUL; refuse it alone, here
            raise InvalidEvent(f"{new.event.type_name} contains a NUL character (\\u0000), which the log cannot store")
        return _WireEvent(new.event_id, new.event.type_name, msgspec.Raw(data), msgspec.Raw(meta))

    def _ensure_tasks(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = _background(self._write_loop(), "eventstore-writer")
        if self._flusher is None or self._flusher.done():
            self._flusher = _background(self._flush_loop(), "eventstore-flusher")

    async def _write_loop(self) -> None:
        conn: psycopg.AsyncConnection[TupleRow] | None = None
        try:
            while not self._closed or self._pending:
                if not self._pending:
                    self._has_pending.clear()
                    await self._has_pending.wait()
                    continue
                batch = self._take_batch()
                try:
                    if conn is None or conn.closed:
                        conn = await _connect(self._conninfo, "-c synchronous_commit=off")
                except Exception as exc:  # noqa: BLE001 - nothing was sent: its callers get why
                    _log_failure("eventstore.cannot_connect", exc, len(batch))
                    _fail(batch, exc)
                    continue
                try:
                    await self._send(conn, batch)
                except psycopg.errors.LockNotAvailable as exc:  # lock_timeout: cancelled, not written
                    log.error(
                        "eventstore.append_lock_held",
                        hint="a transaction holds the events append lock (a psql session inside BEGIN?); see pg_locks",
                        appends=len(batch),
                    )
                    _fail(batch, exc)
                except Exception as exc:  # noqa: BLE001 - broke mid-call: it may have committed
                    _log_failure("eventstore.batch_failed", exc, len(batch))
                    _fail(batch, _unknown(exc))
                    await conn.close()
        finally:
            if conn is not None:
                await conn.close()

    async def _send(self, conn: psycopg.AsyncConnection[TupleRow], batch: list[_Append]) -> None:
        """One events_append() call for the batch. If the server refuses it for a reason that is
        not the connection (one append it cannot store), send each append alone, so that only
        that one fails and the others, which merely shared its call, are written."""
        try:
            cur = await conn.execute(_APPEND, (self._encode(batch),))
            self._settle(batch, await cur.fetchall())
            return
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            if len(batch) == 1:
                _log_failure("eventstore.append_refused", exc, 1)
                _fail(batch, exc)
                return
        for request in batch:
            await self._send(conn, [request])

    def _encode(self, batch: list[_Append]) -> str:
        for number, request in enumerate(batch):
            for entry in request.entries:
                entry.g = number
        return self._encoder.encode([entry for request in batch for entry in request.entries]).decode()

    def _take_batch(self) -> list[_Append]:
        """The oldest requests that fit one call: one write per stream and no event id twice in
        the whole call, so the server can check each entry against the log alone, and no
        expectation on a stream an earlier request of the call writes (the server reads versions
        before inserting, so it would pass on the version the write replaces). The others (an
        append_many whole) wait for the next call. Expectations of one stream may share a call:
        a channel's concurrent posts all expect its version."""
        batch: list[_Append] = []
        rest: list[_Append] = []
        streams: set[str] = set()
        ids: set[uuid.UUID] = set()
        count = 0
        for request in self._pending:
            if request.future.done():  # its caller gave up before it was sent: do not append it
                continue
            fits = count + len(request.ids) <= MAX_BATCH_EVENTS or not batch
            if (
                fits
                and streams.isdisjoint(request.streams)
                and streams.isdisjoint(request.checked)
                and ids.isdisjoint(request.ids)
            ):
                batch.append(request)
                count += len(request.ids)
            else:
                rest.append(request)
            # Taken or left waiting, its streams and ids now block every later request: a later
            # append to the same stream must never overtake an earlier one.
            streams.update(request.streams)
            ids.update(request.ids)
        self._pending = rest
        return batch

    def _settle(self, batch: list[_Append], rows: list[tuple]) -> None:
        if sum(len(r.entries) for r in batch) != len(rows):  # a foreign events_append(): fail, don't guess
            _fail(batch, EventStoreError(f"events_append answered {len(rows)} rows for {len(batch)} requests"))
            return
        at = 0
        for request in batch:
            mine, at = rows[at : at + len(request.entries)], at + len(request.entries)
            if any(known for _, _, known, _, _ in mine):
                task = asyncio.create_task(self._settle_repeat(request))
                self._repeats.add(task)  # held, or the loop may drop it half-way
                task.add_done_callback(self._repeats.discard)
            elif all(ok for *_, ok in mine):
                results = [
                    AppendResult(pos, cur + len(w.e))
                    for w, (_, cur, _, pos, _) in zip(request.entries, mine, strict=True)
                    if w.e
                ]
                self._unflushed.append((request, results))
            else:
                _reject(request, _conflict(request, mine))
        self._has_unflushed.set()

    async def _settle_repeat(self, request: _Append) -> None:
        """Some of the ids are in the log: the first answers if all are, each in its entry's
        stream; else an error."""
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(_EXISTING_IDS, (request.ids,))
                stored = {row[0]: row for row in await cur.fetchall()}
        except Exception as exc:  # noqa: BLE001
            _reject(request, exc)
            return
        results = _first_results(request, stored)
        if results is None:
            names = ", ".join(repr(s) for s in request.streams)
            _reject(request, DuplicateEventId(f"some event ids of this append to {names} already exist"))
            return
        # The first attempt may still be on its way to disk: answer after the next flush.
        self._unflushed.append((request, results))
        self._has_unflushed.set()

    async def _flush_loop(self) -> None:
        conn: psycopg.AsyncConnection[TupleRow] | None = None
        try:
            while not self._closed or self._unflushed or self._writing():
                if not self._unflushed:
                    self._has_unflushed.clear()
                    await wait_event(self._has_unflushed, 0.5)
                    continue
                group, self._unflushed = self._unflushed, []
                try:
                    if conn is None or conn.closed:
                        # Durable whatever the server's or the role's default says.
                        conn = await _connect(self._conninfo, "-c synchronous_commit=on")
                    await conn.execute(_FLUSH)
                except Exception as exc:  # noqa: BLE001 - committed, but not known durable: say so
                    _log_failure("eventstore.flush_failed", exc, len(group))
                    _fail([r for r, _ in group], _unknown(exc))
                    if conn is not None and isinstance(exc, psycopg.OperationalError):
                        await conn.close()
                    continue
                for request, result in group:
                    if not request.future.done():
                        request.future.set_result(result)
        finally:
            if conn is not None:
                await conn.close()

    def _writing(self) -> bool:
        """Whether more results may still reach the flusher (the store may be closing)."""
        return bool(self._pending or self._repeats) or (self._writer is not None and not self._writer.done())

    # -- reading -------------------------------------------------------------------------------

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream_id = %s AND version > %s ORDER BY version"
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, (stream_id, after_version))
            return [self._decode(row) for row in await cur.fetchall()]

    async def read_streams(self, tails: Sequence[tuple[str, int]]) -> list[list[RecordedEvent]]:
        if len(tails) == 1:
            return [await self.read_stream(*tails[0])]
        # One indexed range read per stream (a join with unnest() could be planned as a scan).
        sql = (
            " UNION ALL ".join(
                f"SELECT {i} AS i, {_COLUMNS} FROM events WHERE stream_id = %s AND version > %s"
                for i in range(len(tails))
            )
            + " ORDER BY i, version"
        )
        out: list[list[RecordedEvent]] = [[] for _ in tails]
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, [value for tail in tails for value in tail])
            for row in await cur.fetchall():
                out[row[0]].append(self._decode(row[1:]))
        return out

    async def read_page(self, after: int, limit: int) -> list[RecordedEvent]:
        sql = f"SELECT {_COLUMNS} FROM events WHERE position > %s ORDER BY position LIMIT %s"
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, (after, limit))
            return [self._decode(row) for row in await cur.fetchall()]

    async def read_all(self, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        end = await self.head()
        remaining = limit if limit is not None else float("inf")
        while after < end and remaining > 0:
            page = await self.read_page(after, int(min(remaining, 5000)))
            if not page:
                return
            for event in page:
                if event.position > end:
                    return
                yield event
            after = page[-1].position
            remaining -= len(page)

    async def subscribe(self, after: int = 0, batch_size: int = 500) -> AsyncIterator[Sequence[RecordedEvent]]:
        wake = asyncio.Event()
        self._wakeups.add(wake)
        self._ensure_listener()
        try:
            while True:
                wake.clear()  # before reading: a commit during the read sets it again
                page = await self.read_page(after, batch_size)
                if page:
                    after = page[-1].position
                    yield page
                    if len(page) == batch_size:
                        continue
                await wait_event(wake, SAFETY_POLL_S)
        finally:
            self._wakeups.discard(wake)

    async def head(self) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT coalesce(max(position), 0) FROM events")
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    def _decode(self, row: tuple) -> RecordedEvent:
        position, stream_id, version, event_id, type_name, data, meta, recorded_at = row
        return RecordedEvent(
            position=position,
            stream_id=stream_id,
            version=version,
            event_id=event_id,
            event=self._codec.decode(type_name, data),
            meta=self._codec.decode_meta(meta),
            recorded_at=recorded_at,
        )

    # -- listening -----------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = _background(self._listen_loop(), "eventstore-listener")

    async def _listen_loop(self) -> None:
        while not self._closed:
            try:
                async with await _connect(self._conninfo) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._wake_all()  # anything committed while we were not listening
                    async for _ in conn.notifies():
                        self._wake_all()
            except psycopg.OperationalError as exc:
                log.warning("eventstore.listener_reconnecting", error=str(exc))
                await asyncio.sleep(0.5)

    def _wake_all(self) -> None:
        for wake in self._wakeups:
            wake.set()

    async def close(self) -> None:
        self._closed = True
        self._has_pending.set()
        self._has_unflushed.set()
        for task in (self._writer, self._flusher):
            if task is not None:
                await task
        if self._listener is not None:
            await cancel_and_wait([self._listener])


def _conflict(request: _Append, rows: list[tuple]) -> EventStoreError:
    """Why the server refused a request with no known ids: its first wrong expected version."""
    for entry, (_, current, _, _, _) in zip(request.entries, rows, strict=True):
        if entry.x is not ANY and entry.x != current:
            return WrongExpectedVersion(entry.s, entry.x, current)
    return EventStoreError(f"events_append refused the append to {request.streams} without a conflict")


def _first_results(request: _Append, stored: dict[uuid.UUID, tuple]) -> list[AppendResult] | None:
    """Each entry's first answer if every id is stored in its entry's stream, else None."""
    results = []
    for entry in (w for w in request.entries if w.e):  # not the expectations
        if any(e.i not in stored or stored[e.i][1] != entry.s for e in entry.e):
            return None
        rows = [stored[e.i] for e in entry.e]
        results.append(AppendResult(max(row[3] for row in rows), max(row[2] for row in rows)))
    return results


# A caller may have given up (timeout, client gone) and cancelled its future while its append
# was on the way: never resolve a done future, or the writer task would die with the batch.


def _reject(request: _Append, exc: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(exc)


def _fail(batch: list[_Append], exc: BaseException) -> None:
    for request in batch:
        _reject(request, exc)


def _background(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    # A context of its own: made inside the first request that appends, the task would
    # otherwise log with that request's id (and user) for as long as the process lives.
    return asyncio.create_task(coro, name=name, context=contextvars.Context())


async def _connect(conninfo: str, options: str = "") -> psycopg.AsyncConnection[TupleRow]:
    """A connection of the store's own: bounded connect, keepalives so that a half-open link is
    noticed (a LISTEN would otherwise wait on it forever)."""
    return await psycopg.AsyncConnection.connect(
        conninfo,
        autocommit=True,
        connect_timeout=5,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        **({"options": options} if options else {}),
    )


def _unknown(exc: BaseException) -> AppendOutcomeUnknown:
    unknown = AppendOutcomeUnknown(f"the connection to the log broke during the append ({type(exc).__name__})")
    unknown.__cause__ = exc
    return unknown


def _log_failure(event: str, exc: BaseException, appends: int) -> None:
    # Never str(exc): PostgreSQL quotes the offending JSON (message text) in its errors.
    sqlstate = getattr(exc, "sqlstate", None)
    log.warning(event, error=type(exc).__name__, sqlstate=sqlstate, appends=appends)
