"""The one command shell: load the stream, fold it, decide, append with the expected version.

A conflicting append (someone else wrote the stream since we loaded it) is retried by catching
up and deciding again, a bounded number of times, never by overwriting. A command carrying an
idempotency key gets deterministic event ids, so a repeat returns the first answer and appends
nothing, even when the state has moved on since and deciding again would give another answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import structlog

from commands import snapshots as snap
from domain.decider import Decider
from domain.events import Event, EventMeta, NewEvent, RecordedEvent, UnknownEvent
from infra.eventstore import EventStore, WrongExpectedVersion
from infra.eventstore.port import StreamAppend

log = structlog.get_logger(__name__)

S = TypeVar("S")
C = TypeVar("C")

IDEMPOTENCY_NAMESPACE = uuid.UUID("0b5f3c1e-6a56-4f7e-9d1e-2f3a7c0d9b11")


@dataclass(frozen=True)
class Context:
    """Who asks, when, and under which key; the domain gets time and ids only from here."""

    actor_id: str | None
    now: dt.datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Outcome(Generic[S]):
    position: int
    version: int
    state: S
    events: Sequence[Event]
    repeated: bool = False


@dataclass
class _Loaded(Generic[S]):
    state: S
    version: int = 0
    positions: dict[uuid.UUID, int] = field(default_factory=dict)
    """Event id -> position: of every event since the last snapshot this process wrote or read,
    and of every keyed (idempotency, UUID version 5) event before it (``commands/snapshots.py``)."""
    first_position: int = 0
    last_position: int = 0
    snapshot_version: int = 0
    """The version of the stream's last snapshot this process knows of (0: none)."""


class StateCache:
    """Folded states by (decider, stream), least recently used dropped first.

    A cached state is only a starting point: every load still reads the stream's tail after
    the cached version, so a stale entry costs one short read, never a wrong decision. A caller
    that decides on a cached state without reading (``CommandShell.cached``: the post route's
    session, channel and workspace) appends with those versions expected, so a stale entry
    costs a refused append and a read, never a wrong decision either.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], _Loaded[Any]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> _Loaded[Any] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str], entry: _Loaded[Any]) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


def _fold(decider: Decider[S, Any], loaded: _Loaded[S], tail: Sequence[RecordedEvent]) -> _Loaded[S]:
    if not tail:
        return loaded
    state = decider.evolve_all(loaded.state, [r.event for r in tail if not isinstance(r.event, UnknownEvent)])
    positions = {**loaded.positions, **{r.event_id: r.position for r in tail}}
    first = tail[0].position if loaded.version == 0 else loaded.first_position
    return _Loaded(state, tail[-1].version, positions, first, tail[-1].position, loaded.snapshot_version)


Entry = tuple[Decider[Any, Any], str, Sequence[Any]]
"""A stream to decide on: its decider, its id, and the commands to decide in turn."""


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` after a conflict: random (so that rivals
    de-synchronise), growing from 4 ms to at most 100 ms. Ten attempts ride out a burst on one
    stream from several processes (a thousand people accepting one workspace's invite at once)."""
    return random.uniform(0, min(0.1, 0.002 * 2**attempt))


def _decide_all(decider: Decider[Any, Any], state: Any, commands: Sequence[Any]) -> tuple[list[Event], Any]:
    events: list[Event] = []
    for command in commands:
        new = list(decider.decide(state, command))
        for event in new:
            state = decider.evolve(state, event)
        events += new
    return events, state


def _repeated(entries: Sequence[Entry], loaded: Sequence[_Loaded[Any]], ctx: Context) -> int | None:
    if ctx.idempotency_key is None:
        return None
    positions = [lo.positions.get(_nth_id(stream, ctx.idempotency_key, 0)) for (_, stream, _), lo in zip(entries, loaded, strict=True)]
    found = [p for p in positions if p is not None]
    return max(found) if found else None


