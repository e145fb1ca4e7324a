"""``GET /me``: the query side of *Accounts and sessions* (read model: ``users``, projection
``accounts``)."""

from __future__ import annotations

import datetime as dt

import msgspec
from litestar import get
from litestar.di import NamedDependency
from psycopg_pool import AsyncConnectionPool

from domain.errors import NotFound
from domain.session import Principal
from infra.consistency import ReadConsistency

_ME = "SELECT user_id, email, display_name, created_at FROM users WHERE user_id = %s"


class MeOut(msgspec.Struct, frozen=True):
    id: str
    email: str
    display_name: str
    created_at: dt.datetime
    session_id: str


@get("/me", operation_id="me", tags=["accounts"])
async def me(
    principal: NamedDependency[Principal], pool: NamedDependency[AsyncConnectionPool],
    consistency: NamedDependency[ReadConsistency],
) -> MeOut:
    # A token fresh from login works at once: wait for the read models to reach its session.
    await consistency.wait(principal.since_position)
    async with pool.connection() as conn:
        cur = await conn.execute(_ME, (principal.user_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("no such user")
    return MeOut(*row, session_id=principal.session_id)
