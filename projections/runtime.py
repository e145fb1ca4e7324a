"""The projector runtime: named projections follow the log and keep their tables current.

Each projection runs in one asyncio task per process, but is *active* in only one process at a
time: the task first takes a session-level advisory lock keyed by the projection's name on a
connection of its own, and the instances that do not get it retry every ``lock_retry_s``; when
the leader dies its session ends, the lock is released and a follower takes over.

The leader follows ``store.subscribe(after=checkpoint)``. For each batch it writes the rows, the
new checkpoint and a ``hubbub_checkpoints`` notification (``"{name} {position}"``) in ONE
transaction, on the connection that holds the lock (a leader that lost its connection has lost the
lock and cannot write either). Every batch transaction starts by moving its checkpoint row, which
locks it, on the condition that it still holds the position the runner resumed from. That row lock is also how a
rebuild pauses the live projector (see ``projections/rebuild.py``), and the check fences off
any other writer of the checkpoint: the runner re-reads it and resumes from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, TypeVar

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from domain.events import RecordedEvent
from infra.eventstore.port import EventStore

log = structlog.get_logger(__name__)

LOCK_CLASS = 7243020
"""First key of the two-key advisory locks that elect a projection's leader (the second key is
``lock_key(name)``). The two-key space is apart from the one-key locks of migrations and appends."""
NOTIFY_CHANNEL = "hubbub_checkpoints"
T = TypeVar("T")


class Projection(Protocol):
    """A read model kept by the runtime. ``handle`` must ignore event types it does not know
    (``UnknownEvent`` included) and write only to its own ``tables`` (suffixed by ``suffix``)."""

    name: str
    tables: Sequence[str]

    def schema(self, suffix: str = "") -> str:
        """CREATE TABLE/INDEX IF NOT EXISTS statements for ``tables``, each name + ``suffix``."""
        ...

    async def handle(
        self, conn: psycopg.AsyncConnection, events: Sequence[RecordedEvent], suffix: str = ""
    ) -> None:
        """Write the rows for ``events``, in the caller's transaction."""
        ...


class CheckpointMoved(Exception):
    """Someone else (a rebuild that swapped in fresh tables) moved the checkpoint."""

    def __init__(self, position: int) -> None:
        super().__init__(f"checkpoint moved to {position}")
        self.position = position


