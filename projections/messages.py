"""``messages``: channel history, threads, edit history and reactions, with each channel's seq.

Reads: ``message.posted``, ``message.edited``, ``message.deleted``, ``reaction.added``,
``reaction.removed``.
Writes: ``channel_seqs`` (the per-channel counter: ``last_seq``, which the channel list joins for
unread counts), ``messages`` (one row per message, replies included, with the thread summary on
roots), ``message_versions`` (every text a message has had, until it is deleted) and
``reactions`` (one row per user and emoji).

Seq: a post takes ``last_seq + 1`` of its channel, in log order, in the same statement that
inserts it, so seqs are contiguous per channel and a rebuild gives every message the same seq.
Thread summaries (``reply_count``, ``last_reply_at``, ``reply_user_ids``: replies not deleted,
authors in the order of their first reply) are recomputed from the replies of every root a
batch touched, after the batch's other rows: no increment can drift.
Times are the events' ``occurred_at`` (the command's clock, as its answer showed it), else
``recorded_at``. Idempotency: the runtime commits rows and checkpoint together; a post whose
message exists already bumps no seq and inserts nothing, reactions are upserts and deletes by
key, a deletion applies once. An edit's version number is ``max + 1``: replaying one edit twice
would list it twice, which the runtime's exactly-once batches and rebuild's fresh tables exclude.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg

from domain.events import RecordedEvent
from domain.message import MessageDeleted, MessageEdited, MessagePosted, ReactionAdded, ReactionRemoved
from infra.db import Statement, run_statements
from projections.consistency import SEQS_CHANNEL

_SCHEMA = """
CREATE TABLE IF NOT EXISTS channel_seqs{s} (
    channel_id text   NOT NULL,
    last_seq   bigint NOT NULL DEFAULT 0,
    CONSTRAINT channel_seqs{s}_pkey PRIMARY KEY (channel_id)
);
CREATE TABLE IF NOT EXISTS messages{s} (
    message_id      text        NOT NULL,
    channel_id      text        NOT NULL,
    workspace_id    text        NOT NULL,
    seq             bigint      NOT NULL,
    author_id       text        NOT NULL,
    text            text        NOT NULL,
    created_at      timestamptz NOT NULL,
    edited_at       timestamptz,
    deleted         boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    deleted_by      text,
    thread_root_id  text,
    reply_count     integer     NOT NULL DEFAULT 0,
    last_reply_at   timestamptz,
    reply_user_ids  text[]      NOT NULL DEFAULT '{{}}',
    mentions        text[]      NOT NULL DEFAULT '{{}}',
    mention_channel boolean     NOT NULL DEFAULT false,
    mention_here    boolean     NOT NULL DEFAULT false,
    file_ids        text[]      NOT NULL DEFAULT '{{}}',
    client_msg_id   text,
    position        bigint      NOT NULL,
    CONSTRAINT messages{s}_pkey PRIMARY KEY (message_id),
    CONSTRAINT messages{s}_channel_seq_key UNIQUE (channel_id, seq)
);
CREATE INDEX IF NOT EXISTS messages{s}_top_idx ON messages{s} (channel_id, seq) WHERE thread_root_id IS NULL;
CREATE INDEX IF NOT EXISTS messages{s}_thread_idx ON messages{s} (thread_root_id, seq)
    WHERE thread_root_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS message_versions{s} (
    message_id text        NOT NULL,
    version    integer     NOT NULL,
    text       text        NOT NULL,
    edited_at  timestamptz NOT NULL,
    CONSTRAINT message_versions{s}_pkey PRIMARY KEY (message_id, version)
);
CREATE TABLE IF NOT EXISTS reactions{s} (
    message_id text        NOT NULL,
    emoji      text        NOT NULL,
    user_id    text        NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT reactions{s}_pkey PRIMARY KEY (message_id, emoji, user_id)
);
"""

_JSON = msgspec.json.Encoder()

# Every post of a batch in ONE statement (the rows as one JSON parameter: dumping a dozen
# parameters per post was most of this projection's client CPU). Each channel's counter moves by
# its new posts and they take the seqs after it in log order; a post already projected (a batch
# applied again) is skipped and takes no seq. That check is a primary-key probe per post (OFFSET 0
# keeps the planner from making it an anti-join): as a join, the projector's generic plan hashed the
# batch and read the whole messages table every batch until statistics changed.
_POSTED = """
WITH r AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(
        message_id text, channel_id text, workspace_id text, author_id text, text text, at timestamptz,
        thread_root_id text, mentions text[], mention_channel boolean, mention_here boolean, file_ids text[],
        client_msg_id text, position bigint)
), fresh AS (
    SELECT r.*, row_number() OVER (PARTITION BY r.channel_id ORDER BY r.position) AS k,
           count(*) OVER (PARTITION BY r.channel_id) AS n
    FROM r WHERE NOT EXISTS (SELECT 1 FROM messages{s} m WHERE m.message_id = r.message_id OFFSET 0)
), bump AS (
    INSERT INTO channel_seqs{s} AS c (channel_id, last_seq)
    SELECT DISTINCT channel_id, n FROM fresh
    ON CONFLICT (channel_id) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq
    RETURNING channel_id, last_seq
), inserted AS (
    INSERT INTO messages{s} (message_id, channel_id, workspace_id, seq, author_id, text, created_at, thread_root_id,
                             mentions, mention_channel, mention_here, file_ids, client_msg_id, position)
    SELECT f.message_id, f.channel_id, f.workspace_id, b.last_seq - f.n + f.k, f.author_id, f.text, f.at,
           f.thread_root_id, f.mentions, f.mention_channel, f.mention_here, f.file_ids, f.client_msg_id, f.position
    FROM fresh f JOIN bump b ON b.channel_id = f.channel_id
    RETURNING message_id, text, created_at, position, seq
), versions AS (
    INSERT INTO message_versions{s} (message_id, version, text, edited_at)
    SELECT message_id, 1, text, created_at FROM inserted
)
{tell}
"""
# The seqs the batch gave, for the posts waiting on them (``projections/consistency.py``, SEQS_CHANNEL):
# "position:seq ..." in notifications of at most 300 (a payload holds 8,000 bytes). Live only:
# a rebuild's tables (a suffix) answer nobody.
_TELL_SEQS = f"""SELECT pg_notify('{SEQS_CHANNEL}', string_agg(position || ':' || seq, ' '))
FROM (SELECT position, seq, (row_number() OVER ()) / 300 AS part FROM inserted) x GROUP BY part"""
_TELL_NOBODY = "SELECT count(*) FROM inserted"
_EDITED = """
WITH edited AS (
    UPDATE messages{s} SET text = %(text)s, edited_at = %(at)s, mentions = %(mentions)s,
           mention_channel = %(mention_channel)s, mention_here = %(mention_here)s
    WHERE message_id = %(message_id)s AND NOT deleted
    RETURNING message_id
)
INSERT INTO message_versions{s} (message_id, version, text, edited_at)
SELECT e.message_id, coalesce((SELECT max(version) FROM message_versions{s} WHERE message_id = e.message_id), 0) + 1,
       %(text)s, %(at)s
