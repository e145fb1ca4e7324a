"""``projection_checkpoints``: how far each follower of the log has got, and the one place its SQL
and its NOTIFY channel are written.

A row per follower (a projection, or the realtime publisher under ``realtime``): ``name``,
``position`` (every event at or below it is applied), ``updated_at``. The projector runtime moves
a projection's checkpoint in the same transaction as its rows and notifies ``CHANNEL`` with
``"{name} {position}"`` (delivered at commit); ``projections/consistency.py`` listens there. The
row lock taken by moving a checkpoint is also how a rebuild pauses the live projector
(``projections/rebuild.py``). The realtime publisher moves its own row without notifying: nobody
waits for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from infra.leader import LOCK_CLASS, lock_key

CHANNEL = "hubbub_checkpoints"
"""The NOTIFY channel of moved checkpoints, payload ``"{name} {position}"``."""


async def read_checkpoints(pool: AsyncConnectionPool, names: Sequence[str] | None = None) -> dict[str, int]:
    """Checkpoint positions by projection name (all of them when ``names`` is None)."""
    sql = "SELECT name, position FROM projection_checkpoints"
    params: tuple = ()
    if names is not None:
        sql, params = sql + " WHERE name = ANY(%s)", (list(names),)
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return {name: int(position) for name, position in await cur.fetchall()}


async def position_of(conn: psycopg.AsyncConnection, name: str) -> int | None:
    """``name``'s checkpoint, None if it has none yet."""
    cur = await conn.execute("SELECT position FROM projection_checkpoints WHERE name = %s", (name,))
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def start_at(conn: psycopg.AsyncConnection, name: str, position: int) -> None:
    """Give ``name`` a checkpoint at ``position`` unless it has one."""
    await conn.execute(
        "INSERT INTO projection_checkpoints (name, position) VALUES (%s, %s) ON CONFLICT DO NOTHING", (name, position)
    )


async def move(conn: psycopg.AsyncConnection, name: str, position: int) -> None:
    """Set ``name``'s checkpoint, without notifying (the realtime publisher's: nobody waits for it)."""
    await conn.execute(
        "UPDATE projection_checkpoints SET position = %s, updated_at = now() WHERE name = %s", (position, name)
    )


async def lock_checkpoint(conn: psycopg.AsyncConnection, name: str) -> int:
    """Create the checkpoint row if missing and lock it until the transaction ends; its position."""
    await conn.execute("INSERT INTO projection_checkpoints (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,))
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


async def save_checkpoint(conn: psycopg.AsyncConnection, name: str, position: int, expected: int | None = None) -> bool:
    """Move ``name``'s checkpoint to ``position`` (only if it is at ``expected``, when given) and
    notify; False if it was not at ``expected``."""
    cur = await conn.execute(_SAVE, {"to": position, "name": name, "from": expected, "channel": CHANNEL})
    return await cur.fetchone() is not None


# Several checkpoints at once, each only from where it was: the projections of one batch. Their
# notifications are the batch's last statement (``TELL``), so that whatever a projection notifies
# about its rows (the messages' seqs) reaches a listener before the checkpoint that wakes waiters.
SAVE_ALL = """
UPDATE projection_checkpoints c SET position = w.target, updated_at = now()
FROM unnest(%(names)s::text[], %(froms)s::bigint[], %(tos)s::bigint[]) AS w(name, position, target)
WHERE c.name = w.name AND c.position = w.position
RETURNING c.name
"""
"""Returns the names it moved: fewer than asked means someone else moved one (send with ``batch_params``)."""
TELL = """SELECT pg_notify(%(channel)s, name || ' ' || position::text)
          FROM unnest(%(names)s::text[], %(tos)s::bigint[]) AS w(name, position)"""
"""The notifications of ``SAVE_ALL``'s moves (same parameters)."""


def batch_params(names: Sequence[str], froms: Sequence[int], tos: Sequence[int]) -> dict[str, Any]:
    """The parameters of ``SAVE_ALL`` and ``TELL``: move each of ``names`` from ``froms`` to ``tos``."""
    return {"names": list(names), "froms": list(froms), "tos": list(tos), "channel": CHANNEL}


# -- status (``hubbub projections status``) -------------------------------------------------------

_STATUS = """
SELECT c.name, c.position, h.head,
       (SELECT count(*) FROM events e WHERE e.position > c.position) AS lag,
       c.updated_at,
       (SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.classid = %s AND l.objid = k.key LIMIT 1) AS leader_pid
FROM projection_checkpoints c
JOIN unnest(%s::text[], %s::bigint[]) AS k(name, key) ON k.name = c.name
CROSS JOIN (SELECT coalesce(max(position), 0) AS head FROM events) AS h
ORDER BY c.name
"""


async def names(conn: psycopg.AsyncConnection) -> set[str]:
    """Every follower that has a checkpoint."""
    cur = await conn.execute("SELECT name FROM projection_checkpoints")
    return {row[0] for row in await cur.fetchall()}


async def status(conn: psycopg.AsyncConnection, wanted: Sequence[str]) -> list[tuple[Any, ...]]:
    """``(name, position, head, lag, updated_at, leader pid or None)`` of those of ``wanted`` that
    have a checkpoint; head and lag are read from PostgreSQL's ``events`` table."""
    cur = await conn.execute(_STATUS, (LOCK_CLASS, list(wanted), [lock_key(n) for n in wanted]))
    return await cur.fetchall()
