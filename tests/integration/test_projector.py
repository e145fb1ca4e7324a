"""The projector runtime and rebuild against real PostgreSQL.

The session database is shared by every test: streams get a unique prefix, test projections a
unique name and table, and positions are taken relative to the head.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import psycopg
import pytest

from domain.events import RecordedEvent
from infra.eventstore.postgres import PostgresEventStore
from infra.leader import LOCK_CLASS, lock_key
from projections.rebuild import Progress, rebuild
from projections.runtime import ProjectorRunner
from projections.streams import StreamCatalog
from tests.contract.test_eventstore import Noted, new


class NoteLog:
    """Test projection: one row per ``Noted`` event of its streams, with no key, so that an
    event applied twice shows as a duplicate. Can be told to fail or hang on a position."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.name = f"test_{prefix}"
        self.table = f"notes_{prefix}"
        self.tables = (self.table,)
        self.fail_once_at: set[int] = set()
        self.hang_at: set[int] = set()
        self.delay_s = 0.0
        self.failed = asyncio.Event()
        self.hanging = asyncio.Event()

    def schema(self, suffix: str = "") -> str:
        return f"CREATE TABLE IF NOT EXISTS {self.table}{suffix} (position bigint NOT NULL, stream_id text, n int)"

    async def handle(self, conn: psycopg.AsyncConnection, events: Sequence[RecordedEvent], suffix: str = "") -> None:
        rows = [
            (e.position, e.stream_id, e.event.n)
            for e in events
            if isinstance(e.event, Noted) and e.stream_id.startswith(self.prefix)
        ]
        if rows:
            async with conn.cursor() as cur:
                await cur.executemany(f"INSERT INTO {self.table}{suffix} VALUES (%s, %s, %s)", rows)
        await asyncio.sleep(self.delay_s)
        positions = {e.position for e in events}
        if self.fail_once_at & positions:
            self.fail_once_at -= positions
            self.failed.set()
            raise RuntimeError("handler failed on purpose")
        if self.hang_at & positions:
            self.hanging.set()
            await asyncio.Event().wait()


class PlannedNoteLog(NoteLog):
    """The same rows as statements (``runtime.Planned``): the runtime sends them in the batch's
    pipeline. A position in ``fail_once_at`` adds a statement PostgreSQL refuses."""

    def statements(self, events: Sequence[RecordedEvent], suffix: str = "") -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = [
            (f"INSERT INTO {self.table}{suffix} VALUES (%s, %s, %s)", (e.position, e.stream_id, e.event.n))
            for e in events
            if isinstance(e.event, Noted) and e.stream_id.startswith(self.prefix)
        ]
        if self.fail_once_at & {e.position for e in events}:
            self.fail_once_at -= {e.position for e in events}
            self.failed.set()
            out.append(("SELECT 1 / 0", None))
        return out


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(pool, migrated_url: str) -> AsyncIterator[PostgresEventStore]:
    s = PostgresEventStore(pool, migrated_url)
    yield s
    await s.close()


@pytest.fixture
async def runners(pool, migrated_url: str, store: PostgresEventStore) -> AsyncIterator[Callable[..., ProjectorRunner]]:
    made: list[ProjectorRunner] = []

    def make(*projections, **options) -> ProjectorRunner:
        options = {"lock_retry_s": 0.2, "retry_initial_s": 0.2, **options}
        runner = ProjectorRunner(
            pool=pool, conninfo=migrated_url, store=store, projections=list(projections), **options
        )
        made.append(runner)
        return runner

    yield make
    for runner in made:
        await runner.stop(grace_s=1)


