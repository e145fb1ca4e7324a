"""``notifications``: who is notified of which message, whether they have read it, and the
per-(user, channel) ``mention_count`` of the channel list.

Reads: ``message.posted`` and ``message.deleted``; the membership events (``channel.created``,
``channel.member_joined`` / ``member_left``, ``workspace.member_joined`` / ``member_left``); and the
user stream's ``read_marker.moved``, ``notify.*`` preferences and ``notifications.read`` /
``notifications.emailed``.
Writes: ``notifications`` (one row per person and message: kind, seq, read, pushed),
``notification_counts`` (unread notifications of the counted kinds per person and channel, read
by the channel list in O(1)), and its own copies of what deciding needs, as of each event's place
in the log: ``notify_channels`` (kind and the seq counter), ``notify_members``,
``notify_workspace_members``, ``notify_threads`` (who started or replied to a thread),
``notify_users`` (do-not-disturb, email), ``notify_channel_prefs`` and ``notify_keywords``.
Own copies, not the ``workspaces`` and ``messages`` tables: those may be ahead of or behind this
projection (another process may lead them), and a rebuild must decide as the live run did.

Posts are applied a run at a time (consecutive posts with nothing between them that this
projection reads), in one statement: each channel's seq counter moves (the same rule as the
``messages`` projection: every post takes ``last_seq + 1`` in log order), every kind's candidates
are gathered per post (direct mentions, the DM's people, ``@channel``'s members, ``@here``'s
recorded online members, keyword matches through the ``first_word`` index, thread followers,
level ``all``), each person keeps the first kind by ``domain.notify.KINDS`` precedence, the
level, mute, channel and workspace membership filter them, and the rows and counts are written
with INSERT ... SELECT: an ``@channel`` to 10,000 members, or a batch of 500 posts, is one
statement. Membership and preference events end a run, so each post is decided against them as
of its place in the log. ``pushed`` is false when the channel is muted or the person was in
do-not-disturb at the message's time (recorded, not pushed).
A read marker marks the person's notifications in the channel up to its seq read; a deletion
removes the message's notifications. Counts move by exactly the rows that changed.
Idempotency: the runtime commits rows and checkpoint together; inserts are ``ON CONFLICT DO
NOTHING`` and reads only turn unread rows read. Times are the events' ``occurred_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg

from domain import channel as ch
from domain import notify as n
from domain import workspace as ws
from domain.events import RecordedEvent
from domain.message import MessageDeleted, MessagePosted
from domain.readstate import ReadMarkerMoved
from infra.db import Statement, run_statements

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications{s} (
    user_id      text        NOT NULL,
    id           text        NOT NULL,
    kind         text        NOT NULL,
    workspace_id text        NOT NULL,
    channel_id   text        NOT NULL,
    message_id   text        NOT NULL,
    seq          bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    read         boolean     NOT NULL DEFAULT false,
    pushed       boolean     NOT NULL,
    position     bigint      NOT NULL,
    CONSTRAINT notifications{s}_pkey PRIMARY KEY (user_id, id)
);
CREATE INDEX IF NOT EXISTS notifications{s}_unread_idx ON notifications{s} (user_id, channel_id, seq) WHERE NOT read;
CREATE INDEX IF NOT EXISTS notifications{s}_message_idx ON notifications{s} (message_id);
CREATE TABLE IF NOT EXISTS notification_counts{s} (
    channel_id    text    NOT NULL,
    user_id       text    NOT NULL,
    mention_count integer NOT NULL DEFAULT 0,
    CONSTRAINT notification_counts{s}_pkey PRIMARY KEY (channel_id, user_id)
);
CREATE TABLE IF NOT EXISTS notify_channels{s} (
    channel_id   text   NOT NULL,
    workspace_id text   NOT NULL,
    kind         text   NOT NULL,
    last_seq     bigint NOT NULL DEFAULT 0,
    CONSTRAINT notify_channels{s}_pkey PRIMARY KEY (channel_id)
);
CREATE TABLE IF NOT EXISTS notify_members{s} (
    channel_id text NOT NULL,
    user_id    text NOT NULL,
    CONSTRAINT notify_members{s}_pkey PRIMARY KEY (channel_id, user_id)
);
CREATE TABLE IF NOT EXISTS notify_workspace_members{s} (
    workspace_id text NOT NULL,
    user_id      text NOT NULL,
    CONSTRAINT notify_workspace_members{s}_pkey PRIMARY KEY (workspace_id, user_id)
);
CREATE TABLE IF NOT EXISTS notify_threads{s} (
    root_id text NOT NULL,
    user_id text NOT NULL,
    CONSTRAINT notify_threads{s}_pkey PRIMARY KEY (root_id, user_id)
);
CREATE TABLE IF NOT EXISTS notify_users{s} (
    user_id       text        NOT NULL,
    dnd_until     timestamptz,
    email_enabled boolean     NOT NULL DEFAULT true,
    email_delay_s integer     NOT NULL DEFAULT {delay},
    emailed_upto  text        NOT NULL DEFAULT '',
    CONSTRAINT notify_users{s}_pkey PRIMARY KEY (user_id)
);
CREATE TABLE IF NOT EXISTS notify_channel_prefs{s} (
    channel_id text    NOT NULL,
    user_id    text    NOT NULL,
    level      text    NOT NULL,
    muted      boolean NOT NULL,
    CONSTRAINT notify_channel_prefs{s}_pkey PRIMARY KEY (channel_id, user_id)
);
CREATE TABLE IF NOT EXISTS notify_keywords{s} (
    user_id    text NOT NULL,
    phrase     text NOT NULL,
    first_word text NOT NULL,
    keyword    text NOT NULL,
    n          integer NOT NULL,
    CONSTRAINT notify_keywords{s}_pkey PRIMARY KEY (user_id, phrase)
);
CREATE INDEX IF NOT EXISTS notify_keywords{s}_word_idx ON notify_keywords{s} (first_word);
"""

