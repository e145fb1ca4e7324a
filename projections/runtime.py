"""The projector runtime: named projections follow the log and keep their tables current.

Each projection is *active* in only one process at a time: its leader holds a session-level
advisory lock keyed by the projection's name (``infra/leader.py``), on a connection of its own.
Runners of the same projections do not share them out: the runner holding the first of them
(in name order) leads them all, and the others stand by. Every ``lock_retry_s`` (between batches, or while it leads
none) a runner looks again: a standby for the first, the leader for any it lacks. When the leader
dies its session ends, its locks are released and a standby takes over. One leader, because every
leader pays for each batch: a read of the log, two round trips, a commit, and notifications that
wake every process. Measured with ``serve --workers 2`` (two leaders of half each, as this was
before, against one): at 200 posts/s with 1,000 sockets the server used 79-84% of a core instead
of 92-97% and post -> frame p50 was 8.5-14.4 ms instead of 16.6-19.0; 32 closed-loop posters got
1,427-1,585 posts/s instead of 1,259-1,343; replaying 132k events went no slower (6,543 and 6,546
events/s against 6,103 and 6,341: PostgreSQL, not the runner, is the limit there). The leader
also keeps its tables' planner statistics fresh (``analyze_stale``), since its plans are made once
per connection and kept until those change.

The projections a runner leads share ONE subscription, ``store.subscribe(after=the lowest of their
checkpoints)``, and ONE transaction per batch: the new checkpoints, then each projection's rows for
the events past its own checkpoint, then a notification each (``"{name} {position}"``; the
checkpoints' SQL and channel are ``projections/checkpoints.py``'s), sent in one pipeline. So a
batch costs one read, two round trips and one commit however many read models there are, and it is
written on the connection that holds the locks (a leader that lost its connection has lost its
locks and cannot write either). The transaction starts by moving the checkpoint rows, which locks
them, on the condition that they still hold the positions the runner resumed from. That row lock is
also how a rebuild pauses the live projector (see ``projections/rebuild.py``), and the check fences
off any other writer of a checkpoint: the runner re-reads them and resumes from there. A projection
whose batch fails holds up the others of its runner until it passes (retried with a backoff, logged
with every position).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import psycopg
import structlog
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from domain.events import RecordedEvent
from infra.aio import cancel_and_wait
from infra.db import Statement
from infra.eventstore.port import EventStore
from infra.leader import Backoff, try_lead
from projections import checkpoints
from projections.checkpoints import lock_checkpoint, save_checkpoint

log = structlog.get_logger(__name__)

ANALYZE_EVERY_S = 5.0
"""How often, at most, a leader looks for tables of its projections with stale statistics."""
T = TypeVar("T")


class Projection(Protocol):
    """A read model kept by the runtime. ``handle`` must ignore event types it does not know
    (``UnknownEvent`` included) and write only to its own ``tables`` (suffixed by ``suffix``)."""

    name: str
    tables: Sequence[str]

    def schema(self, suffix: str = "") -> str:
        """CREATE TABLE/INDEX IF NOT EXISTS statements for ``tables``, each name + ``suffix``."""
        ...

    async def handle(self, conn: psycopg.AsyncConnection, events: Sequence[RecordedEvent], suffix: str = "") -> None:
        """Write the rows for ``events``, in the caller's transaction."""
        ...


@runtime_checkable
class Planned(Protocol):
    """A projection whose writes for a batch are statements that need no answer: it can say them
    without running them, and the runtime sends them with the batch's checkpoints and commit in
    one pipeline (see ``apply_batch``). ``statements`` is what ``handle`` runs; None when this
    batch needs ``handle`` itself (a search index outside PostgreSQL)."""

    def statements(self, events: Sequence[RecordedEvent], suffix: str = "") -> Sequence[Statement] | None: ...


class CheckpointMoved(Exception):
    """Someone else (a rebuild that swapped in fresh tables) moved the checkpoint."""

    def __init__(self, position: int) -> None:
        super().__init__(f"checkpoint moved to {position}")
        self.position = position