async def start_at_head(pool, store: PostgresEventStore, projection: NoteLog) -> None:
    """Tables and checkpoint as if the projection had run up to the head (the session's log is
    long by now, and a checkpoint without its tables would make the runner start over)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(projection.schema())
        await conn.execute(
            "INSERT INTO projection_checkpoints (name, position) VALUES (%s, %s)", (projection.name, await store.head())
        )


async def checkpoint(pool, name: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT position FROM projection_checkpoints WHERE name = %s", (name,))
        row = await cur.fetchone()
        return row[0] if row else 0


async def positions_in(pool, table: str) -> list[int]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if not (await cur.fetchone())[0]:
            return []  # the runner has not created it yet
        cur = await conn.execute(f"SELECT position FROM {table} ORDER BY position")
        return [r[0] for r in await cur.fetchall()]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check.__qualname__}")
        await asyncio.sleep(0.05)


async def append_notes(store: PostgresEventStore, stream_prefix: str, count: int, streams: int = 3) -> list[int]:
    """``count`` single-event appends spread over ``streams`` streams; their positions."""
    results = [await store.append(f"{stream_prefix}-{i % streams}", [new(i)]) for i in range(count)]
    return [r.position for r in results]


async def has_rows(pool, projection: NoteLog, expected: list[int]) -> bool:
    return await positions_in(pool, projection.table) == expected


# -- the runner --------------------------------------------------------------------------------


async def test_catches_up_from_zero_then_follows_live(pool, store, runners) -> None:
    p = NoteLog(prefix())
    before = await append_notes(store, p.prefix, 30)
    await runners(p, batch_size=7).start()
    await eventually(lambda: has_rows(pool, p, before), timeout=30)
    after = await append_notes(store, p.prefix, 5)
    await eventually(lambda: has_rows(pool, p, before + after), timeout=5)
    await eventually(lambda: _at_least(checkpoint(pool, p.name), after[-1]))


async def _at_least(value: Awaitable[int], minimum: int) -> bool:
    return await value >= minimum


async def test_a_failed_batch_moves_neither_rows_nor_checkpoint_and_is_retried(pool, store, runners) -> None:
    p = NoteLog(prefix())
    await start_at_head(pool, store, p)
    positions = await append_notes(store, p.prefix, 20)
    p.fail_once_at = {positions[12]}
    await runners(p, batch_size=5, retry_initial_s=1.0).start()
    await asyncio.wait_for(p.failed.wait(), 10)
    await asyncio.sleep(0.3)  # the failed transaction has rolled back; the retry waits 1 s
    stopped_at = await checkpoint(pool, p.name)
    assert stopped_at < positions[12]
    assert await positions_in(pool, p.table) == [x for x in positions if x <= stopped_at]
    await eventually(lambda: has_rows(pool, p, positions))
    assert await checkpoint(pool, p.name) == positions[-1]


async def test_a_statement_refused_in_a_pipelined_batch_rolls_back_every_projection_of_it(pool, store, runners) -> None:
    a, b = PlannedNoteLog(prefix()), PlannedNoteLog(prefix())
    b.prefix = a.prefix  # both record the same streams, in one runner, one transaction a batch
    await start_at_head(pool, store, a)
    await start_at_head(pool, store, b)
    positions = await append_notes(store, a.prefix, 20)
    b.fail_once_at = {positions[12]}  # b's statements come after a's: a's rows were written first
    await runners(a, b, batch_size=5, retry_initial_s=1.0).start()
    await asyncio.wait_for(b.failed.wait(), 10)
    await asyncio.sleep(0.3)  # the refused batch has rolled back; the retry waits 1 s
    for p in (a, b):
        stopped_at = await checkpoint(pool, p.name)
        assert stopped_at < positions[12]
        assert await positions_in(pool, p.table) == [x for x in positions if x <= stopped_at]
    for p in (a, b):
        await eventually(lambda p=p: has_rows(pool, p, positions))
        assert await checkpoint(pool, p.name) == positions[-1]


async def test_a_stopped_runner_resumes_exactly_where_it_stopped(pool, store, runners) -> None:
    p = NoteLog(prefix())
    await start_at_head(pool, store, p)
    positions = await append_notes(store, p.prefix, 60)
    p.delay_s = 0.05
    first = runners(p, batch_size=5)
    await first.start()
    await eventually(lambda: _at_least(checkpoint(pool, p.name), positions[20]))
    await first.stop()
    stopped_at = await checkpoint(pool, p.name)
    assert stopped_at < positions[-1], "stopped too late to test resuming"
    assert await positions_in(pool, p.table) == [x for x in positions if x <= stopped_at]
    await runners(NoteLog(p.prefix), batch_size=5).start()
    await eventually(lambda: has_rows(pool, p, positions))


async def test_a_runner_killed_inside_a_batch_loses_nothing_and_repeats_nothing(pool, store, runners) -> None:
    p = NoteLog(prefix())
    await start_at_head(pool, store, p)
    positions = await append_notes(store, p.prefix, 30)
    p.hang_at = {positions[17]}
    first = runners(p, batch_size=5)
    await first.start()
    await asyncio.wait_for(p.hanging.wait(), 10)  # rows of that batch written, not committed
    await first.stop(grace_s=0.2)  # cancelled in the middle of the transaction
    stopped_at = await checkpoint(pool, p.name)
    assert stopped_at < positions[17]
    assert await positions_in(pool, p.table) == [x for x in positions if x <= stopped_at]
    await runners(NoteLog(p.prefix), batch_size=5).start()
    await eventually(lambda: has_rows(pool, p, positions))


async def test_only_one_runner_leads_and_another_takes_over_when_it_stops(pool, store, runners) -> None:
    p = NoteLog(prefix())
    await start_at_head(pool, store, p)
    a, b = runners(p), runners(NoteLog(p.prefix))
    await a.start()
    await eventually(lambda: _true(a.is_leading(p.name)))
    await b.start()
    await asyncio.sleep(0.6)  # three of b's lock attempts
    assert not b.is_leading(p.name)
    first = await append_notes(store, p.prefix, 10)
    await eventually(lambda: has_rows(pool, p, first))
    await a.stop()
    await eventually(lambda: _true(b.is_leading(p.name)), timeout=5)
    second = await append_notes(store, p.prefix, 10)
    await eventually(lambda: has_rows(pool, p, first + second))


async def _true(value: bool) -> bool:
    return value


async def test_a_follower_takes_over_when_the_leaders_connection_dies(pool, store, runners) -> None:
    p = NoteLog(prefix())
    await start_at_head(pool, store, p)
    a = runners(p, retry_initial_s=5.0)  # slow to come back, so that b is the one to take over
    b = runners(NoteLog(p.prefix))
    await a.start()
    await eventually(lambda: _true(a.is_leading(p.name)))
    await b.start()
    first = await append_notes(store, p.prefix, 5)
    await eventually(lambda: has_rows(pool, p, first))
    async with pool.connection() as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = %s AND objid = %s AND objsubid = 2",
            (LOCK_CLASS, lock_key(p.name)),
        )
    await eventually(lambda: _true(b.is_leading(p.name)), timeout=5)
    second = await append_notes(store, p.prefix, 5)
    await eventually(lambda: has_rows(pool, p, first + second))


async def test_one_runner_leads_every_projection_and_a_standby_takes_all_when_it_stops(pool, store, runners) -> None:
    """``serve --workers 2``: one process leads every read model (one batch per batch of the log,
    not one per process), the other stands by; whatever the leader led is taken over at once."""
    names = [prefix() for _ in range(4)]
    mine = [NoteLog(n) for n in names]
    for p in mine:
        await start_at_head(pool, store, p)
    a, b = runners(*mine), runners(*[NoteLog(n) for n in names])
    await a.start()
    await eventually(lambda: _true(all(a.is_leading(p.name) for p in mine)))
    await b.start()
    first = [await append_notes(store, p.prefix, 2, streams=1) for p in mine]
    await asyncio.sleep(0.3)  # past b's lock_retry_s: it has looked again, between batches too
    second = [await append_notes(store, p.prefix, 2, streams=1) for p in mine]
    for p, f, s in zip(mine, first, second, strict=True):
        await eventually(lambda p=p, rows=f + s: has_rows(pool, p, rows))
    assert all(a.is_leading(p.name) for p in mine) and not any(b.is_leading(p.name) for p in mine)
    await a.stop()  # and no event comes: b must not wait for one to take over
    await eventually(lambda: _true(all(b.is_leading(p.name) for p in mine)), timeout=5)
    third = [await append_notes(store, p.prefix, 2, streams=1) for p in mine]
    for p, f, s, t in zip(mine, first, second, third, strict=True):
        await eventually(lambda p=p, rows=f + s + t: has_rows(pool, p, rows))


# -- several projections in one runner -------------------------------------------------------------


async def test_projections_of_one_runner_each_get_the_events_past_their_own_checkpoint(pool, store, runners) -> None:
    a, b = NoteLog(prefix()), NoteLog(prefix())
    b.prefix = a.prefix  # both record the same streams
    await start_at_head(pool, store, a)
    early = await append_notes(store, a.prefix, 6)
    await start_at_head(pool, store, b)  # b starts later on the log: it never sees the first six
    late = await append_notes(store, a.prefix, 6)
    await runners(a, b, batch_size=4).start()
    await eventually(lambda: has_rows(pool, a, early + late))
    await eventually(lambda: has_rows(pool, b, late))
    await eventually(lambda: _at_least(checkpoint(pool, b.name), late[-1]))
    assert await checkpoint(pool, a.name) == await checkpoint(pool, b.name)


async def two_in_name_order(pool, store) -> tuple[NoteLog, NoteLog]:
    a, b = sorted((NoteLog(prefix()), NoteLog(prefix())), key=lambda p: p.name)
    for p in (a, b):
        await start_at_head(pool, store, p)
    return a, b


@contextlib.asynccontextmanager
async def led_elsewhere(pool, name: str) -> AsyncIterator[None]:
    """Another session holds ``name``'s leader lock while inside."""
    async with await psycopg.AsyncConnection.connect(pool.conninfo, autocommit=True) as other:
        await other.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, lock_key(name)))
        yield


