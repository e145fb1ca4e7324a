"""The one command shell: load the streams, fold them, decide, append with the expected versions.

``run`` is the one retry loop of every command. A conflicting append (someone else wrote a
stream since we loaded it) is retried by loading and deciding again, a bounded number of times,
never by overwriting. A plan made by a function (``Planner``) is made again on each attempt, so
what it read to decide (the caller's session, the channel, the workspace: ``Plan.expect``) is read
again too; the post route decides its first attempt on states this process holds without reading
them (``cached_first``), and a refusal from those is only answered once decided on read ones.
Under an idempotency key a repeat returns the first answer and appends nothing, even when the
state has moved on since and deciding again would give another answer; another request under a
used key is 422 (``commands/idempotency.py``). A command that changes nothing appends nothing and
answers the last position of its streams.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import structlog

from commands import snapshots as snap
from commands.idempotency import Key, KeyReused, event_ids, nth_id
from domain.decider import Decider
from domain.errors import DomainError
from domain.events import Event, EventMeta, NewEvent, RecordedEvent, UnknownEvent
from domain.idempotency import KEYS, KeyUsed
from infra.eventstore import EventStore, WrongExpectedVersion
from infra.eventstore.port import AppendResult, DuplicateEventId, StreamAppend

log = structlog.get_logger(__name__)

S = TypeVar("S")
C = TypeVar("C")


@dataclass(frozen=True)
class Context:
    """Who asks, when, and under which key; the domain gets time and ids only from here."""

    actor_id: str | None
    now: dt.datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    key: Key | None = None


@dataclass(frozen=True)
class Outcome(Generic[S]):
    position: int
    version: int
    state: S
    events: Sequence[Event]
    repeated: bool = False


Entry = tuple[Decider[Any, Any], str, Sequence[Any]]
"""A stream to decide on: its decider, its id, and the commands to decide in turn."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One attempt's decision: each entry's commands decided in turn on its stream (the first
    rejection wins, so put the stream that checks visibility first), every stream's events
    appended at once, all or none."""

    entries: Sequence[Entry]
    ctx: Context
    expect: Sequence[tuple[str, int]] = ()
    """Other streams the decision read, at the versions it read them (``EventStore.append_many``)."""
    new: bool = False
    """The first entry's stream was just made up from a fresh random id: nothing to read (the
    append still expects it empty, so a wrong guess is a conflict)."""


Planner = Callable[[bool], Awaitable[Plan]]
"""Makes an attempt's plan; its argument says whether it may decide on states this process holds
without reading them (``CommandShell.cached``)."""


@dataclass(frozen=True, slots=True)
class Decided:
    position: int
    """To answer with: of the last event appended; for a repeat, as the first time; for a
    command that changed nothing, the last position of its streams."""
    states: list[Any]
    """Each entry's state after the command."""
    versions: list[int]
    events: list[Sequence[Event]]
    """Each entry's new events (none for a repeat)."""
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


