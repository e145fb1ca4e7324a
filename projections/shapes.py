"""The objects clients get, and the SQL that loads them from the read models: a message (with its
reactions and files), a file as a message lists it, a channel's summary.

One definition for every path a client reads them by: the query routes (``readapi/``) answer
these objects, and the realtime frames (``realtime/frames.py``) carry the same ones, so a frame's
message is what ``GET /messages/{id}`` answers. Read models: ``messages`` and ``reactions`` of the
``messages`` projection, ``files`` of ``files``, ``channels`` of ``workspaces``. None of these
queries checks who may see what: callers check first (``projections/visibility.py``) or route by
what the user may see.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import psycopg

API_PREFIX = "/api/v1"

# -- messages --------------------------------------------------------------------------------------

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
MESSAGE_COLUMNS = f"""m.message_id, m.channel_id, m.seq, m.author_id, m.text, m.created_at, m.edited_at, m.deleted,
    m.thread_root_id, m.reply_count, m.last_reply_at, m.reply_user_ids, {_REACTIONS}, m.mentions, {_FILES}"""
"""What ``to_message`` reads, selected from ``messages m``."""


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


# Reactions and files come as JSON text, decoded straight into their types (psycopg's json
# loader built dicts first, then msgspec.convert walked them: most of the publisher's cost).
_REACTIONS_JSON = msgspec.json.Decoder(list[Reaction])
_FILES_JSON = msgspec.json.Decoder(list[FileOut])


def to_message(row: tuple[Any, ...]) -> MessageOut:
    """A row of ``MESSAGE_COLUMNS``: its first twelve columns as they are, then reactions,
    mentions and files (the JSON ones decoded)."""
    *fields, reactions, mentions, files = row
    return MessageOut(*fields, _REACTIONS_JSON.decode(reactions), _FILES_JSON.decode(files), mentions)


MESSAGES_BY_IDS = f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.message_id = ANY(%s)"
"""Rows for ``to_message`` by message id, whoever may see them (callers check or route)."""


async def messages_by_ids(conn: psycopg.AsyncConnection, ids: list[str]) -> dict[str, MessageOut]:
    cur = await conn.execute(MESSAGES_BY_IDS, (ids,))
    return {m.id: m for m in map(to_message, await cur.fetchall())}


# -- files and channels ----------------------------------------------------------------------------


def thumbnail_url(file_id: str) -> str:
    return f"{API_PREFIX}/files/{file_id}/thumbnail"


FILES_BY_IDS = f"""SELECT file_id, name, size, mime,
                  CASE WHEN jsonb_array_length(thumbnails) > 0 THEN '{API_PREFIX}/files/' || file_id || '/thumbnail' END
           FROM files WHERE file_id = ANY(%s) AND NOT deleted"""
"""``FileOut(*row)`` of the files that are not deleted, by id."""


class ChannelInfo(msgspec.Struct, frozen=True):
    """A channel without the per-user fields (membership, unread counts) of ``GET /channels/{id}``."""

    id: str
    workspace_id: str
    name: str | None
    kind: str
    private: bool
    topic: str
    archived: bool
    member_count: int


CHANNELS_BY_IDS = """SELECT channel_id, workspace_id, name, kind, private, topic, archived, member_count
                     FROM channels WHERE channel_id = ANY(%s)"""
"""``ChannelInfo(*row)`` by channel id."""