async def test_a_runner_stands_by_while_the_first_projection_is_led_elsewhere(pool, store, runners) -> None:
    """Whoever leads the first (in name order) leads them all: no split of the others meanwhile."""
    a, b = await two_in_name_order(pool, store)
    async with led_elsewhere(pool, a.name):
        runner = runners(a, b)
        await runner.start()
        notes_b = await append_notes(store, b.prefix, 3)
        await asyncio.sleep(0.5)  # more than two lock_retry_s
        assert not runner.is_leading(b.name) and await positions_in(pool, b.table) == []
    await eventually(lambda: _true(runner.is_leading(a.name) and runner.is_leading(b.name)))
    await eventually(lambda: has_rows(pool, b, notes_b))


async def test_a_runner_takes_the_lead_it_lacked_once_it_is_free_and_catches_it_up(pool, store, runners) -> None:
    a, b = await two_in_name_order(pool, store)
    async with led_elsewhere(pool, b.name):  # a runner of an older version, which shared them out
        runner = runners(a, b)
        await runner.start()
        await eventually(lambda: _true(runner.is_leading(a.name)))
        first_a, first_b = await append_notes(store, a.prefix, 5), await append_notes(store, b.prefix, 5)
        await eventually(lambda: has_rows(pool, a, first_a))
        assert not runner.is_leading(b.name) and await positions_in(pool, b.table) == []
    # The other leader is gone; with the next events (after lock_retry_s) this runner takes b too.
    await asyncio.sleep(0.3)
    more_a = await append_notes(store, a.prefix, 3)
    await eventually(lambda: _true(runner.is_leading(b.name)))
    await append_notes(store, a.prefix, 1)  # what wakes it, if the lead came after the last batch
    await eventually(lambda: has_rows(pool, b, first_b))

    async def a_has_more() -> bool:  # a runner that re-elects while idle may take b before a's batch
        return (await positions_in(pool, a.table))[: len(first_a + more_a)] == first_a + more_a

    await eventually(a_has_more)


