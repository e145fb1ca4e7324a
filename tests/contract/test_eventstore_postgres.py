"""PostgreSQL-specific log guarantees: the concurrent-commit hazard of sequences."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

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


async def test_the_log_refuses_updates_and_deletes(migrated_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_url, autocommit=True) as conn:
        for sql in ("UPDATE events SET type = 'x'", "DELETE FROM events"):
            try:
                await conn.execute(sql)
            except psycopg.errors.RaiseException as exc:
                assert "append-only" in str(exc)
            else:
                raise AssertionError(f"{sql} was allowed")
