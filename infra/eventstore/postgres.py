"""PostgreSQL event store: the default backend.

Appends from this process go through one writer connection that commits them in batches
(group commit): concurrent ``append`` calls that arrive while a batch is committing share the
next transaction and its fsync. The ``events_serialise`` trigger makes commit order equal
position order across processes (see migration 0001), so readers simply read ``position > p``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import psycopg
import structlog
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from domain.events import EventCodec, NewEvent, RecordedEvent
from infra.eventstore.port import ANY, AppendResult, DuplicateEventId, WrongExpectedVersion

log = structlog.get_logger(__name__)

CHANNEL = "hubbub_events"
MAX_BATCH_EVENTS = 10_000
SAFETY_POLL_S = 1.0  # a lost NOTIFY (listener reconnecting) delays a subscriber by at most this

_COLUMNS = "position, stream_id, version, event_id, type, data::text, metadata::text, recorded_at"
_STREAM_VERSIONS = """
    SELECT s, (SELECT max(version) FROM events WHERE stream_id = s)
    FROM unnest(%s::text[]) AS s"""
_EXISTING_IDS = "SELECT event_id, stream_id, version, position FROM events WHERE event_id = ANY(%s::uuid[])"
_INSERT = """
    INSERT INTO events (stream_id, version, event_id, type, data, metadata)
    SELECT s, v, i, t, d::jsonb, m::jsonb
    FROM unnest(%s::text[], %s::int[], %s::uuid[], %s::text[], %s::text[], %s::text[]) AS x(s, v, i, t, d, m)
    RETURNING event_id, position"""


@dataclass(eq=False)
class _Append:
    stream_id: str
    events: Sequence[NewEvent]
    expected_version: int | None
    future: asyncio.Future[AppendResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    alias_of: _Append | None = None
    version: int = 0


class PostgresEventStore:
    """EventStore on PostgreSQL. Reads use ``pool``; the writer and the listener own a connection each."""

    def __init__(self, pool: AsyncConnectionPool, conninfo: str, codec: EventCodec | None = None) -> None:
        self._pool = pool
        self._conninfo = conninfo
        self._codec = codec or EventCodec()
        self._pending: list[_Append] = []
        self._has_pending = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._wakeups: set[asyncio.Event] = set()
        self._closed = False

    # -- writing -------------------------------------------------------------------------------

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = ANY
    ) -> AppendResult:
        if not events:
            raise ValueError("append needs at least one event")
        if self._closed:
            raise RuntimeError("event store is closed")
        request = _Append(stream_id, events, expected_version)
        self._pending.append(request)
        self._has_pending.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="eventstore-writer")
        return await request.future

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
                        conn = await psycopg.AsyncConnection.connect(self._conninfo)
                except psycopg.OperationalError as exc:
                    log.warning("eventstore.writer_cannot_connect", error=str(exc))
                    self._fail(batch, exc)
                    continue
                await self._commit_batch(conn, batch)
        finally:
            if conn is not None:
                await conn.close()

    def _take_batch(self) -> list[_Append]:
        taken, count = 0, 0
        for request in self._pending:
            if taken and count + len(request.events) > MAX_BATCH_EVENTS:
                break
            taken += 1
            count += len(request.events)
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        return batch

    async def _commit_batch(self, conn: psycopg.AsyncConnection[TupleRow], batch: list[_Append]) -> None:
        try:
            async with conn.transaction():
                accepted = await self._decide(conn, batch)
                positions = await self._insert(conn, accepted) if accepted else {}
        except Exception as exc:  # the whole batch failed: nothing of it was written
            log.warning("eventstore.batch_failed", error=str(exc), appends=len(batch))
            self._fail(batch, exc)
            if isinstance(exc, psycopg.OperationalError):
                await conn.close()
            return
        for request in accepted:
            last = request.events[-1].event_id
            request.future.set_result(AppendResult(positions[last], request.version))
        for request in batch:
            if request.alias_of is not None and not request.future.done():
                request.future.set_result(request.alias_of.future.result())

    @staticmethod
    def _fail(batch: list[_Append], exc: Exception) -> None:
        for request in batch:
            if not request.future.done():
                request.future.set_exception(exc)

    async def _decide(self, conn: psycopg.AsyncConnection[TupleRow], batch: list[_Append]) -> list[_Append]:
        """Check versions and event ids for the whole batch under the append lock."""
        streams = sorted({r.stream_id for r in batch})
        ids = [e.event_id for r in batch for e in r.events]
        await conn.execute("SELECT pg_advisory_xact_lock(7243011)")
        cur = await conn.execute(_STREAM_VERSIONS, (streams,))
        versions = {s: v or 0 for s, v in await cur.fetchall()}
        cur = await conn.execute(_EXISTING_IDS, (ids,))
        existing = {row[0]: row[1:] for row in await cur.fetchall()}
        in_batch: dict[uuid.UUID, _Append] = {}
        accepted: list[_Append] = []
        for request in batch:
            try:
                if self._is_repeat(request, existing, in_batch):
                    continue
                current = versions[request.stream_id]
                if request.expected_version is not ANY and request.expected_version != current:
                    raise WrongExpectedVersion(request.stream_id, request.expected_version, current)
            except Exception as exc:
                request.future.set_exception(exc)
                continue
            request.version = versions[request.stream_id] = current + len(request.events)
            in_batch.update((e.event_id, request) for e in request.events)
            accepted.append(request)
        return accepted

    @staticmethod
    def _is_repeat(
        request: _Append, existing: dict[uuid.UUID, tuple[str, int, int]], in_batch: dict[uuid.UUID, _Append]
    ) -> bool:
        ids = [e.event_id for e in request.events]
        stored = [existing[i] for i in ids if i in existing]
        if stored:
            if len(stored) != len(ids) or any(s[0] != request.stream_id for s in stored):
                raise DuplicateEventId(f"some event ids of this append to {request.stream_id!r} already exist")
            request.future.set_result(AppendResult(max(s[2] for s in stored), max(s[1] for s in stored)))
            return True
        twins = {in_batch[i] for i in ids if i in in_batch}
        if twins:
            first = next(iter(twins))
            if len(twins) != 1 or first.stream_id != request.stream_id or len(first.events) != len(ids):
                raise DuplicateEventId(f"some event ids of this append to {request.stream_id!r} already exist")
            request.alias_of = first
            return True
        return False

    async def _insert(self, conn: psycopg.AsyncConnection[TupleRow], accepted: list[_Append]) -> dict[uuid.UUID, int]:
        encode, encode_meta = self._codec.encode, self._codec.encode_meta
        cols: tuple[list, ...] = ([], [], [], [], [], [])
        for request in accepted:
            first = request.version - len(request.events) + 1
            for offset, new in enumerate(request.events):
                cols[0].append(request.stream_id)
                cols[1].append(first + offset)
                cols[2].append(new.event_id)
                cols[3].append(new.event.type_name)
                cols[4].append(encode(new.event).decode())
                cols[5].append(encode_meta(new.meta).decode())
        cur = await conn.execute(_INSERT, cols)
        return {event_id: position for event_id, position in await cur.fetchall()}

    # -- reading -------------------------------------------------------------------------------

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream_id = %s AND version > %s ORDER BY version"
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, (stream_id, after_version))
            return [self._decode(row) for row in await cur.fetchall()]

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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), SAFETY_POLL_S)
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
            self._listener = asyncio.create_task(self._listen_loop(), name="eventstore-listener")

    async def _listen_loop(self) -> None:
        while not self._closed:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
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
        if self._writer is not None:
            await self._writer
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