async def test_a_dropped_read_model_is_replayed_from_the_start(pool, store, runners) -> None:
    p = NoteLog(prefix())
    positions = await append_notes(store, p.prefix, 8)
    first = runners(p)
    await first.start()
    await eventually(lambda: has_rows(pool, p, positions), timeout=30)
    await first.stop()
    async with pool.connection() as conn:
        await conn.execute(f"DROP TABLE {p.table}")
    await runners(NoteLog(p.prefix)).start()
    await eventually(lambda: has_rows(pool, p, positions), timeout=30)


# -- rebuild -----------------------------------------------------------------------------------


async def test_rebuild_without_live_tables_builds_them_and_the_runner_goes_on(
    pool, store, runners, migrated_url
) -> None:
    p = NoteLog(prefix())
    before = await append_notes(store, p.prefix, 7)
    result = await rebuild(migrated_url, store, p, verify=True)
    assert result.swapped and not result.had_live and result.diffs == []
    assert await positions_in(pool, p.table) == before
    assert await checkpoint(pool, p.name) == result.position >= before[-1]
    await runners(NoteLog(p.prefix)).start()
    after = await append_notes(store, p.prefix, 3)
    await eventually(lambda: has_rows(pool, p, before + after))


async def catalog_rows(pool, stream_prefix: str, table: str = "streams") -> list[tuple]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT stream_id, category, version, first_position, last_position, event_count FROM {table}"
            " WHERE category = %s ORDER BY stream_id",
            (stream_prefix,),
        )
        return list(await cur.fetchall())


async def expected_catalog(store: PostgresEventStore, stream_prefix: str) -> list[tuple]:
    rows: dict[str, list] = {}
    async for e in store.read_all(0):
        if e.stream_id.startswith(stream_prefix + "-"):
            row = rows.setdefault(e.stream_id, [e.stream_id, stream_prefix, 0, e.position, 0, 0])
            row[2], row[4], row[5] = e.version, e.position, row[5] + 1
    return [tuple(r) for _, r in sorted(rows.items())]


async def live_catalog_caught_up(pool, store, runners) -> ProjectorRunner:
    runner = runners(StreamCatalog(), batch_size=1000)
    await runner.start()
    head = await store.head()
    await eventually(lambda: _at_least(checkpoint(pool, "streams"), head), timeout=60)
    return runner


