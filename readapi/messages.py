"""Channel history, one message, a thread, a message's versions: the query side of *Messages,
threads, reactions* in API.md (read models: the ``messages`` projection, and ``files`` for the
files a message lists; who may see which channel: ``readapi/visibility.py``, so an invisible
channel's messages are 404 like missing ones).

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

from domain.message import could_be_id
from domain.errors import DomainError, NotFound
from domain.session import Principal
from infra.consistency import ReadConsistency
from domain.access import looks_like_id
from hubbub.auth import authenticate
from hubbub.deps import services_of
from readapi.visibility import VISIBLE_CHANNEL, channel_visible_to

MAX_LIMIT = 200
DEFAULT_LIMIT = 50

_REACTIONS = """coalesce((
    SELECT json_agg(json_build_object('emoji', r.emoji, 'count', r.n, 'user_ids', r.users) ORDER BY r.first_at, r.emoji)
    FROM (SELECT emoji, count(*) AS n, array_agg(user_id ORDER BY created_at, user_id) AS users,
                 min(created_at) AS first_at
          FROM reactions WHERE message_id = m.message_id GROUP BY emoji) AS r), '[]'::json)::text"""
# Files in the order the message lists them; a deleted file is a tombstone (``deleted: true``).
_FILES = """coalesce((
    SELECT json_agg(CASE WHEN f.deleted THEN json_build_object('id', f.file_id, 'name', '', 'size', 0, 'mime', '',
                                                               'deleted', true)
                         ELSE json_build_object('id', f.file_id, 'name', f.name, 'size', f.size, 'mime', f.mime,
                                                'thumbnail_url', CASE WHEN jsonb_array_length(f.thumbnails) > 0
                                                    THEN '/api/v1/files/' || f.file_id || '/thumbnail' END) END
                    ORDER BY listed.n)
    FROM unnest(m.file_ids) WITH ORDINALITY AS listed(file_id, n) JOIN files f ON f.file_id = listed.file_id), '[]'::json)::text"""
_COLUMNS = f"""m.message_id, m.channel_id, m.seq, m.author_id, m.text, m.created_at, m.edited_at, m.deleted,
    m.thread_root_id, m.reply_count, m.last_reply_at, m.reply_user_ids, {_REACTIONS}, m.mentions, {_FILES}"""
_ONE = f"SELECT {_COLUMNS} FROM messages m WHERE m.message_id = %(id)s"
_TOP_LEVEL = "m.channel_id = %(channel)s AND m.thread_root_id IS NULL AND m.seq > %(after)s AND m.seq < %(before)s"
_NEWEST = f"SELECT {_COLUMNS} FROM messages m WHERE {_TOP_LEVEL} ORDER BY m.seq DESC LIMIT %(limit)s"
_OLDEST = f"SELECT {_COLUMNS} FROM messages m WHERE {_TOP_LEVEL} ORDER BY m.seq ASC LIMIT %(limit)s"
_REPLIES = f"""SELECT {_COLUMNS} FROM messages m WHERE m.thread_root_id = %(root)s AND m.seq > %(after)s
               ORDER BY m.seq ASC LIMIT %(limit)s"""
_VERSIONS = "SELECT version, text, edited_at FROM message_versions WHERE message_id = %s ORDER BY version"
_NO_END = 2**63 - 1

Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT, description=f"1 to {MAX_LIMIT}")]
Cursor = Annotated[int | None, Parameter(ge=0, description="a seq")]
TimeTravel = Annotated[str | None, Parameter(description="not built yet: refused with 422 (time travel comes with the "
                                                         "audit API)")]


class NotBuilt(DomainError):
    """A documented parameter whose feature does not exist yet: refused, never silently ignored."""

    title = "Not built yet"


def refuse_time_travel(as_of: str | None, as_of_position: str | None) -> None:
    for name, value in (("as_of", as_of), ("as_of_position", as_of_position)):
        if value is not None:
            raise NotBuilt(f"{name} (reading a channel as it was) is not built yet; leave it out to read the channel "
                           "as it is now", field=name)


class Reaction(msgspec.Struct, frozen=True):
    emoji: str
    count: int
    user_ids: list[str]


class FileOut(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    name: str
    size: int
    mime: str
    thumbnail_url: str | None = None
    deleted: bool = False
    """A deleted file stays listed as a tombstone: its id, empty name and type, size 0."""


class MessageOut(msgspec.Struct, frozen=True):
    id: str
    channel_id: str
    seq: int
    author_id: str
    text: str
    created_at: dt.datetime
    edited_at: dt.datetime | None
    deleted: bool
    thread_root_id: str | None
    reply_count: int
    last_reply_at: dt.datetime | None
    reply_user_ids: list[str]
    reactions: list[Reaction]
    files: list[FileOut]
    mentions: list[str]


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


# Reactions and files come as JSON text, decoded straight into their types (psycopg's json
# loader built dicts first, then msgspec.convert walked them: most of the publisher's cost).
_REACTIONS_JSON = msgspec.json.Decoder(list[Reaction])
_FILES_JSON = msgspec.json.Decoder(list[FileOut])


def to_message(row: tuple[Any, ...]) -> MessageOut:
    (message_id, channel_id, seq, author_id, text, created_at, edited_at, deleted, thread_root_id, reply_count,
     last_reply_at, reply_user_ids, reactions, mentions, files) = row
    return MessageOut(message_id, channel_id, seq, author_id, text, created_at, edited_at, deleted, thread_root_id,
                      reply_count, last_reply_at, reply_user_ids, _REACTIONS_JSON.decode(reactions),
                      files=_FILES_JSON.decode(files), mentions=mentions)


BY_IDS = f"SELECT {_COLUMNS} FROM messages m WHERE m.message_id = ANY(%s)"
"""Rows for ``to_message`` by message id, whoever may see them (callers check or route)."""


async def messages_by_ids(conn: psycopg.AsyncConnection, ids: list[str]) -> dict[str, MessageOut]:
    cur = await conn.execute(BY_IDS, (ids,))
    return {m.id: m for m in map(to_message, await cur.fetchall())}


async def visible_message(conn: psycopg.AsyncConnection, message_id: str, user_id: str) -> MessageOut:
    if not could_be_id(message_id):
        raise NotFound("no such message")  # could not exist, and would not reach the database intact
    cur = await conn.execute(_ONE, {"id": message_id})
    row = await cur.fetchone()
    if row is None or await channel_visible_to(conn, row[1], user_id) is None:
        raise NotFound("no such message")
    return to_message(row)


async def page(conn: psycopg.AsyncConnection, sql: str, params: dict[str, Any], limit: int) -> tuple[list[MessageOut], bool]:
    cur = await conn.execute(sql, {**params, "limit": limit + 1})
    rows = await cur.fetchall()
    return [to_message(r) for r in rows[:limit]], len(rows) > limit


class MessageQueries(Controller):
    path = "/"
    tags = ["messages"]

    @get("/channels/{channel_id:str}/messages", operation_id="listMessages")
    async def history(
        self, request: Request, channel_id: FromPath[str], limit: Limit = DEFAULT_LIMIT, before: Cursor = None,
        after: Cursor = None, as_of: TimeTravel = None, as_of_position: TimeTravel = None,
    ) -> MessagePage:
        refuse_time_travel(as_of, as_of_position)
        # A hot read: no dependency injection (see hubbub.deps.services_of).
        services = services_of(request)
        principal = await authenticate(services.shell, request.headers.get("authorization"))
        await services.consistency.wait(principal.since_position)
        if not looks_like_id(channel_id):
            raise NotFound("no such channel")  # could not exist, and would not reach the database intact
        params = {"channel": channel_id, "after": after or 0, "before": _NO_END if before is None else before,
                  "limit": limit + 1}
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
        self, message_id: FromPath[str], principal: NamedDependency[Principal], pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> MessageOut:
        await consistency.wait(principal.since_position)
        async with pool.connection() as conn:
            return await visible_message(conn, message_id, principal.user_id)

    @get("/messages/{message_id:str}/thread", operation_id="getThread")
    async def thread(
        self, message_id: FromPath[str], principal: NamedDependency[Principal], pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency], limit: Limit = DEFAULT_LIMIT, after: Cursor = None,
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
        self, message_id: FromPath[str], principal: NamedDependency[Principal], pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> VersionsOut:
        """Every text the message has had, oldest first (none once it is deleted)."""
        await consistency.wait(principal.since_position)
        async with pool.connection() as conn:
            await visible_message(conn, message_id, principal.user_id)
            cur = await conn.execute(_VERSIONS, (message_id,))
            return VersionsOut([VersionOut(*row) for row in await cur.fetchall()])
