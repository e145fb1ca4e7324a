"""The seq the ``messages`` read model gave a message, for the answer to its post.

Posts that wait for the projection are woken together by the NOTIFY of the batch that gave them
their seqs, so their lookups are gathered into one query: a burst of N posts costs one round trip,
not N.
"""

from __future__ import annotations

import asyncio

from psycopg_pool import AsyncConnectionPool

_SEQS = "SELECT message_id, seq FROM messages WHERE message_id = ANY(%s)"


class SeqLookup:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._wanted: dict[str, list[asyncio.Future[int | None]]] = {}
        self._batch: asyncio.Task[None] | None = None

    async def seq(self, message_id: str) -> int | None:
        """The message's seq, or None if the read model does not have the message (yet)."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(message_id, []).append(future)
        if self._batch is None or self._batch.done():
            self._batch = asyncio.create_task(self._look_up(), name="seq-lookup")
        try:
            return await future
        finally:
            del future  # an error set on it must not make a cycle with this frame (see eventstore/postgres.py)

    async def _look_up(self) -> None:
        await asyncio.sleep(0)  # the posts woken with this one ask in this loop turn: wait for them
        while self._wanted:
            wanted, self._wanted = self._wanted, {}
            try:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(_SEQS, (list(wanted),))
                    found = {message_id: int(seq) for message_id, seq in await cur.fetchall()}
            except Exception as exc:  # noqa: BLE001 - every waiter gets it (a 503), none hangs
                _settle(wanted, exception=exc)
            else:
                for message_id, futures in wanted.items():
                    _settle({message_id: futures}, result=found.get(message_id))


def _settle(
    wanted: dict[str, list[asyncio.Future[int | None]]],
    *,
    result: int | None = None,
    exception: BaseException | None = None,
) -> None:
    for futures in wanted.values():
        for future in futures:
            if future.done():  # its request went away
                continue
            if exception is not None:
                future.set_exception(exception)
            else:
                future.set_result(result)