_JSON = msgspec.json.Encoder()
_COUNTED = "(" + ", ".join(f"'{k}'" for k in n.COUNTED) + ")"
_DIRECT = "(" + ", ".join(f"'{k}'" for k in n.DIRECT) + ")"

# A run of posts (consecutive in the log, nothing else between them that this projection reads)
# in ONE statement, the posts as one JSON parameter. Each channel's seq counter moves by its posts
# and they take the seqs after it in log order; every kind's candidates are gathered per post; each
# person keeps the first kind by precedence (rank); then who may get it. A post also makes its
# author follow its thread, and the later posts of the run see that (the ``earlier`` branch: a
# statement does not see its own inserts). Channel and workspace membership are primary-key probes
# per chosen person (EXISTS ... OFFSET 0): as joins, the planner hashed every member of the posts'
# channels before it knew whether anyone was to be notified (10,000 rows for one post in a
# 10,000-member channel).
_POSTED = f"""
WITH p AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS p(
        i int, ch text, ws text, message_id text, author text, root text, mentions text[], everyone boolean,
        here text[], words text[], norm text, prefix text, at timestamptz, position bigint)
), bump AS (
    INSERT INTO notify_channels{{s}} AS c (channel_id, workspace_id, kind, last_seq)
    SELECT ch, min(ws), 'channel', count(*) FROM p GROUP BY ch
    ON CONFLICT (channel_id) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq
    RETURNING channel_id, last_seq, kind
), posts AS (
    SELECT p.*, b.kind,
           b.last_seq - count(*) OVER (PARTITION BY p.ch) + row_number() OVER (PARTITION BY p.ch ORDER BY p.i) AS seq
    FROM p JOIN bump b ON b.channel_id = p.ch
), candidates (i, user_id, kind, rank) AS (
    SELECT q.i, m.user_id, 'dm', 0 FROM posts q JOIN notify_members{{s}} m ON m.channel_id = q.ch
    WHERE q.kind <> 'channel'
    UNION ALL SELECT q.i, u, 'mention', 1 FROM posts q, unnest(q.mentions) AS u
    UNION ALL SELECT q.i, m.user_id, 'channel', 2 FROM posts q JOIN notify_members{{s}} m ON m.channel_id = q.ch
              WHERE q.everyone
    UNION ALL SELECT q.i, u, 'here', 3 FROM posts q, unnest(q.here) AS u
    UNION ALL SELECT q.i, k.user_id, 'thread_reply', 4 FROM posts q JOIN notify_threads{{s}} k ON k.root_id = q.root
    UNION ALL SELECT q.i, earlier.author, 'thread_reply', 4 FROM posts q
              JOIN p earlier ON earlier.i < q.i AND coalesce(earlier.root, earlier.message_id) = q.root
    UNION ALL SELECT q.i, k.user_id, 'keyword', 5 FROM posts q JOIN notify_keywords{{s}} k
              ON k.first_word = ANY(q.words) AND strpos(q.norm, ' ' || k.phrase || ' ') > 0
    UNION ALL SELECT q.i, pr.user_id, 'message', 6 FROM posts q JOIN notify_channel_prefs{{s}} pr
              ON pr.channel_id = q.ch AND pr.level = 'all' WHERE q.root IS NULL
), best AS (
    SELECT DISTINCT ON (c.i, c.user_id) c.i, c.user_id, c.kind
    FROM candidates c JOIN p ON p.i = c.i WHERE c.user_id <> p.author ORDER BY c.i, c.user_id, c.rank
), added AS (
    INSERT INTO notifications{{s}} (user_id, id, kind, workspace_id, channel_id, message_id, seq, created_at, pushed,
                                  position)
    SELECT b.user_id, q.prefix || substr(md5(b.user_id), 1, 12), b.kind, q.ws, q.ch, q.message_id, q.seq, q.at,
           NOT coalesce(pr.muted, false) AND NOT coalesce(u.dnd_until > q.at, false), q.position
    FROM best b JOIN posts q ON q.i = b.i
    LEFT JOIN notify_channel_prefs{{s}} pr ON pr.channel_id = q.ch AND pr.user_id = b.user_id
    LEFT JOIN notify_users{{s}} u ON u.user_id = b.user_id
    WHERE EXISTS (SELECT FROM notify_members{{s}} m WHERE m.channel_id = q.ch AND m.user_id = b.user_id OFFSET 0)
      AND EXISTS (SELECT FROM notify_workspace_members{{s}} w WHERE w.workspace_id = q.ws AND w.user_id = b.user_id
                  OFFSET 0)
      AND coalesce(pr.level, 'mentions') <> 'nothing' AND (NOT coalesce(pr.muted, false) OR b.kind IN {_DIRECT})
    ON CONFLICT DO NOTHING
    RETURNING user_id, channel_id, kind
), follow AS (
    INSERT INTO notify_threads{{s}} (root_id, user_id)
    SELECT DISTINCT coalesce(root, message_id), author FROM p
    ON CONFLICT DO NOTHING
)
INSERT INTO notification_counts{{s}} AS c (channel_id, user_id, mention_count)
SELECT channel_id, user_id, count(*) FROM added WHERE kind IN {_COUNTED} GROUP BY channel_id, user_id
ON CONFLICT (channel_id, user_id) DO UPDATE SET mention_count = c.mention_count + excluded.mention_count
"""
_DELETED = f"""
WITH gone AS (DELETE FROM notifications{{s}} WHERE message_id = %(message_id)s RETURNING user_id, channel_id, kind, read)
UPDATE notification_counts{{s}} c SET mention_count = c.mention_count - g.k
FROM (SELECT user_id, channel_id, count(*) AS k FROM gone WHERE NOT read AND kind IN {_COUNTED} GROUP BY 1, 2) g
WHERE c.channel_id = g.channel_id AND c.user_id = g.user_id
"""
_MARKER = f"""
WITH r AS (UPDATE notifications{{s}} SET read = true
           WHERE user_id = %(user)s AND channel_id = %(ch)s AND seq <= %(seq)s AND NOT read RETURNING kind)
UPDATE notification_counts{{s}} SET mention_count = mention_count - (SELECT count(*) FROM r WHERE kind IN {_COUNTED})
WHERE channel_id = %(ch)s AND user_id = %(user)s
"""
_READ = f"""
WITH r AS (UPDATE notifications{{s}} SET read = true
           WHERE user_id = %(user)s AND NOT read AND (%(all)s OR id = ANY(%(ids)s::text[])) RETURNING channel_id, kind)
UPDATE notification_counts{{s}} c SET mention_count = c.mention_count - g.k
FROM (SELECT channel_id, count(*) AS k FROM r WHERE kind IN {_COUNTED} GROUP BY 1) g
WHERE c.channel_id = g.channel_id AND c.user_id = %(user)s
"""
# What ``_READ`` would turn read: the same predicate, so a command can tell a no-op beforehand.
_ANY_UNREAD = """SELECT EXISTS (SELECT FROM notifications
                 WHERE user_id = %(user)s AND NOT read AND (%(all)s OR id = ANY(%(ids)s::text[])))"""


