import asyncio
import contextlib
import datetime as dt
import uuid

from projections.messages import Messages
from projections.seqs import SeqLookup


class CountingPool:
    """The shared test pool, in a schema of this test's own (other tests rebuild ``messages``
    from the log and compare: rows made up here must not be in their table)."""

    def __init__(self, pool) -> None:
        self.pool, self.checkouts = pool, 0
        self.schema = f"seq_lookup_{uuid.uuid4().hex[:8]}"

    @contextlib.asynccontextmanager
    async def connection(self):
        self.checkouts += 1
        async with self.pool.connection() as conn:
            await conn.execute(f"SET search_path TO {self.schema}")
            try:
                yield conn
            finally:
                await conn.execute("RESET search_path")


async def _messages(counting: CountingPool, count: int) -> list[str]:
    channel, ids = uuid.uuid4().hex, [uuid.uuid4().hex for _ in range(count)]
    async with counting.pool.connection() as conn:
        await conn.execute(f"CREATE SCHEMA {counting.schema}")
    async with counting.connection() as conn:
        await conn.execute(Messages().schema())
        for seq, message_id in enumerate(ids, start=1):
            await conn.execute(
                "INSERT INTO messages (message_id, channel_id, workspace_id, seq, author_id, text, created_at, position)"
                " VALUES (%s, %s, 'w', %s, 'a', 'hi', %s, %s)",
                (message_id, channel, seq, dt.datetime.now(dt.UTC), seq),
            )
    return ids


async def test_posts_answered_together_share_one_lookup_and_each_gets_its_own_seq(pool) -> None:
    counting = CountingPool(pool)
    ids = await _messages(counting, 20)
    counting.checkouts = 0
    lookup = SeqLookup(counting)
    missing = uuid.uuid4().hex
    seqs = await asyncio.gather(*(lookup.seq(i) for i in [*ids, missing, ids[0]]))
    assert seqs == [*range(1, 21), None, 1]
    assert counting.checkouts == 1


async def test_a_failed_lookup_fails_every_waiter_instead_of_hanging() -> None:
    class BrokenPool:
        @contextlib.asynccontextmanager
        async def connection(self):
            raise OSError("database down")
            yield

    lookup = SeqLookup(BrokenPool())
    results = await asyncio.gather(lookup.seq("a"), lookup.seq("b"), return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]
