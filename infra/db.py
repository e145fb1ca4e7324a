"""PostgreSQL connection pool, made in the app's lifespan and passed in (no module globals), and
statements run pipelined."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

Statement = tuple[str, Any]
"""SQL text and its parameters."""


async def open_pool(conninfo: str, min_size: int = 2, max_size: int = 10) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(conninfo, min_size=min_size, max_size=max_size, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=10)
    return pool


async def run_statements(conn: psycopg.AsyncConnection, statements: Sequence[Statement] | None) -> None:
    """In order, pipelined: one round trip however many there are."""
    if not statements:
        return
    async with conn.pipeline(), conn.cursor() as cur:
        for statement, params in statements:
            await cur.execute(statement, params)
