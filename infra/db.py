"""PostgreSQL connection pool, made in the app's lifespan and passed in (no module globals)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool


async def open_pool(conninfo: str, min_size: int = 2, max_size: int = 10) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(conninfo, min_size=min_size, max_size=max_size, open=False,
                               kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=10)
    return pool