async def apply_batch(
    conn: psycopg.AsyncConnection,
    projections: Mapping[str, Projection],
    batch: Sequence[RecordedEvent],
    positions: Mapping[str, int],
) -> dict[str, int]:
    """Rows and checkpoints of every projection in ONE transaction: all of the batch takes
    effect, or none of it. A projection gets the events past its own checkpoint (after a
    rebuild moved it, it may be ahead of the others). Checkpoints first: the UPDATE takes their
    row locks, which a rebuild holds while it swaps tables in.

    ``conn`` is in autocommit mode, and the transaction is sent as statements in one pipeline:
    BEGIN, the checkpoints, every ``Planned`` projection's statements, the checkpoints'
    notifications, then (once the checkpoint rows came back, all of them still where this runner
    left them) COMMIT. Two round trips a batch, where a round trip per statement kept a small
    batch's projector, and the posts waiting for its seq, waiting on PostgreSQL's and this
    process's turns on a busy machine.
    A projection that is not ``Planned`` runs ``handle`` in its turn, in the same transaction."""
    names = list(projections)
    targets = {name: max(positions[name], batch[-1].position) for name in names}  # never backwards
    try:
        async with conn.pipeline(), conn.cursor() as saving, conn.cursor() as cur:
            await cur.execute("BEGIN")
            params = checkpoints.batch_params(names, [positions[n] for n in names], [targets[n] for n in names])
            await saving.execute(checkpoints.SAVE_ALL, params)
            for name, projection in projections.items():
                events = [e for e in batch if e.position > positions[name]]
                if not events:
                    continue
                statements = projection.statements(events) if isinstance(projection, Planned) else None
                if statements is None:
                    await projection.handle(conn, events)
                    continue
                for statement, values in statements:
                    await cur.execute(statement, values)
            await cur.execute(checkpoints.TELL, params)
            if len(await saving.fetchall()) != len(names):
                raise CheckpointMoved(min(positions.values()))
            await cur.execute("COMMIT")
    except Exception:
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.execute("ROLLBACK")
        raise
    return targets


# Tables changed by more than 50 rows and a tenth since PostgreSQL last sampled them: autovacuum's
# own rule, which it applies on its own schedule (a minute apart at best). The projector's plans
# are made once per connection and kept until the statistics change, so plans made on statistics
# from the first seconds of a fast-growing workspace stayed: after bench.realtime's 10,000-member
# set-up the notifications statement took 1.48 ms a post, 0.13 ms after an ANALYZE, 0.17 ms with
# this keeping them fresh.
_STALE = """SELECT relname FROM pg_stat_user_tables
            WHERE relname = ANY(%s) AND n_mod_since_analyze > 50 + 0.1 * n_live_tup"""


async def analyze_stale(pool: AsyncConnectionPool, tables: Sequence[str]) -> list[str]:
    """ANALYZE those of ``tables`` that changed a lot since their statistics were taken; which."""
    async with pool.connection() as conn:
        cur = await conn.execute(_STALE, (list(tables),))
        stale = [row[0] for row in await cur.fetchall()]
        for table in stale:
            await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return stale


async def tables_exist(conn: psycopg.AsyncConnection, tables: Sequence[str]) -> bool:
    cur = await conn.execute(
        "SELECT coalesce(bool_and(to_regclass(t) IS NOT NULL), true) FROM unnest(%s::text[]) AS t", (list(tables),)
    )
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