FROM edited e
"""
_DELETED = (
    """UPDATE messages{s} SET deleted = true, deleted_at = %(at)s, deleted_by = %(deleted_by)s, text = '',
              mentions = '{{}}', mention_channel = false, mention_here = false, file_ids = '{{}}'
       WHERE message_id = %(message_id)s AND NOT deleted""",
    "DELETE FROM reactions{s} WHERE message_id = %(message_id)s",
    "DELETE FROM message_versions{s} WHERE message_id = %(message_id)s",
)
_REACTED = """INSERT INTO reactions{s} (message_id, emoji, user_id, created_at)
              SELECT %(message_id)s, %(emoji)s, %(user_id)s, %(at)s
              WHERE EXISTS (SELECT 1 FROM messages{s} WHERE message_id = %(message_id)s AND NOT deleted)
              ON CONFLICT DO NOTHING"""
_UNREACTED = (
    "DELETE FROM reactions{s} WHERE message_id = %(message_id)s AND emoji = %(emoji)s AND user_id = %(user_id)s"
)
_THREADS = """
UPDATE messages{s} AS r
SET reply_count = coalesce(t.n, 0), last_reply_at = t.last_at, reply_user_ids = coalesce(t.users, '{{}}')
FROM unnest(%(roots)s::text[]) AS root(id)
LEFT JOIN LATERAL (
    SELECT count(*) AS n, max(created_at) AS last_at,
           (SELECT array_agg(a.author_id ORDER BY a.first_seq)
            FROM (SELECT author_id, min(seq) AS first_seq FROM messages{s}
                  WHERE thread_root_id = root.id AND NOT deleted GROUP BY author_id) AS a) AS users
    FROM messages{s} WHERE thread_root_id = root.id AND NOT deleted
) AS t ON true
WHERE r.message_id = root.id
"""


class _PostRow(msgspec.Struct, array_like=False):
    message_id: str
    channel_id: str
    workspace_id: str
    author_id: str
    text: str
    at: dt.datetime
    thread_root_id: str | None
    mentions: Sequence[str]
    mention_channel: bool
    mention_here: bool
    file_ids: Sequence[str]
    client_msg_id: str | None
    position: int


def _post_row(recorded: RecordedEvent, e: MessagePosted) -> _PostRow:
    return _PostRow(
        e.message_id,
        e.channel_id,
        e.workspace_id,
        e.author_id,
        e.text,
        recorded.meta.occurred_at or recorded.recorded_at,
        e.thread_root_id,
        e.mentions,
        e.mention_channel,
        e.mention_here,
        e.file_ids,
        e.client_msg_id,
        recorded.position,
    )


def _statements(recorded: RecordedEvent, roots: set[str]) -> list[tuple[str, Any]]:
    """The statements of one event other than a post (posts go in the batch's one ``_POSTED``)."""
    at = recorded.meta.occurred_at or recorded.recorded_at
    match recorded.event:
        case MessageEdited() as e:
            return [
                (
                    _EDITED,
                    {
                        "message_id": e.message_id,
                        "text": e.text,
                        "at": at,
                        "mentions": e.mentions,
                        "mention_channel": e.mention_channel,
                        "mention_here": e.mention_here,
                    },
                )
            ]
        case MessageDeleted() as e:
            if e.thread_root_id is not None:
                roots.add(e.thread_root_id)
            params = {"message_id": e.message_id, "at": at, "deleted_by": e.deleted_by}
            return [(statement, params) for statement in _DELETED]
        case ReactionAdded() as e:
            return [(_REACTED, {"message_id": e.message_id, "emoji": e.emoji, "user_id": e.user_id, "at": at})]
        case ReactionRemoved() as e:
            return [(_UNREACTED, {"message_id": e.message_id, "emoji": e.emoji, "user_id": e.user_id})]
    return []


class Messages:
    name = "messages"
    tables: Sequence[str] = ("channel_seqs", "messages", "message_versions", "reactions")

    def schema(self, suffix: str = "") -> str:
        return _SCHEMA.format(s=suffix)

    async def handle(self, conn: psycopg.AsyncConnection, events: Sequence[RecordedEvent], suffix: str = "") -> None:
        await run_statements(conn, self.statements(events, suffix))

    def statements(self, events: Sequence[RecordedEvent], suffix: str = "") -> list[Statement]:
        # The batch's posts go first, all in one statement. That is the log's order for everything
        # that depends on a post: an edit, deletion or reaction of a message is on its stream, after
        # its post; and a post does not depend on any other message's events (seqs are per channel,
        # in log order among posts; thread summaries are recomputed at the end).
        roots: set[str] = set()
        posts = [_post_row(r, r.event) for r in events if isinstance(r.event, MessagePosted)]
        roots.update(p.thread_root_id for p in posts if p.thread_root_id is not None)
        posted = _POSTED.replace("{tell}", _TELL_NOBODY if suffix else _TELL_SEQS)
        statements: list[tuple[str, Any]] = [(posted, (_JSON.encode(posts).decode(),))] if posts else []
        statements += [s for recorded in events for s in _statements(recorded, roots)]
        if roots:
            statements.append((_THREADS, {"roots": sorted(roots)}))
        return [(statement.format(s=suffix), params) for statement, params in statements]