async def any_unread(conn: psycopg.AsyncConnection, user_id: str, ids: Sequence[str], all_: bool) -> bool:
    """Whether ``notifications.read {ids, all}`` from ``user_id`` would mark anything read now
    (True while the table does not exist yet: then nobody can tell)."""
    try:
        cur = await conn.execute(_ANY_UNREAD, {"user": user_id, "all": all_, "ids": list(ids)})
    except psycopg.errors.UndefinedTable:
        return True
    row = await cur.fetchone()
    return bool(row and row[0])


_SQL = {
    "channel": "INSERT INTO notify_channels{s} (channel_id, workspace_id, kind) VALUES (%(ch)s, %(ws)s, %(kind)s)"
    " ON CONFLICT (channel_id) DO UPDATE SET workspace_id = excluded.workspace_id, kind = excluded.kind",
    "ch_joined": "INSERT INTO notify_members{s} VALUES (%(ch)s, %(user)s) ON CONFLICT DO NOTHING",
    "ch_left": "DELETE FROM notify_members{s} WHERE channel_id = %(ch)s AND user_id = %(user)s",
    "ws_joined": "INSERT INTO notify_workspace_members{s} VALUES (%(ws)s, %(user)s) ON CONFLICT DO NOTHING",
    "ws_left": "DELETE FROM notify_workspace_members{s} WHERE workspace_id = %(ws)s AND user_id = %(user)s",
    "level": "INSERT INTO notify_channel_prefs{s} VALUES (%(ch)s, %(user)s, %(level)s, %(muted)s)"
    " ON CONFLICT (channel_id, user_id) DO UPDATE SET level = excluded.level, muted = excluded.muted",
    "dnd": "INSERT INTO notify_users{s} (user_id, dnd_until) VALUES (%(user)s, %(until)s)"
    " ON CONFLICT (user_id) DO UPDATE SET dnd_until = excluded.dnd_until",
    "email": "INSERT INTO notify_users{s} (user_id, email_enabled, email_delay_s) VALUES (%(user)s, %(on)s, %(delay)s)"
    " ON CONFLICT (user_id) DO UPDATE SET email_enabled = excluded.email_enabled,"
    " email_delay_s = excluded.email_delay_s",
    "emailed": "INSERT INTO notify_users{s} (user_id, emailed_upto) VALUES (%(user)s, %(upto)s)"
    " ON CONFLICT (user_id) DO UPDATE SET emailed_upto = greatest(notify_users{s}.emailed_upto, excluded.emailed_upto)",
    "kw_clear": "DELETE FROM notify_keywords{s} WHERE user_id = %(user)s",
    "kw_add": "INSERT INTO notify_keywords{s} SELECT %(user)s, p, f, kw, i"
    " FROM unnest(%(phrases)s::text[], %(firsts)s::text[], %(keywords)s::text[]) WITH ORDINALITY AS t(p, f, kw, i)"
    " ON CONFLICT DO NOTHING",
}


