"""PostgreSQL-specific log guarantees: the concurrent-commit hazard of sequences, and groups
in one ``events_append`` call."""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref

import psycopg
from psycopg.types.json import Jsonb

from infra.eventstore import NO_STREAM, WrongExpectedVersion
from infra.eventstore.port import StreamAppend
from infra.eventstore.postgres import PostgresEventStore
from tests.contract.test_eventstore import new, stream, take

RAW_INSERT = """
    INSERT INTO events (stream_id, version, event_id, type, data)
    VALUES (%s, 1, %s, 'test.noted', '{"type": "test.noted", "n": 0}') RETURNING position"""


async def test_an_open_transaction_holding_a_lower_position_is_never_skipped(pool, migrated_url: str) -> None:
    store = PostgresEventStore(pool, migrated_url)
    start = await store.head()
    reader = asyncio.create_task(take(store, start, 2))
    async with await psycopg.AsyncConnection.connect(migrated_url) as slow:
        # A writer that is not ours draws a position and stalls before committing.
        cur = await slow.execute(RAW_INSERT, (stream(), uuid.uuid4()))
        (low,) = await cur.fetchone()
        later = asyncio.create_task(store.append(stream(), [new(1)]))
        await asyncio.sleep(0.3)
        assert not later.done(), "a higher position must wait for the open lower one"
        assert not reader.done()
        await slow.commit()
    high = (await later).position
    seen = await reader
    assert [e.position for e in seen] == [low, high]
    assert low < high
    await store.close()


async def test_the_log_refuses_updates_deletes_and_truncates(migrated_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_url, autocommit=True) as conn:
        for sql in ("UPDATE events SET type = 'x'", "DELETE FROM events", "TRUNCATE events"):
            try:
                await conn.execute(sql)
            except psycopg.errors.RaiseException as exc:
                assert "append-only" in str(exc)
            else:
                raise AssertionError(f"{sql} was allowed")


async def test_a_failing_group_leaves_its_streams_untouched_while_its_batch_neighbours_land(
    pool, migrated_url: str
) -> None:
    store = PostgresEventStore(pool, migrated_url)
    first, taken, singles = stream(), stream(), [stream() for _ in range(4)]
    await store.append(taken, [new(0)], NO_STREAM)
    calls: list[list[str]] = []
    take_batch = store._take_batch

    def recording_take_batch():  # which streams went into each events_append call
        batch = take_batch()
        calls.append([s for request in batch for s in request.streams])
        return batch

    store._take_batch = recording_take_batch  # type: ignore[method-assign]
    group = [StreamAppend(first, [new(1), new(2)], NO_STREAM), StreamAppend(taken, [new(3)], NO_STREAM)]
    results = await asyncio.gather(
        *(store.append(s, [new(4)], NO_STREAM) for s in singles[:2]),
        store.append_many(group),
        *(store.append(s, [new(5)], NO_STREAM) for s in singles[2:]),
        return_exceptions=True,
    )

    assert [sorted(c) for c in calls] == [sorted([*singles, first, taken])], "not one call: the test proves nothing"
    assert isinstance(results[2], WrongExpectedVersion) and results[2].stream_id == taken
    assert [getattr(r, "version", r) for i, r in enumerate(results) if i != 2] == [1, 1, 1, 1]
    assert await store.read_stream(first) == []
    assert [len(await store.read_stream(s)) for s in [taken, *singles]] == [1, 1, 1, 1, 1]
    await store.close()


async def test_events_append_judges_each_group_whole(migrated_url: str) -> None:
    """The SQL function alone: groups, and an entry without "g" (a writer from before 0003)."""
    a, b, c, d = (stream() for _ in range(4))

    def entry(s: str, x: int | None, g: int | None) -> dict:
        event = {"i": str(uuid.uuid4()), "t": "test.noted", "d": {"type": "test.noted", "n": 1}, "m": {}}
        return {"s": s, "x": x, **({} if g is None else {"g": g}), "e": [event]}

    batch = [entry(a, 0, 0), entry(b, 0, 1), entry(c, 7, 1), entry(d, None, None)]
    async with await psycopg.AsyncConnection.connect(migrated_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT idx, current, known, last_position IS NOT NULL, group_ok FROM events_append(%s::jsonb)",
            (Jsonb(batch),),
        )
        rows = await cur.fetchall()
        cur = await conn.execute("SELECT stream_id FROM events WHERE stream_id = ANY(%s)", ([a, b, c, d],))
        landed = {r[0] for r in await cur.fetchall()}
    assert rows == [(0, 0, 0, True, True), (1, 0, 0, False, False), (2, 0, 0, False, False), (3, 0, 0, True, True)]
    assert landed == {a, d}