def _nth_id(stream_id: str, key: str, index: int) -> uuid.UUID:
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{stream_id}\n{key}\n{index}")


def event_ids(stream_id: str, key: str | None, count: int) -> list[uuid.UUID]:
    """Random ids, or, under an idempotency key, the same ids for the same stream and key."""
    if key is None:
        return [uuid.uuid4() for _ in range(count)]
    return [_nth_id(stream_id, key, i) for i in range(count)]


class CommandShell:
    def __init__(self, store: EventStore, cache: StateCache | None = None, max_attempts: int = 10,
                 snapshots: snap.SnapshotStore | None = None, snapshot_every: int = snap.EVERY) -> None:
        self._store = store
        self._cache = cache if cache is not None else StateCache()
        self._max_attempts = max_attempts
        self._locks: dict[str, asyncio.Lock] = {}
        self._snapshots, self._snapshot_every = snapshots, snapshot_every
        self._writing: set[asyncio.Task[None]] = set()
        self._one_write = asyncio.Semaphore(1)  # snapshots are written one at a time: a pool connection each

    def cached(self, decider: Decider[S, Any], stream_id: str) -> _Loaded[S] | None:
        """What this process last loaded of the stream (maybe stale), without reading."""
        return self._cache.get((decider.name, stream_id))

    async def load(self, decider: Decider[S, Any], stream_id: str) -> _Loaded[S]:
        return (await self.load_many([(decider, stream_id)]))[0]

    async def load_many(self, wanted: Sequence[tuple[Decider[Any, Any], str]]) -> list[_Loaded[Any]]:
        """Each stream's current state, their tails read in one round trip."""
        keys = [(decider.name, stream_id) for decider, stream_id in wanted]
        held = [self._cache.get(key) for key in keys]
        await self._start_from_snapshots(wanted, held)
        cached = [c or _Loaded(decider.initial) for c, (decider, _) in zip(held, wanted, strict=True)]
        tails = await self._store.read_streams([(stream_id, c.version) for (_, stream_id), c in zip(wanted, cached, strict=True)])
        fresh = [_fold(decider, c, tail) for (decider, _), c, tail in zip(wanted, cached, tails, strict=True)]
        for i, (key, (decider, stream_id)) in enumerate(zip(keys, wanted, strict=True)):
            if self._snapshots is not None and decider.snapshots and \
                    fresh[i].version - fresh[i].snapshot_version >= self._snapshot_every:
                fresh[i] = self._write_snapshot(decider, stream_id, fresh[i])
            self._cache.put(key, fresh[i])
        return fresh

    async def _start_from_snapshots(self, wanted: Sequence[tuple[Decider[Any, Any], str]],
                                    held: list[_Loaded[Any] | None]) -> None:
        """Fill the uncached streams of snapshotting deciders from their snapshots, in place."""
        if self._snapshots is None:
            return
        missing = [i for i, loaded in enumerate(held) if loaded is None and wanted[i][0].snapshots]
        if not missing:
            return
        try:
            found = await self._snapshots.get_many([wanted[i] for i in missing])
        except Exception as exc:  # noqa: BLE001 - a cache: without it the log is folded from the start
            log.warning("snapshot.read_failed", error=repr(exc), streams=len(missing),
                        hint="loading these streams from the start of the log; check aggregate_snapshots")
            return
        for i, snapshot in zip(missing, found, strict=True):
            if snapshot is not None:
                held[i] = _Loaded(snapshot.state, snapshot.version, dict(snapshot.keyed), snapshot.first_position,
                                  snapshot.last_position, snapshot.version)

    def _write_snapshot(self, decider: Decider[S, Any], stream_id: str, loaded: _Loaded[S]) -> _Loaded[S]:
        """Save ``loaded`` as the stream's snapshot in the background; what to cache instead of it
        (only the keyed positions kept, as a load from the snapshot would have them)."""
        keyed = snap.keyed_positions(loaded.positions)
        snapshot = snap.Snapshot(loaded.state, loaded.version, loaded.first_position, loaded.last_position, keyed)
        task = asyncio.get_running_loop().create_task(self._put_snapshot(decider, stream_id, snapshot))
        self._writing.add(task)  # held, or the loop may drop it half-way
        task.add_done_callback(self._writing.discard)
        return replace(loaded, positions=keyed, snapshot_version=loaded.version)

    async def _put_snapshot(self, decider: Decider[Any, Any], stream_id: str, snapshot: snap.Snapshot[Any]) -> None:
        assert self._snapshots is not None
        try:
            async with self._one_write:
                await self._snapshots.put(decider, stream_id, snapshot)
        except Exception as exc:  # noqa: BLE001 - a cache: the next snapshot is EVERY events on
            log.warning("snapshot.write_failed", decider=decider.name, stream_id=stream_id, version=snapshot.version,
                        error=repr(exc))
            return
        log.info("snapshot.written", decider=decider.name, stream_id=stream_id, version=snapshot.version)

    async def drain_snapshots(self) -> None:
        """Wait for the snapshots being written (at shutdown, and in tests)."""
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    async def handle(self, decider: Decider[S, C], stream_id: str, command: C, ctx: Context,
                     *, new: bool = False, expect: Sequence[tuple[str, int]] = ()) -> Outcome[S]:
        """Decide and append; raises the decider's DomainError unchanged on a rejection.
        ``new``: the caller just made ``stream_id`` up from a fresh random id, so there is nothing
        to read (the append still expects an empty stream, so a wrong guess is a conflict).
        ``expect``: other streams the caller's decision read, at the versions it read them (see
        ``EventStore.append_many``); if one has moved, ``WrongExpectedVersion`` names it and is
        not retried here: the caller must read again and decide again."""
        # Commands on one stream from this process take turns, so they never conflict with each
        # other; only writers in other processes can, and those conflicts are retried.
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        try:
            async with lock:
                return await self._handle(decider, stream_id, command, ctx, new, expect)
        finally:
            if not lock.locked() and not lock._waiters:  # noqa: SLF001 - drop idle locks
                self._locks.pop(stream_id, None)

    async def _handle(self, decider: Decider[S, C], stream_id: str, command: C, ctx: Context,
                      new: bool = False, expect: Sequence[tuple[str, int]] = ()) -> Outcome[S]:
        for attempt in range(1, self._max_attempts + 1):
            fresh = new and attempt == 1 and ctx.idempotency_key is None
            loaded = _Loaded(decider.initial) if fresh else await self.load(decider, stream_id)
            repeat = self._repeat_of(stream_id, ctx, loaded)
            if repeat is not None:
                return repeat
            events = decider.decide(loaded.state, command)
            if not events:
                return Outcome(0, loaded.version, loaded.state, ())
            try:
                return await self._append(decider, stream_id, loaded, events, ctx, expect)
            except WrongExpectedVersion as exc:
                if attempt == self._max_attempts or exc.stream_id != stream_id:
                    raise
                await asyncio.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    def _repeat_of(self, stream_id: str, ctx: Context, loaded: _Loaded[S]) -> Outcome[S] | None:
        if ctx.idempotency_key is None:
            return None
        first = event_ids(stream_id, ctx.idempotency_key, 1)[0]
        if first not in loaded.positions:
            return None
        # The first attempt appended ids 0..n-1 of this key; its answer was the last one's position.
        position, index = loaded.positions[first], 1
        while (following := _nth_id(stream_id, ctx.idempotency_key, index)) in loaded.positions:
            position, index = loaded.positions[following], index + 1
        return Outcome(position, loaded.version, loaded.state, (), repeated=True)

    async def _append(
        self, decider: Decider[S, C], stream_id: str, loaded: _Loaded[S], events: Sequence[Event], ctx: Context,
        expect: Sequence[tuple[str, int]] = (),
    ) -> Outcome[S]:
        meta = EventMeta(
            actor_id=ctx.actor_id, correlation_id=ctx.correlation_id, causation_id=ctx.causation_id, occurred_at=ctx.now
        )
        ids = event_ids(stream_id, ctx.idempotency_key, len(events))
        new = [NewEvent(event=e, event_id=i, meta=meta) for e, i in zip(events, ids, strict=True)]
        result = await self._store.append(stream_id, new, loaded.version, expect=expect)
        state = loaded.state
        for event in events:
            state = decider.evolve(state, event)
        return Outcome(result.position, result.version, state, events)

    async def decide_many(self, entries: Sequence[Entry], ctx: Context) -> tuple[int, list[Any]]:
        """Decide each entry's commands in turn on its stream (the first rejection wins, so put
        the stream that checks visibility first) and append every stream's events at once, all
        or none; a conflict on any of them reloads and decides again, like ``handle``. Returns the
        position to answer with and each stream's new state. A repeat under an idempotency key
        appends nothing and answers the first position."""
        streams = sorted({stream_id for _, stream_id, _ in entries})
        locks = [self._locks.setdefault(s, asyncio.Lock()) for s in streams]  # sorted: no deadlock
        try:
            for lock in locks:
                await lock.acquire()
            return await self._decide_many(entries, ctx)
        finally:
            for stream_id, lock in zip(streams, locks, strict=True):
                if lock.locked():
                    lock.release()
                if not lock.locked() and not lock._waiters:  # noqa: SLF001 - drop idle locks
                    self._locks.pop(stream_id, None)

    async def _decide_many(self, entries: Sequence[Entry], ctx: Context) -> tuple[int, list[Any]]:
        for attempt in range(1, self._max_attempts + 1):
            loaded = [await self.load(decider, stream_id) for decider, stream_id, _ in entries]
            if (repeat := _repeated(entries, loaded, ctx)) is not None:
                return repeat, [lo.state for lo in loaded]
            decided = [_decide_all(d, lo.state, commands) for (d, _, commands), lo in zip(entries, loaded, strict=True)]
            writes = [(d, s, lo, events) for (d, s, _), lo, (events, _) in zip(entries, loaded, decided, strict=True) if events]
            if not writes:
                return max((lo.last_position for lo in loaded), default=0), [st for _, st in decided]
            try:
                outcomes = await self.commit_many(writes, ctx)
            except WrongExpectedVersion:
                if attempt == self._max_attempts:
                    raise
                await asyncio.sleep(backoff(attempt))
                continue
            return max(o.position for o in outcomes), [st for _, st in decided]
        raise AssertionError("unreachable")

    async def commit_many(
        self, writes: Sequence[tuple[Decider[Any, Any], str, _Loaded[Any], Sequence[Event]]], ctx: Context
    ) -> list[Outcome[Any]]:
        """Append decided events to several streams at once, all or none (``append_many``):
        each at the version it was loaded at, with ids as ``_append`` makes them. A conflict
        raises ``WrongExpectedVersion`` and writes nothing; the caller reloads and decides again."""
        meta = EventMeta(
            actor_id=ctx.actor_id, correlation_id=ctx.correlation_id, causation_id=ctx.causation_id, occurred_at=ctx.now
        )
        appends = []
        for _, stream_id, loaded, events in writes:
            ids = event_ids(stream_id, ctx.idempotency_key, len(events))
            new = [NewEvent(event=e, event_id=i, meta=meta) for e, i in zip(events, ids, strict=True)]
            appends.append(StreamAppend(stream_id, new, loaded.version))
        results = await self._store.append_many(appends)
        outcomes: list[Outcome[Any]] = []
        for (decider, _, loaded, events), result in zip(writes, results, strict=True):
            state = loaded.state
            for event in events:
                state = decider.evolve(state, event)
            outcomes.append(Outcome(result.position, result.version, state, events))
        return outcomes