def _posted(i: int, recorded: RecordedEvent, e: MessagePosted) -> dict[str, Any]:
    """One post of a run, as ``_POSTED`` reads it."""
    words = n.words(e.text)
    return {
        "i": i,
        "ch": e.channel_id,
        "ws": e.workspace_id,
        "message_id": e.message_id,
        "author": e.author_id,
        "root": e.thread_root_id,
        "mentions": e.mentions,
        "everyone": e.mention_channel,
        "here": e.here_user_ids if e.mention_here else [],
        "words": sorted(set(words)),
        "norm": " " + " ".join(words) + " ",
        "prefix": n.id_prefix(recorded.position),
        "at": recorded.meta.occurred_at or recorded.recorded_at,
        "position": recorded.position,
    }


def _preferences(user: str, e: Any) -> list[tuple[str, dict[str, Any]]]:
    match e:
        case n.ChannelNotifySet():
            return [(_SQL["level"], {"ch": e.channel_id, "user": user, "level": e.level, "muted": e.muted})]
        case n.DndSet():
            return [(_SQL["dnd"], {"user": user, "until": e.until})]
        case n.EmailNotifySet():
            return [(_SQL["email"], {"user": user, "on": e.enabled, "delay": e.delay_s})]
        case n.NotificationsEmailed():
            return [(_SQL["emailed"], {"user": user, "upto": e.upto})]
        case n.KeywordsSet():
            phrases = [n.keyword_phrase(k) for k in e.keywords]
            return [
                (_SQL["kw_clear"], {"user": user}),
                (
                    _SQL["kw_add"],
                    {
                        "user": user,
                        "phrases": phrases,
                        "firsts": [p.split(" ")[0] for p in phrases],
                        "keywords": e.keywords,
                    },
                ),
            ]
        case n.NotificationsRead():
            return [(_READ, {"user": user, "all": e.all, "ids": e.ids})]
        case ReadMarkerMoved():
            return [(_MARKER, {"user": user, "ch": e.channel_id, "seq": e.seq})]
    return []