class CommandShell:
    def __init__(
        self,
        store: EventStore,
        cache: StateCache | None = None,
        max_attempts: int = 10,
        snapshots: snap.SnapshotStore | None = None,
        snapshot_every: int = snap.EVERY,
    ) -> None:
        self._store = store
        self._cache = cache if cache is not None else StateCache()
        self._max_attempts = max_attempts
        self._locks: dict[str, asyncio.Lock] = {}
        self._snapshots, self._snapshot_every = snapshots, snapshot_every
        self._writing: set[asyncio.Task[None]] = set()
        self._one_write = asyncio.Semaphore(1)  # snapshots are written one at a time: a pool connection each

    async def head(self) -> int:
        """The log's last position."""
        return await self._store.head()

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
        tails = await self._store.read_streams(
            [(stream_id, c.version) for (_, stream_id), c in zip(wanted, cached, strict=True)]
        )
        fresh = [_fold(decider, c, tail) for (decider, _), c, tail in zip(wanted, cached, tails, strict=True)]
        for i, (key, (decider, stream_id)) in enumerate(zip(keys, wanted, strict=True)):
            if (
                self._snapshots is not None
                and decider.snapshots
                and fresh[i].version - fresh[i].snapshot_version >= self._snapshot_every
            ):
                fresh[i] = self._write_snapshot(decider, stream_id, fresh[i])
            self._cache.put(key, fresh[i])
        return fresh

    async def _start_from_snapshots(
        self, wanted: Sequence[tuple[Decider[Any, Any], str]], held: list[_Loaded[Any] | None]
    ) -> None:
        """Fill the uncached streams of snapshotting deciders from their snapshots, in place."""
        if self._snapshots is None:
            return
        missing = [i for i, loaded in enumerate(held) if loaded is None and wanted[i][0].snapshots]
        if not missing:
            return
        try:
            found = await self._snapshots.get_many([wanted[i] for i in missing])
        except Exception as exc:  # noqa: BLE001 - a cache: without it the log is folded from the start
            log.warning(
                "snapshot.read_failed",
                error=repr(exc),
                streams=len(missing),
                hint="loading these streams from the start of the log; check aggregate_snapshots",
            )
            return
        for i, snapshot in zip(missing, found, strict=True):
            if snapshot is not None:
                held[i] = _Loaded(
                    snapshot.state,
                    snapshot.version,
                    dict(snapshot.keyed),
                    snapshot.first_position,
                    snapshot.last_position,
                    snapshot.version,
                )

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
            log.warning(
                "snapshot.write_failed",
                decider=decider.name,
                stream_id=stream_id,
                version=snapshot.version,
                error=repr(exc),
            )
            return
        log.info("snapshot.written", decider=decider.name, stream_id=stream_id, version=snapshot.version)

    async def drain_snapshots(self) -> None:
        """Wait for the snapshots being written (at shutdown, and in tests)."""
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    # -- deciding ------------------------------------------------------------------------------

    async def handle(
        self,
        decider: Decider[S, C],
        stream_id: str,
        command: C,
        ctx: Context,
        *,
        new: bool = False,
        expect: Sequence[tuple[str, int]] = (),
    ) -> Outcome[S]:
        """Decide one command on one stream and append; raises the decider's DomainError unchanged
        on a rejection. ``new``, ``expect``: as in ``Plan``; a plan that is not made again cannot
        get past a conflict on an ``expect`` stream, so that ``WrongExpectedVersion`` is raised."""
        decided = await self.run(Plan(((decider, stream_id, (command,)),), ctx, expect, new))
        return Outcome(decided.position, decided.versions[0], decided.states[0], decided.events[0], decided.repeated)

    async def decide_many(self, entries: Sequence[Entry], ctx: Context) -> tuple[int, list[Any]]:
        """``run`` of one plan: the position to answer with and each entry's new state."""
        decided = await self.run(Plan(entries, ctx))
        return decided.position, decided.states

    async def run(self, plan: Plan | Planner, *, cached_first: bool = False) -> Decided:
        """Make the plan (each attempt, if ``plan`` makes it), decide, append; on a conflict load
        and decide again, up to ``max_attempts`` times. ``cached_first``: the first attempt's plan
        may be decided on held states, and a rejection of it is decided again on read ones."""
        for attempt in range(1, self._max_attempts + 1):
            trusting = cached_first and attempt == 1 < self._max_attempts
            if isinstance(plan, Plan):
                current = plan
            else:
                try:
                    current = await plan(trusting)
                except DomainError:
                    if not trusting:
                        raise
                    continue  # a rejection decided on held states: decide on read ones
            key = current.ctx.key
            streams = [stream_id for _, stream_id, _ in current.entries]
            record = key.record if key is not None and key.record not in streams else None
            locked = (
                streams if len(streams) == 1 and record is None else sorted({*streams, *([record] if record else [])})
            )
            # Commands on one stream from this process take turns, so they never conflict with
            # each other; only writers in other processes can, and those conflicts are retried.
            held = await self._lock(locked)
            try:
                return await self._decide(current, attempt == 1, record)
            except DomainError:
                if not trusting:
                    raise
            except (WrongExpectedVersion, DuplicateEventId) as exc:
                if attempt == self._max_attempts or not _retryable(exc, current, plan is current):
                    raise
                if not trusting:  # a stale copy is no contention: read at once. The turn is kept
                    await asyncio.sleep(backoff(attempt))  # meanwhile: this process's others wait
            finally:
                self._unlock(locked, held)
        raise AssertionError("unreachable")

    async def replay(self, entries: Sequence[Entry], ctx: Context) -> Decided | None:
        """Under ``ctx.key``, without deciding: the first answer if the key's record holds this
        request, 422 (``KeyReused``) if it holds another, None if the key is unused. For a route
        that must know before it does its own work (an upload, before storing the bytes)."""
        key = ctx.key
        assert key is not None
        record = None if key.record in {stream_id for _, stream_id, _ in entries} else key.record
        wanted = [(decider, stream_id) for decider, stream_id, _ in entries] + ([(KEYS, record)] if record else [])
        return _repeat(entries, await self.load_many(wanted), key, record)

    async def _lock(self, streams: Sequence[str]) -> list[asyncio.Lock]:
        """The streams' locks, taken in order (sorted by the caller: no deadlock)."""
        held: list[asyncio.Lock] = []
        try:
            for stream_id in streams:
                lock = self._locks.setdefault(stream_id, asyncio.Lock())
                await lock.acquire()
                held.append(lock)
        except BaseException:
            self._unlock(streams, held)
            raise
        return held

    def _unlock(self, streams: Sequence[str], held: list[asyncio.Lock]) -> None:
        for lock in held:
            lock.release()
        for stream_id in streams:  # drop idle locks
            idle = self._locks.get(stream_id)
            if idle is not None and not idle.locked() and not idle._waiters:
                del self._locks[stream_id]

    async def _decide(self, plan: Plan, first: bool, record: str | None) -> Decided:
        entries, key = plan.entries, plan.ctx.key
        if len(entries) == 1 and key is None:  # most commands (every post without a key): lean
            return await self._decide_one(plan, first)
        if plan.new and first and key is None:
            loaded: list[_Loaded[Any]] = [_Loaded(entries[0][0].initial)]
            loaded += await self.load_many([(decider, stream_id) for decider, stream_id, _ in entries[1:]])
        else:
            wanted: list[tuple[Decider[Any, Any], str]] = [(decider, stream_id) for decider, stream_id, _ in entries]
            if record is not None:
                wanted.append((KEYS, record))
            loaded = await self.load_many(wanted)
        if key is not None and (repeat := _repeat(entries, loaded, key, record)) is not None:
            return repeat
        decided = [_decide_all(d, lo.state, commands) for (d, _, commands), lo in zip(entries, loaded, strict=False)]
        states = [state for _, state in decided]
        writes = [
            (s, lo, events) for (_, s, _), lo, (events, _) in zip(entries, loaded, decided, strict=False) if events
        ]
        if not writes:
            return Decided(
                max(lo.last_position for lo in loaded),
                states,
                [lo.version for lo in loaded[: len(entries)]],
                [() for _ in entries],
            )
        if key is not None and record is not None:
            writes.append((record, loaded[-1], [KeyUsed(operation=key.operation)]))
        results = iter(await self._append(writes, plan.ctx, plan.expect))
        versions: list[int] = []
        position = 0
        for lo, (events, _) in zip(loaded, decided, strict=False):
            version = lo.version
            if events:
                result = next(results)
                version, position = result.version, max(position, result.position)
            versions.append(version)
        for result in results:  # the key's record: the last event appended
            position = max(position, result.position)
        return Decided(position, states, versions, [events for events, _ in decided])

    async def _decide_one(self, plan: Plan, first: bool) -> Decided:
        decider, stream_id, commands = plan.entries[0]
        loaded = _Loaded(decider.initial) if plan.new and first else await self.load(decider, stream_id)
        events, state = _decide_all(decider, loaded.state, commands)
        if not events:
            return Decided(loaded.last_position, [state], [loaded.version], [()])
        [result] = await self._append([(stream_id, loaded, events)], plan.ctx, plan.expect)
        return Decided(result.position, [state], [result.version], [events])

    async def _append(
        self,
        writes: Sequence[tuple[str, _Loaded[Any], Sequence[Event]]],
        ctx: Context,
        expect: Sequence[tuple[str, int]] = (),
    ) -> list[AppendResult]:
        """Each stream's events at the version it was loaded at, all or none, with ids as
        ``event_ids`` makes them. A conflict raises ``WrongExpectedVersion`` and writes nothing."""
        meta = EventMeta(
            actor_id=ctx.actor_id, correlation_id=ctx.correlation_id, causation_id=ctx.causation_id, occurred_at=ctx.now
        )
        appends = [
            StreamAppend(
                stream_id,
                [
                    NewEvent(event=e, event_id=i, meta=meta)
                    for e, i in zip(events, event_ids(stream_id, ctx.key, len(events)), strict=True)
                ],
                loaded.version,
            )
            for stream_id, loaded, events in writes
        ]
        if len(appends) == 1:
            return [
                await self._store.append(
                    appends[0].stream_id, appends[0].events, appends[0].expected_version, expect=expect
                )
            ]
        return await self._store.append_many(appends, expect=expect)

    async def commit_many(
        self,
        writes: Sequence[tuple[Decider[Any, Any], str, _Loaded[Any], Sequence[Event]]],
        ctx: Context,
    ) -> list[Outcome[Any]]:
        """Append decided events to several streams at once, all or none (``append_many``):
        each at the version it was loaded at, with ids as ``event_ids`` makes them. A conflict
        raises ``WrongExpectedVersion`` and writes nothing; the caller reloads and decides again."""
        results = await self._append([(stream_id, loaded, events) for _, stream_id, loaded, events in writes], ctx)
        outcomes: list[Outcome[Any]] = []
        for (decider, _, loaded, events), result in zip(writes, results, strict=True):
            state = loaded.state
            for event in events:
                state = decider.evolve(state, event)
            outcomes.append(Outcome(result.position, result.version, state, events))
        return outcomes