def lock_key(name: str) -> int:
    """Stable 31-bit key for ``name`` (non-negative, so it reads the same in ``pg_locks.objid``)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF


async def lock_checkpoint(conn: psycopg.AsyncConnection, name: str) -> int:
    """Create the checkpoint row if missing and lock it until the transaction ends; its position."""
    await conn.execute(
        "INSERT INTO projection_checkpoints (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,)
    )
    cur = await conn.execute("SELECT position FROM projection_checkpoints WHERE name = %s FOR UPDATE", (name,))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


# Move a checkpoint and tell the watchers ``"{name} {position}"`` (delivered at commit, so it can
# be sent first), in one statement. With ``from``, only from that position: the UPDATE takes the
# row lock and, after waiting for a rebuild that holds it, sees the row as the rebuild left it.
_SAVE = """
WITH saved AS (
    UPDATE projection_checkpoints SET position = %(to)s, updated_at = now()
    WHERE name = %(name)s AND (%(from)s::bigint IS NULL OR position = %(from)s::bigint)
    RETURNING name
)
SELECT pg_notify(%(channel)s, name || ' ' || %(to)s::text) FROM saved
"""


async def save_checkpoint(conn: psycopg.AsyncConnection, name: str, position: int,
                          expected: int | None = None) -> bool:
    """Move ``name``'s checkpoint to ``position`` (only if it is at ``expected``, when given) and
    notify; False if it was not at ``expected``."""
    cur = await conn.execute(_SAVE, {"to": position, "name": name, "from": expected, "channel": NOTIFY_CHANNEL})
    return await cur.fetchone() is not None


async def apply_batch(
    conn: psycopg.AsyncConnection, projection: Projection, events: Sequence[RecordedEvent], expected: int
) -> int:
    """Rows and checkpoint in one transaction: all of the batch takes effect, or none of it."""
    async with conn.transaction():
        if not await save_checkpoint(conn, projection.name, events[-1].position, expected):
            raise CheckpointMoved(await lock_checkpoint(conn, projection.name))
        await projection.handle(conn, events)
    return events[-1].position


async def tables_exist(conn: psycopg.AsyncConnection, tables: Sequence[str]) -> bool:
    cur = await conn.execute("SELECT bool_and(to_regclass(t) IS NOT NULL) FROM unnest(%s::text[]) AS t",
                             (list(tables),))
    row = await cur.fetchone()
    return bool(row and row[0])


def drop_tables(tables: Sequence[str], suffix: str = "") -> sql.Composed:
    # One DROP for all of them, so that foreign keys between them do not get in the way.
    names = sql.SQL(", ").join(sql.Identifier(t + suffix) for t in tables)
    return sql.SQL("DROP TABLE IF EXISTS {}").format(names)


@contextlib.asynccontextmanager
async def _closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close a subscription as soon as we stop reading it (the port promises an AsyncIterator;
    the generators behind it have ``aclose``)."""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class Backoff:
    """Delays that double from ``initial`` up to ``maximum``; ``reset`` after a success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.current = initial

    def next(self) -> float:
        delay, self.current = self.current, min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class _Worker:
    """One projection in this process: wait for the lead, then follow the log."""

    def __init__(self, runner: ProjectorRunner, projection: Projection) -> None:
        self.runner = runner
        self.projection = projection
        self.log = log.bind(projection=projection.name)
        self.backoff = Backoff(runner.retry_initial_s, runner.retry_max_s)
        self.leading = False
        self.in_batch = False
        self.stopping = False
        self.position: int | None = None
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self._session()
            except Exception as exc:
                # The connection (and with it the lead) is gone: connect again and re-elect.
                delay = self.backoff.next()
                self.log.warning("projection.connection_lost", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
            finally:
                self.leading = False

    async def _session(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.runner.conninfo, autocommit=True) as conn:
            # Read models can always be rebuilt from the log, and a crash can only lose the last
            # batches together with their checkpoint: no need to wait for each commit's fsync.
            await conn.execute("SET synchronous_commit = off")
            await self._acquire(conn)
            while not self.stopping:
                try:
                    await self._follow(conn)
                except CheckpointMoved as moved:
                    self.log.info("projection.checkpoint_moved", position=moved.position)
                except psycopg.OperationalError:
                    raise
                except Exception:
                    delay = self.backoff.next()
                    self.log.exception("projection.batch_failed", position=self.position, retry_in_s=delay)
                    await asyncio.sleep(delay)

    async def _acquire(self, conn: psycopg.AsyncConnection) -> None:
        key = lock_key(self.projection.name)
        while True:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, key))
            row = await cur.fetchone()
            if row and row[0]:
                self.leading = True
                self.log.info("projection.leading")
                return
            await asyncio.sleep(self.runner.lock_retry_s)

    async def _follow(self, conn: psycopg.AsyncConnection) -> None:
        position = await self._prepare(conn)
        self.log.info("projection.following", position=position)
        batches = self.runner.store.subscribe(after=position, batch_size=self.runner.batch_size)
        async with _closing(batches):
            async for batch in batches:
                self.in_batch = True
                try:
                    position = self.position = await apply_batch(conn, self.projection, batch, position)
                finally:
                    self.in_batch = False
                self.backoff.reset()
                self.log.debug("projection.batch_applied", position=position, events=len(batch))
                if self.stopping:
                    return

    async def _prepare(self, conn: psycopg.AsyncConnection) -> int:
        # Under the checkpoint row lock, so that a rebuild swapping tables is not raced.
        async with conn.transaction():
            self.position = await lock_checkpoint(conn, self.projection.name)
            if self.position and not await tables_exist(conn, self.projection.tables):
                await self._start_over(conn)
            await conn.execute(self.projection.schema())
        return self.position

    async def _start_over(self, conn: psycopg.AsyncConnection) -> None:
        # Someone dropped the read model (all or part of it): its checkpoint means nothing now.
        self.log.warning("projection.tables_missing", position=self.position, action="replaying the log from 0")
        await conn.execute(drop_tables(self.projection.tables))
        await save_checkpoint(conn, self.projection.name, 0)
        self.position = 0

    async def stop(self, grace_s: float) -> None:
        """Let a batch in flight commit (up to ``grace_s``); anything else is cancelled at once.
        Cancelling mid-batch is safe too: the transaction rolls back and the session ends."""
        self.stopping = True
        if self.task is None:
            return
        if not self.in_batch:
            self.task.cancel()
        done, _ = await asyncio.wait({self.task}, timeout=grace_s)
        if not done:
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class ProjectorRunner:
    """Runs ``projections`` against ``store``: ``await start()``, later ``await stop()``."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        conninfo: str,
        store: EventStore,
        projections: Sequence[Projection],
        *,
        batch_size: int = 500,
        lock_retry_s: float = 1.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique, got {names}")
        self.pool = pool
        self.conninfo = conninfo
        self.store = store
        self.batch_size = batch_size
        self.lock_retry_s = lock_retry_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._workers = [_Worker(self, p) for p in projections]

    async def start(self) -> None:
        for worker in self._workers:
            if worker.task is None:
                worker.task = asyncio.create_task(worker.run(), name=f"projection-{worker.projection.name}")

    async def stop(self, grace_s: float = 10.0) -> None:
        await asyncio.gather(*(w.stop(grace_s) for w in self._workers))
        log.info("projections.stopped", projections=[w.projection.name for w in self._workers])

    def is_leading(self, name: str) -> bool:
        """Whether this instance is the active one for projection ``name``."""
        return any(w.leading for w in self._workers if w.projection.name == name)

    async def positions(self) -> dict[str, int]:
        """Every checkpoint in the database, by projection name."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT name, position FROM projection_checkpoints")
            return {name: int(position) for name, position in await cur.fetchall()}
