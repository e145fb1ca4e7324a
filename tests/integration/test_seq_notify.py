"""The seqs a ``messages`` batch notifies (``projections/consistency.SEQS_CHANNEL``), as the app's
checkpoint watcher keeps them for the posts waiting on them."""

from __future__ import annotations

import asyncio

from projections import consistency
from projections.consistency import SEQS_CHANNEL, CheckpointWatcher


async def _until(check, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within 5 s"
        await asyncio.sleep(0.02)


async def test_the_watcher_keeps_notified_seqs_skips_a_bad_payload_and_lets_the_oldest_go(
    pool, migrated_url: str, monkeypatch
) -> None:
    monkeypatch.setattr(consistency, "SEQS_KEPT", 5)
    watcher = CheckpointWatcher(pool, migrated_url)
    await watcher.start()
    try:
        async with pool.connection() as conn:
            while 100 not in watcher.seqs:  # until it listens
                await conn.execute("SELECT pg_notify(%s, %s)", (SEQS_CHANNEL, "100:0"))
                await asyncio.sleep(0.05)
            await conn.execute("SELECT pg_notify(%s, %s)", (SEQS_CHANNEL, "not:seqs"))
            await conn.execute("SELECT pg_notify(%s, %s)", (SEQS_CHANNEL, "101:1 102:2 103:3"))
            await _until(lambda: 103 in watcher.seqs)
            assert watcher.seqs == {100: 0, 101: 1, 102: 2, 103: 3}
            await conn.execute("SELECT pg_notify(%s, %s)", (SEQS_CHANNEL, "104:4 105:5 106:6 107:7"))
            await _until(lambda: 107 in watcher.seqs)
            assert watcher.seqs == {103: 3, 104: 4, 105: 5, 106: 6, 107: 7}
    finally:
        await watcher.stop()


async def test_a_batch_of_many_posts_notifies_its_seqs_in_parts_a_payload_can_hold(pool) -> None:
    # The messages projection's statement, on 1,000 made-up inserted rows, answering the payloads
    # it would notify.
    from projections.messages import _TELL_SEQS

    told = _TELL_SEQS.replace(f"pg_notify('{SEQS_CHANNEL}', ", "(")
    statement = (
        f"WITH inserted AS (SELECT g AS position, g AS seq FROM generate_series(1000000001, 1000001000) g) {told}"
    )
    async with pool.connection() as conn:
        payloads = [row[0] for row in await (await conn.execute(statement)).fetchall()]
    assert all(len(p.encode()) < 8000 for p in payloads)
    pairs = [tuple(map(int, pair.split(":"))) for p in payloads for pair in p.split()]
    assert sorted(pairs) == [(n, n) for n in range(1000000001, 1000001001)]