def _retryable(exc: WrongExpectedVersion | DuplicateEventId, plan: Plan, static: bool) -> bool:
    """Whether loading and deciding again can get past ``exc``."""
    if isinstance(exc, DuplicateEventId):  # a racing request under the key: the next load finds its record
        return plan.ctx.key is not None
    if not static:  # the plan is made again, from what it reads now
        return True
    key = plan.ctx.key
    return exc.stream_id in {stream_id for _, stream_id, _ in plan.entries} or (
        key is not None and exc.stream_id == key.record
    )


def _repeat(entries: Sequence[Entry], loaded: list[_Loaded[Any]], key: Key, record: str | None) -> Decided | None:
    """The first answer if the key's record holds this request; 422 if it holds another."""
    held = loaded[-1] if record is not None else loaded[[s for _, s, _ in entries].index(key.record)]
    position = held.positions.get(nth_id(key.record, key, 0))
    if position is None:
        if held.version > 0:
            raise KeyReused(key, held.state if record is not None else None)
        return None
    if record is None:  # the record is one of the streams written: the answer was their last event's
        position = max(
            _last_of_request(stream_id, lo, key) for (_, stream_id, _), lo in zip(entries, loaded, strict=False)
        )
    mine = loaded[: len(entries)]
    return Decided(
        position, [lo.state for lo in mine], [lo.version for lo in mine], [() for _ in entries], repeated=True
    )


def _last_of_request(stream_id: str, loaded: _Loaded[Any], key: Key) -> int:
    position, index = 0, 0
    while (found := loaded.positions.get(nth_id(stream_id, key, index))) is not None:
        position, index = found, index + 1
    return position
