"""Channel history, one message, a thread, a message's versions: the query side of *Messages,
threads, reactions* in API.md (read models: the ``messages`` projection, and ``files`` for the
files a message lists; the message object and its SQL: ``projections/shapes.py``; who may see
which channel: ``projections/visibility.py``, so an invisible channel's messages are 404 like
missing ones).

One statement per page: the messages and, per message, its reactions aggregated
(``[{emoji, count, user_ids}]``, emoji in order of first use, users in order of reacting).
History walks the partial index ``(channel_id, seq) WHERE thread_root_id IS NULL``.

Cursors are seqs: ``before=N`` gives the ``limit`` newest messages under N; ``after=N`` the
``limit`` messages right after N (to catch up without gaps); both bound a range. Every page is
newest first, and ``has_more`` says whether the cursor's direction holds more.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
import psycopg
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter
from psycopg_pool import AsyncConnectionPool

from domain.access import looks_like_id
from domain.errors import DomainError, NotFound
from domain.message import could_be_id
from domain.session import Principal
from projections.consistency import ReadConsistency
from projections.shapes import MESSAGE_COLUMNS, MessageOut, to_message
from projections.visibility import VISIBLE_CHANNEL, channel_visible_to
from readapi.edge import services_of

MAX_LIMIT = 200
DEFAULT_LIMIT = 50

_ONE = f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.message_id = %(id)s"
_TOP_LEVEL = "m.channel_id = %(channel)s AND m.thread_root_id IS NULL AND m.seq > %(after)s AND m.seq < %(before)s"
_NEWEST = f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {_TOP_LEVEL} ORDER BY m.seq DESC LIMIT %(limit)s"
_OLDEST = f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {_TOP_LEVEL} ORDER BY m.seq ASC LIMIT %(limit)s"
_REPLIES = f"""SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.thread_root_id = %(root)s AND m.seq > %(after)s
               ORDER BY m.seq ASC LIMIT %(limit)s"""
_VERSIONS = "SELECT version, text, edited_at FROM message_versions WHERE message_id = %s ORDER BY version"
_NO_END = 2**63 - 1

Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT, description=f"1 to {MAX_LIMIT}")]
Cursor = Annotated[int | None, Parameter(ge=0, description="a seq")]
TimeTravel = Annotated[
    str | None, Parameter(description="not built yet: refused with 422 (time travel comes with the audit API)")
]


class NotBuilt(DomainError):
    """A documented parameter whose feature does not exist yet: refused, never silently ignored."""

    title = "Not built yet"


def refuse_time_travel(as_of: str | None, as_of_position: str | None) -> None:
    for name, value in (("as_of", as_of), ("as_of_position", as_of_position)):
        if value is not None:
            raise NotBuilt(
                f"{name} (reading a channel as it was) is not built yet; leave it out to read the channel as it is now",
                field=name,
            )


class MessagePage(msgspec.Struct, frozen=True):
    items: list[MessageOut]
    has_more: bool


class ThreadOut(msgspec.Struct, frozen=True):
    root: MessageOut
    replies: list[MessageOut]
    has_more: bool


class VersionOut(msgspec.Struct, frozen=True):
    version: int
    text: str
    created_at: dt.datetime


class VersionsOut(msgspec.Struct, frozen=True):
    items: list[VersionOut]


async def visible_message(conn: psycopg.AsyncConnection, message_id: str, user_id: str) -> MessageOut:
    if not could_be_id(message_id):
        raise NotFound("no such message")  # could not exist, and would not reach the database intact
    cur = await conn.execute(_ONE, {"id": message_id})
    row = await cur.fetchone()
    if row is None or await channel_visible_to(conn, row[1], user_id) is None:
        raise NotFound("no such message")
    return to_message(row)


async def page(
    conn: psycopg.AsyncConnection, sql: str, params: dict[str, Any], limit: int
) -> tuple[list[MessageOut], bool]:
    cur = await conn.execute(sql, {**params, "limit": limit + 1})
    rows = await cur.fetchall()
    return [to_message(r) for r in rows[:limit]], len(rows) > limit


class MessageQueries(Controller):
    path = "/"
    tags = ["messages"]

    @get("/channels/{channel_id:str}/messages", operation_id="listMessages")
    async def history(
        self,
        request: Request,
        channel_id: FromPath[str],
        limit: Limit = DEFAULT_LIMIT,
        before: Cursor = None,
        after: Cursor = None,
        as_of: TimeTravel = None,
        as_of_position: TimeTravel = None,
    ) -> MessagePage:
        refuse_time_travel(as_of, as_of_position)
        # A hot read: no dependency injection (see readapi/edge.py).
        services = services_of(request)
        principal = await services.authenticate(request.headers.get("authorization"))
        await services.consistency.wait(principal.since_position)
        if not looks_like_id(channel_id):
            raise NotFound("no such channel")  # could not exist, and would not reach the database intact
        params = {
            "channel": channel_id,
            "after": after or 0,
            "before": _NO_END if before is None else before,
            "limit": limit + 1,
        }
        oldest_first = after is not None and before is None
        async with services.pool.connection() as conn:
            # The visibility check and the page in one round trip; the page is read only if it passes.
            async with conn.pipeline():
                visible = await conn.execute(VISIBLE_CHANNEL, {"channel_id": channel_id, "user_id": principal.user_id})
                paged = await conn.execute(_OLDEST if oldest_first else _NEWEST, params)
            if await visible.fetchone() is None:
                raise NotFound("no such channel")
            rows = await paged.fetchall()
        items, more = [to_message(r) for r in rows[:limit]], len(rows) > limit
        return MessagePage(items[::-1] if oldest_first else items, more)

    @get("/messages/{message_id:str}", operation_id="getMessage")
    async def one(
        self,
        message_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> MessageOut:
        await consistency.wait(principal.since_position)
        async with pool.connection() as conn:
            return await visible_message(conn, message_id, principal.user_id)

    @get("/messages/{message_id:str}/thread", operation_id="getThread")
    async def thread(
        self,
        message_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
        limit: Limit = DEFAULT_LIMIT,
        after: Cursor = None,
    ) -> ThreadOut:
        """The thread ``message_id`` belongs to (given a reply, its root's), replies oldest first."""
        await consistency.wait(principal.since_position)
        async with pool.connection() as conn:
            root = await visible_message(conn, message_id, principal.user_id)
            if root.thread_root_id is not None:
                root = await visible_message(conn, root.thread_root_id, principal.user_id)
            replies, more = await page(conn, _REPLIES, {"root": root.id, "after": after or 0}, limit)
        return ThreadOut(root, replies, more)

    @get("/messages/{message_id:str}/versions", operation_id="listMessageVersions")
    async def versions(
        self,
        message_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> VersionsOut:
        """Every text the message has had, oldest first (none once it is deleted)."""
        await consistency.wait(principal.since_position)
        async with pool.connection() as conn:
            await visible_message(conn, message_id, principal.user_id)
            cur = await conn.execute(_VERSIONS, (message_id,))
            return VersionsOut([VersionOut(*row) for row in await cur.fetchall()])
