"""Rebuild a projection from the log into fresh tables, optionally compare, then swap them in.

How it stays correct while the live projector keeps running:

1. Replay, without any lock: ``<table>__rebuild`` tables are created and the log is replayed
   into them in big pages, up to the live checkpoint (or the head, when there are no live
   tables), chasing the checkpoint until it is close.
2. Swap, in ONE transaction on the rebuild's connection: lock the projection's checkpoint row
   (``FOR UPDATE``). Every live batch transaction locks that row first (``runtime.apply_batch``),
   so from here the live projector is paused between two batches, holding on to its leadership;
   and because both sides take the row lock before any table lock, they cannot deadlock.
   The rebuilt tables catch up to exactly the checkpoint, are compared with the live ones
   (``--verify``: ``EXCEPT ALL`` both ways), and, if they match, the live tables are dropped and
   the rebuilt ones renamed in (with their indexes and constraints). Readers keep reading the
   live tables until the DROP, which waits for them (bounded by ``lock_timeout``).
   On commit the live projector's waiting batch resumes and writes into the new tables, whose
   names it resolves afresh; it lost nothing, since they stand exactly at its checkpoint.
   When there were no live tables the checkpoint is moved to the rebuilt position instead, and
   the runner, finding its checkpoint moved, resumes from there.
3. On a difference nothing is swapped: the transaction commits the ``__rebuild`` tables at the
   live checkpoint so that they can be inspected with SQL; the next rebuild replaces them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from domain.events import RecordedEvent
from infra.eventstore.port import EventStore
from infra.leader import try_lead
from projections.checkpoints import lock_checkpoint, position_of, save_checkpoint
from projections.runtime import Projection, drop_tables, tables_exist

SUFFIX = "__rebuild"
LOCK_CLASS = 7243021  # two-key advisory locks admitting one rebuild per projection
PAGE_SIZE = 5000
CLOSE_ENOUGH = 2000  # positions left to replay under the checkpoint row lock, at most (about)
LOCK_TIMEOUT = "30s"
SAMPLE_ROWS = 10


class RebuildError(Exception):
    """The rebuild could not run; the message says what to do."""


@dataclass
class Progress:
    done: int
    """Events replayed so far."""
    total: int
    """Events to replay, estimated from positions (the log may have gaps)."""
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


@dataclass
class TableDiff:
    table: str
    live_rows: int
    rebuilt_rows: int
    columns: list[str]
    only_live: int
    only_rebuilt: int
    live_samples: list[tuple] = field(default_factory=list)
    rebuilt_samples: list[tuple] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.only_live or self.only_rebuilt)


@dataclass
class RebuildResult:
    name: str
    position: int
    events: int
    elapsed_s: float
    had_live: bool
    diffs: list[TableDiff]
    swapped: bool

    @property
    def identical(self) -> bool:
        return not any(d.differs for d in self.diffs)


ProgressCallback = Callable[[Progress], None]


class _Replay:
    """Feeds the log, page by page, into the ``__rebuild`` tables."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection,
        store: EventStore,
        projection: Projection,
        progress: ProgressCallback | None,
        page_size: int,
    ) -> None:
        self.conn, self.store, self.projection = conn, store, projection
        self.progress, self.page_size = progress, page_size
        self.position = 0
        self.events = 0
        self.started = time.monotonic()

    async def to(self, target: int) -> None:
        while self.position < target:
            page = [e async for e in self.store.read_all(self.position, self.page_size) if e.position <= target]
            if not page:
                self.position = target  # nothing left at or below it: positions can have gaps
                return
            await self._apply(page)
            self._report(target)

    async def _apply(self, page: Sequence[RecordedEvent]) -> None:
        async with self.conn.transaction():  # a savepoint when already inside the swap transaction
            await self.projection.handle(self.conn, page, SUFFIX)
        self.position = page[-1].position
        self.events += len(page)

    def _report(self, target: int) -> None:
        if self.progress is not None:
            elapsed = time.monotonic() - self.started
            self.progress(Progress(self.events, self.events + max(0, target - self.position), elapsed))