def statements(recorded: RecordedEvent) -> list[tuple[str, dict[str, Any]]]:
    """The statements (with ``{s}`` for the table suffix) that apply one event other than a post
    (posts are applied in runs: ``Notifications.handle``), in order."""
    e, stream = recorded.event, recorded.stream_id
    match e:
        case MessageDeleted():
            return [(_DELETED, {"message_id": e.message_id})]
        case ch.ChannelCreated():
            return [(_SQL["channel"], {"ch": e.channel_id, "ws": e.workspace_id, "kind": e.kind})]
        case ch.ChannelMemberJoined():
            return [(_SQL["ch_joined"], {"ch": stream.removeprefix("channel-"), "user": e.user_id})]
        case ch.ChannelMemberLeft():
            return [(_SQL["ch_left"], {"ch": stream.removeprefix("channel-"), "user": e.user_id})]
        case ws.MemberJoined():
            return [(_SQL["ws_joined"], {"ws": stream.removeprefix("workspace-"), "user": e.user_id})]
        case ws.MemberLeft():
            return [(_SQL["ws_left"], {"ws": stream.removeprefix("workspace-"), "user": e.user_id})]
    if stream.startswith("user-"):
        return _preferences(stream.removeprefix("user-"), e)
    return []


class Notifications:
    name = "notifications"
    tables: Sequence[str] = (
        "notifications",
        "notification_counts",
        "notify_channels",
        "notify_members",
        "notify_workspace_members",
        "notify_threads",
        "notify_users",
        "notify_channel_prefs",
        "notify_keywords",
    )

    def schema(self, suffix: str = "") -> str:
        return _SCHEMA.format(s=suffix, delay=n.DEFAULT_EMAIL_DELAY_S)

    async def handle(self, conn: psycopg.AsyncConnection, events: Sequence[RecordedEvent], suffix: str = "") -> None:
        await run_statements(conn, self.statements(events, suffix))

    def statements(self, events: Sequence[RecordedEvent], suffix: str = "") -> list[Statement]:
        todo: list[tuple[str, Any]] = []
        run: list[dict[str, Any]] = []  # posts since the last other event that changes anything here
        for recorded in events:
            if isinstance(recorded.event, MessagePosted):
                run.append(_posted(len(run), recorded, recorded.event))
                continue
            more = statements(recorded)
            if more and run:
                todo.append((_POSTED, (_JSON.encode(run).decode(),)))
                run = []
            todo += more
        if run:
            todo.append((_POSTED, (_JSON.encode(run).decode(),)))
        return [(statement.format(s=suffix), params) for statement, params in todo]  # in log order
