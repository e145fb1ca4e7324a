"""Leadership by PostgreSQL advisory lock: one process at a time does a job that must not run twice
(a projection, the realtime publisher, the email sender).

A leader holds a session-level two-key advisory lock, ``(LOCK_CLASS, lock_key(name))``, on a
connection of its own: when its process dies or its connection drops, PostgreSQL releases the lock
and a standby that keeps asking (``try_lead``, or ``lead`` which asks until it gets it) takes over.
Whatever the leader writes goes through that same connection, so a leader that lost its lock has
lost the connection it would write with. ``hubbub projections status`` reads ``pg_locks`` for the
same keys to show who leads.
"""

from __future__ import annotations

import asyncio
import hashlib

import psycopg

LOCK_CLASS = 7243020
"""First key of the two-key advisory locks that elect a leader (the second key is
``lock_key(name)``). The two-key space is apart from the one-key locks of migrations and appends."""


def lock_key(name: str) -> int:
    """Stable 31-bit key for ``name`` (non-negative, so it reads the same in ``pg_locks.objid``)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF


async def try_lead(conn: psycopg.AsyncConnection, name: str, lock_class: int = LOCK_CLASS) -> bool:
    """Take the lead of ``name`` on ``conn`` if nobody holds it (held until ``conn`` closes)."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (lock_class, lock_key(name)))
    row = await cur.fetchone()
    return bool(row and row[0])


async def lead(conn: psycopg.AsyncConnection, name: str, retry_s: float) -> None:
    """Return once ``conn`` leads ``name``, asking every ``retry_s`` while another process does."""
    while not await try_lead(conn, name):
        await asyncio.sleep(retry_s)


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