async def rebuild(
    conninfo: str,
    store: EventStore,
    projection: Projection,
    *,
    verify: bool = False,
    progress: ProgressCallback | None = None,
    page_size: int = PAGE_SIZE,
) -> RebuildResult:
    """Replay the whole log into fresh tables and swap them in (see the module docstring)."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await _admit_one(conn, projection.name)
        await _create_fresh(conn, projection)
        replay = _Replay(conn, store, projection, progress, page_size)
        await _chase(conn, store, projection, replay)
        return await _finish(conn, store, projection, replay, verify)


async def _admit_one(conn: psycopg.AsyncConnection, name: str) -> None:
    if not await try_lead(conn, name, lock_class=LOCK_CLASS):
        raise RebuildError(f"another rebuild of {name!r} is running; wait for it to finish, then try again")


async def _create_fresh(conn: psycopg.AsyncConnection, projection: Projection) -> None:
    # Left-overs of an interrupted or refused rebuild are replaced, never resumed.
    async with conn.transaction():
        await conn.execute(drop_tables(projection.tables, SUFFIX))
        await conn.execute(projection.schema(SUFFIX))


async def _chase(conn: psycopg.AsyncConnection, store: EventStore, projection: Projection, replay: _Replay) -> None:
    """Replay without locks until only a little is left for the swap transaction."""
    while True:
        target = await _live_target(conn, store, projection)
        if target - replay.position <= CLOSE_ENOUGH:
            return
        await replay.to(target)


async def _live_target(conn: psycopg.AsyncConnection, store: EventStore, projection: Projection) -> int:
    if not await tables_exist(conn, projection.tables):
        return await store.head()
    return await position_of(conn, projection.name) or 0


async def _finish(
    conn: psycopg.AsyncConnection, store: EventStore, projection: Projection, replay: _Replay, verify: bool
) -> RebuildResult:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        checkpoint = await _pause_live(conn, projection.name)
        had_live = await tables_exist(conn, projection.tables)
        target = await _swap_target(store, replay, checkpoint, had_live, verify)
        await replay.to(target)
        diffs = [await _diff(conn, t) for t in projection.tables] if verify and had_live else []
        swapped = not any(d.differs for d in diffs)
        if swapped:
            await _swap(conn, projection.tables)
            if target != checkpoint:
                await save_checkpoint(conn, projection.name, target)
    elapsed = time.monotonic() - replay.started
    return RebuildResult(projection.name, target, replay.events, elapsed, had_live, diffs, swapped)


async def _pause_live(conn: psycopg.AsyncConnection, name: str) -> int:
    try:
        return await lock_checkpoint(conn, name)
    except psycopg.errors.LockNotAvailable:
        raise RebuildError(
            f"the checkpoint of {name!r} stayed locked for {LOCK_TIMEOUT}; is a batch stuck? "
            "see the app's logs, then try again"
        ) from None


async def _swap_target(store: EventStore, replay: _Replay, checkpoint: int, had_live: bool, verify: bool) -> int:
    if not had_live:
        return max(replay.position, await store.head())
    if replay.position > checkpoint and verify:
        # The live projection started during the rebuild and is behind it: nothing to compare yet.
        raise RebuildError(
            f"the live projection (at {checkpoint}) is behind the rebuilt tables (at {replay.position}); "
            "wait until `hubbub projections status` shows it caught up, then rebuild again"
        )
    return max(replay.position, checkpoint)


async def _diff(conn: psycopg.AsyncConnection, table: str) -> TableDiff:
    live, rebuilt = sql.Identifier(table), sql.Identifier(table + SUFFIX)
    only_live = sql.SQL("SELECT * FROM {} EXCEPT ALL SELECT * FROM {}").format(live, rebuilt)
    only_rebuilt = sql.SQL("SELECT * FROM {} EXCEPT ALL SELECT * FROM {}").format(rebuilt, live)
    live_count, live_rows, columns = await _count_and_sample(conn, only_live)
    rebuilt_count, rebuilt_rows, _ = await _count_and_sample(conn, only_rebuilt)
    return TableDiff(
        table,
        await _count(conn, live),
        await _count(conn, rebuilt),
        columns,
        live_count,
        rebuilt_count,
        live_rows,
        rebuilt_rows,
    )


async def _count_and_sample(conn: psycopg.AsyncConnection, query: sql.Composable) -> tuple[int, list[tuple], list[str]]:
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM ({}) AS d").format(query))
    row = await cur.fetchone()
    cur = await conn.execute(sql.SQL("SELECT * FROM ({}) AS d LIMIT {}").format(query, sql.Literal(SAMPLE_ROWS)))
    samples = list(await cur.fetchall())
    columns = [c.name for c in cur.description or []]
    return int(row[0]) if row else 0, samples, columns


async def _count(conn: psycopg.AsyncConnection, table: sql.Identifier) -> int:
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _swap(conn: psycopg.AsyncConnection, tables: Sequence[str]) -> None:
    await conn.execute(drop_tables(tables))
    for table in tables:
        await conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(table + SUFFIX), sql.Identifier(table))
        )
        await _rename_dependents(conn, table)


_DEPENDENTS = """
SELECT 'constraint', conname FROM pg_constraint WHERE conrelid = %(t)s::regclass AND strpos(conname, %(s)s) > 0
UNION ALL
SELECT 'index', c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = %(t)s::regclass AND strpos(c.relname, %(s)s) > 0
   AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid AND k.conrelid = i.indrelid)
UNION ALL
SELECT 'sequence', c.relname FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
 WHERE d.refobjid = %(t)s::regclass AND c.relkind = 'S' AND strpos(c.relname, %(s)s) > 0
"""


async def _rename_dependents(conn: psycopg.AsyncConnection, table: str) -> None:
    """``foo__rebuild_pkey`` -> ``foo_pkey`` and the like: the swapped-in table reads as if it
    had always been there (renaming a constraint renames the index behind it too)."""
    cur = await conn.execute(_DEPENDENTS, {"t": table, "s": SUFFIX})
    for kind, name in await cur.fetchall():
        new = sql.Identifier(name.replace(SUFFIX, ""))
        if kind == "constraint":
            stmt = sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(table), sql.Identifier(name), new
            )
        else:
            stmt = sql.SQL("ALTER {} {} RENAME TO {}").format(sql.SQL(kind.upper()), sql.Identifier(name), new)
        await conn.execute(stmt)
