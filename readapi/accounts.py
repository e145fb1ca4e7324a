"""``GET /me`` and ``GET /me/sessions``: the query side of *Accounts and sessions* (read models:
``users`` and ``sessions``, projection ``accounts``)."""

from __future__ import annotations

import datetime as dt

import msgspec
from litestar import get
from litestar.di import NamedDependency
from psycopg_pool import AsyncConnectionPool

from domain.errors import NotYet
from domain.session import Principal
from projections.consistency import ReadConsistency

_ME = "SELECT user_id, email, display_name, created_at FROM users WHERE user_id = %s"
_SESSIONS = """SELECT session_id, device, started_at FROM sessions
               WHERE user_id = %s AND ended_at IS NULL ORDER BY started_at DESC, session_id"""


class MeOut(msgspec.Struct, frozen=True):
    id: str
    email: str
    display_name: str
    created_at: dt.datetime
    session_id: str


@get("/me", operation_id="me", tags=["accounts"])
async def me(
    principal: NamedDependency[Principal],
    pool: NamedDependency[AsyncConnectionPool],
    consistency: NamedDependency[ReadConsistency],
) -> MeOut:
    # A token fresh from login works at once: wait for the read models to reach its session.
    await consistency.wait(principal.since_position)
    async with pool.connection() as conn:
        cur = await conn.execute(_ME, (principal.user_id,))
        row = await cur.fetchone()
    if row is None:  # the session is valid, so the account exists: the read model is behind
        raise NotYet("your account is still being set up; try again in a moment")
    return MeOut(*row, session_id=principal.session_id)


class SessionOut(msgspec.Struct, frozen=True):
    id: str
    device: str | None
    started_at: dt.datetime
    current: bool


class SessionsOut(msgspec.Struct, frozen=True):
    items: list[SessionOut]


@get("/me/sessions", operation_id="listSessions", tags=["accounts"])
async def sessions(
    principal: NamedDependency[Principal],
    pool: NamedDependency[AsyncConnectionPool],
    consistency: NamedDependency[ReadConsistency],
) -> SessionsOut:
    """The caller's devices still logged in, newest first; ``current`` is this one."""
    await consistency.wait(principal.since_position)
    async with pool.connection() as conn:
        cur = await conn.execute(_SESSIONS, (principal.user_id,))
        rows = await cur.fetchall()
    return SessionsOut([SessionOut(sid, device, at, sid == principal.session_id) for sid, device, at in rows])