class _Group:
    """The projections of one runner: take the lead of all of them (or stand by), then follow the
    log for all of them with one subscription, each batch in one transaction."""

    def __init__(self, runner: ProjectorRunner, projections: Sequence[Projection]) -> None:
        self.runner = runner
        self.projections = {p.name: p for p in projections}
        self.log = log.bind(projections=list(self.projections))
        self.backoff = Backoff(runner.retry_initial_s, runner.retry_max_s)
        self.leading: dict[str, Projection] = {}
        self.first = min(self.projections)
        """Whoever leads this one leads them all."""
        self.positions: dict[str, int] = {}
        self.in_batch = False
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.analyzing: asyncio.Task[None] | None = None
        self.analyze_at = 0.0

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self._session()
            except Exception as exc:  # noqa: BLE001 - see below
                # The connection (and with it every lead) is gone: connect again and re-elect.
                delay = self.backoff.next()
                self.log.warning("projection.connection_lost", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
            finally:
                self.leading = {}

    async def _session(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.runner.conninfo, autocommit=True) as conn:
            # Read models can always be rebuilt from the log, and a crash can only lose the last
            # batches together with their checkpoints: no need to wait for each commit's fsync.
            await conn.execute("SET synchronous_commit = off")
            # The batch statements take their rows as one JSON parameter, so no value changes their
            # best plan; PostgreSQL's plan cache still chose to plan some of them at every call (the
            # notifications one: 0.8 ms of planning for 0.2 ms of work, per batch).
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            while not self.stopping:
                await self._elect(conn)
                try:
                    await self._follow(conn)
                except CheckpointMoved as moved:
                    self.log.info("projection.checkpoint_moved", position=moved.position)
                except psycopg.OperationalError:
                    raise
                except Exception:
                    delay = self.backoff.next()
                    self.log.exception("projection.batch_failed", positions=self.positions, retry_in_s=delay)
                    await asyncio.sleep(delay)

    async def _lead(self, conn: psycopg.AsyncConnection, name: str) -> bool:
        if await try_lead(conn, name):
            self.leading[name] = self.projections[name]
            self.log.info("projection.leading", projection=name)
        return name in self.leading

    async def _elect(self, conn: psycopg.AsyncConnection) -> None:
        """Take the lead of the first projection, then of every other one that is free; stand by
        while another runner holds the first."""
        while not self.stopping:
            if self.first in self.leading or await self._lead(conn, self.first):
                for name in sorted(self.projections.keys() - self.leading.keys()):
                    await self._lead(conn, name)
                return
            await asyncio.sleep(self.runner.lock_retry_s)

    def _lacks_some(self) -> bool:
        """Whether to elect again at a batch boundary: some lead is still elsewhere (a runner of
        an older version, which shared them out, may hold one)."""
        return len(self.leading) < len(self.projections)

    async def _follow(self, conn: psycopg.AsyncConnection) -> None:
        """Follow the log until asked to stop or, every ``lock_retry_s`` (between batches, or while
        no batch comes), until ``_lacks_some`` says to try for the leads it lacks (freed ones must
        not wait for the next event)."""
        self.positions = await self._prepare(conn)
        self.log.info("projection.following", positions=self.positions)
        loop = asyncio.get_running_loop()
        retry_at = loop.time() + self.runner.lock_retry_s
        batches = self.runner.store.subscribe(after=min(self.positions.values()), batch_size=self.runner.batch_size)
        pending: asyncio.Task[Sequence[RecordedEvent]] | None = None
        async with _closing(batches):
            try:
                while not self.stopping:
                    pending = pending or asyncio.ensure_future(anext(batches))
                    try:
                        async with asyncio.timeout(max(0.0, retry_at - loop.time())):
                            batch = await asyncio.shield(pending)
                    except TimeoutError:  # no batch for a while: the connection is idle, look now
                        if self._lacks_some():
                            return
                        retry_at = loop.time() + self.runner.lock_retry_s
                        continue
                    pending = None
                    self.in_batch = True
                    try:
                        self.positions = await apply_batch(conn, self.leading, batch, self.positions)
                    finally:
                        self.in_batch = False
                    self.backoff.reset()
                    self._keep_statistics(loop)
                    self.log.debug("projection.batch_applied", position=batch[-1].position, events=len(batch))
                    if not self.stopping and loop.time() >= retry_at:
                        if self._lacks_some():
                            return
                        retry_at = loop.time() + self.runner.lock_retry_s
            finally:
                if pending is not None:  # the subscription is closed next: nothing may be reading it
                    await cancel_and_wait([pending])

    def _keep_statistics(self, loop: asyncio.AbstractEventLoop) -> None:
        """Between batches, every ``ANALYZE_EVERY_S`` at most: fresh statistics for the led tables
        that changed a lot (``analyze_stale``), on a pool connection, not holding up the next batch."""
        if loop.time() < self.analyze_at or (self.analyzing is not None and not self.analyzing.done()):
            return
        self.analyze_at = loop.time() + ANALYZE_EVERY_S
        tables = [table for projection in self.leading.values() for table in projection.tables]
        self.analyzing = asyncio.create_task(self._analyze(tables), name="projections-analyze")

    async def _analyze(self, tables: Sequence[str]) -> None:
        try:
            analyzed = await analyze_stale(self.runner.pool, tables)
        except Exception as exc:  # noqa: BLE001 - autovacuum does it later anyway
            self.log.warning("projection.analyze_failed", error=str(exc), tables=list(tables))
            return
        if analyzed:
            self.log.info("projection.analyzed", tables=analyzed)

    async def _prepare(self, conn: psycopg.AsyncConnection) -> dict[str, int]:
        # Under the checkpoint row locks, so that a rebuild swapping tables is not raced.
        positions = {}
        async with conn.transaction():
            for name, projection in self.leading.items():
                positions[name] = await lock_checkpoint(conn, name)
                if positions[name] and not await tables_exist(conn, projection.tables):
                    positions[name] = await self._start_over(conn, projection)
                await conn.execute(projection.schema())
        return positions

    async def _start_over(self, conn: psycopg.AsyncConnection, projection: Projection) -> int:
        # Someone dropped the read model (all or part of it): its checkpoint means nothing now.
        self.log.warning("projection.tables_missing", projection=projection.name, action="replaying the log from 0")
        await conn.execute(drop_tables(projection.tables))
        await save_checkpoint(conn, projection.name, 0)
        return 0

    async def stop(self, grace_s: float) -> None:
        """Let a batch in flight commit (up to ``grace_s``); anything else is cancelled at once.
        Cancelling mid-batch is safe too: the transaction rolls back and the session ends."""
        self.stopping = True
        if self.analyzing is not None:
            await cancel_and_wait([self.analyzing])
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
        self._group = _Group(self, projections)

    async def start(self) -> None:
        if self._group.task is None and self._group.projections:
            self._group.task = asyncio.create_task(self._group.run(), name="projections")

    async def stop(self, grace_s: float = 10.0) -> None:
        await self._group.stop(grace_s)
        log.info("projections.stopped", projections=list(self._group.projections))

    def is_leading(self, name: str) -> bool:
        """Whether this instance is the active one for projection ``name``."""
        return name in self._group.leading

    async def positions(self) -> dict[str, int]:
        """Every checkpoint in the database, by projection name."""
        return await checkpoints.read_checkpoints(self.pool)