async def test_rebuild_with_verify_equals_live_and_swaps(pool, store, runners, migrated_url) -> None:
    s = prefix()
    await append_notes(store, s, 12, streams=4)
    await live_catalog_caught_up(pool, store, runners)
    seen: list[Progress] = []
    result = await rebuild(migrated_url, store, StreamCatalog(), verify=True, progress=seen.append, page_size=500)
    assert result.had_live and result.identical and result.swapped
    assert [d.table for d in result.diffs] == ["streams"] and result.diffs[0].live_rows > 0
    assert seen and seen[-1].done == result.events > 0
    assert await catalog_rows(pool, s) == await expected_catalog(store, s)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'streams%%' ORDER BY relname")
        assert [r[0] for r in await cur.fetchall()] == ["streams", "streams_category_idx", "streams_pkey"]


async def test_verify_reports_a_corrupted_live_row_and_refuses_to_swap(pool, store, runners, migrated_url) -> None:
    s = prefix()
    await append_notes(store, s, 6, streams=2)
    runner = await live_catalog_caught_up(pool, store, runners)
    await runner.stop()
    async with pool.connection() as conn:
        await conn.execute("UPDATE streams SET event_count = 99 WHERE stream_id = %s", (f"{s}-0",))
    result = await rebuild(migrated_url, store, StreamCatalog(), verify=True)
    assert not result.swapped and not result.identical
    (diff,) = result.diffs
    assert (diff.only_live, diff.only_rebuilt) == (1, 1)
    assert diff.live_samples[0][0] == diff.rebuilt_samples[0][0] == f"{s}-0"
    assert diff.live_samples[0][diff.columns.index("event_count")] == 99
    assert (await catalog_rows(pool, s))[0][5] == 99, "the live table must be left alone"
    assert await catalog_rows(pool, s, "streams__rebuild") == await expected_catalog(store, s)
    repaired = await rebuild(migrated_url, store, StreamCatalog(), verify=False)
    assert repaired.swapped
    assert await catalog_rows(pool, s) == await expected_catalog(store, s)


async def test_rebuild_while_the_live_runner_keeps_running_under_appends(
    pool, store, runners, migrated_url, monkeypatch
) -> None:
    # Phase 1 (replay without locks) must chase a moving checkpoint, not leave it all to phase 2.
    monkeypatch.setattr("projections.rebuild.CLOSE_ENOUGH", 20)
    s = prefix()
    for i in range(20):
        await store.append(f"{s}-{i % 10}", [new(n) for n in range(100)])
    await live_catalog_caught_up(pool, store, runners)
    started_at = await checkpoint(pool, "streams")
    done = asyncio.Event()

    async def keep_appending() -> None:
        rng = random.Random(7)
        while not done.is_set():
            await store.append(f"{s}-{rng.randrange(10)}", [new(1), new(2)][: rng.randint(1, 2)])
            await asyncio.sleep(0.002)

    appender = asyncio.create_task(keep_appending())
    try:
        result = await rebuild(migrated_url, store, StreamCatalog(), verify=True, page_size=100)
        await asyncio.sleep(0.3)  # the live runner writes into the swapped-in table
    finally:
        done.set()
        await appender
    assert result.identical and result.swapped
    assert result.position > started_at, "the live runner was not running during the rebuild"
    head = await store.head()
    await eventually(lambda: _at_least(checkpoint(pool, "streams"), head))
    assert await catalog_rows(pool, s) == await expected_catalog(store, s)
    again = await rebuild(migrated_url, store, StreamCatalog(), verify=True)
    assert again.identical and again.swapped


async def test_a_leader_refreshes_the_statistics_of_tables_its_projections_grew(pool, store, runners) -> None:
    """PostgreSQL's autovacuum samples a table a minute apart at best, and the projector keeps its
    plans until the statistics change: a leader looks for itself, between batches."""
    p = NoteLog(prefix())
    await start_at_head(pool, store, p)
    runner = runners(p)
    await runner.start()
    first = await append_notes(store, p.prefix, 1)
    await eventually(lambda: has_rows(pool, p, first))  # its table exists
    async with pool.connection() as conn:  # so that only the leader can be what analyzes it
        await conn.execute(f"ALTER TABLE {p.table} SET (autovacuum_enabled = false)")
    notes = first + await append_notes(store, p.prefix, 600, streams=3)
    await eventually(lambda: has_rows(pool, p, notes))

    async def analyzed() -> bool:
        await append_notes(store, p.prefix, 1, streams=1)  # a batch boundary, where it looks
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables"
                " WHERE relname = %s AND last_analyze IS NOT NULL",
                (p.table,),
            )
            row = await cur.fetchone()
        return row is not None and row[1] < 500

    await eventually(analyzed, timeout=15)