async def test_a_batch_the_server_refuses_is_retried_append_by_append(pool, migrated_url: str) -> None:
    # A trigger stands in for any reason the server may refuse one append of a shared call.
    store = PostgresEventStore(pool, migrated_url)
    async with await psycopg.AsyncConnection.connect(migrated_url, autocommit=True) as conn:
        await conn.execute("""
            CREATE FUNCTION test_refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.data->>'text' = 'poison' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
            CREATE TRIGGER test_refuse_poison BEFORE INSERT ON events FOR EACH ROW
                EXECUTE FUNCTION test_refuse_poison();""")
        try:
            innocent = [asyncio.create_task(store.append(stream(), [new(i)])) for i in range(5)]
            poison = asyncio.create_task(store.append(stream(), [new(9, "poison")]))
            more = [asyncio.create_task(store.append(stream(), [new(i)])) for i in range(5)]
            results = await asyncio.gather(*innocent, poison, *more, return_exceptions=True)
        finally:
            await conn.execute("DROP TRIGGER test_refuse_poison ON events; DROP FUNCTION test_refuse_poison()")
    assert isinstance(results[5], psycopg.errors.RaiseException)
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 5)
    await store.close()


async def test_an_acknowledged_append_is_flushed_to_the_wal(pool, migrated_url: str) -> None:
    # The test server commits asynchronously by default (synchronous_commit=off): only the
    # store's own durable flush can move the flush position past each append before it answers.
    store = PostgresEventStore(pool, migrated_url)
    async with await psycopg.AsyncConnection.connect(migrated_url, autocommit=True) as conn:
        for i in range(20):
            cur = await conn.execute("SELECT pg_current_wal_insert_lsn()")
            (before,) = await cur.fetchone()
            await store.append(stream(), [new(i)])
            cur = await conn.execute("SELECT pg_current_wal_flush_lsn() > %s::pg_lsn", (before,))
            assert (await cur.fetchone())[0], f"append {i} was answered before its commit was flushed"
    await store.close()


async def test_a_connection_lost_mid_append_says_the_outcome_is_unknown(pool, migrated_url: str) -> None:
    from infra.eventstore.port import AppendOutcomeUnknown

    store = PostgresEventStore(pool, migrated_url)
    await store.append(stream(), [new(0)])  # the writer is connected
    async with await psycopg.AsyncConnection.connect(migrated_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_advisory_lock(7243011)")  # hold appends on the server side
        pending = asyncio.create_task(store.append(stream(), [new(1)]))
        await asyncio.sleep(0.3)
        await admin.execute("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                               WHERE query LIKE '%%events_append%%' AND pid <> pg_backend_pid()""")
        await admin.execute("SELECT pg_advisory_unlock(7243011)")
    try:
        await asyncio.wait_for(pending, 5)
    except AppendOutcomeUnknown:
        pass
    else:
        raise AssertionError("a broken append was reported as written")
    assert (await store.append(stream(), [new(2)])).version == 1  # and the store reconnects
    await store.close()


async def test_a_refused_append_is_freed_when_its_caller_drops_it_not_left_to_the_cycle_collector(
    pool, migrated_url: str
) -> None:
    # The exception went through the future the writer answered: held by the frame that awaited
    # it, that future made a cycle holding every frame up the traceback, and their locals (a
    # command's decider state, a whole workspace) until a full collection came by.
    store = PostgresEventStore(pool, migrated_url)
    taken = stream()
    await store.append(taken, [new(0)], NO_STREAM)

    async def refused() -> weakref.ref:
        try:
            await store.append(taken, [new(1)], NO_STREAM)
        except WrongExpectedVersion as exc:
            return weakref.ref(exc)
        raise AssertionError("the append was not refused")

    gc.collect()
    gc.disable()
    try:
        gone = await refused()
        await store.append(stream(), [new(2)])  # the writer has moved on to another batch
        assert gone() is None
    finally:
        gc.enable()
        await store.close()
