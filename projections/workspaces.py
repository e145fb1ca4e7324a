"""``workspaces``: who is in which workspace and channel, with what role, and how far they read.

Reads: ``workspace.*`` (created, invite_created, member_joined, role_changed, member_left),
``channel.*`` (created, renamed, topic_set, archived, member_joined, member_left) and
``read_marker.moved``.
Writes: ``workspaces``, ``workspace_members``, ``invites`` (by code hash; ``used_by`` set by the
join that used it), ``channels`` (with ``member_count``) and ``channel_members`` (with the
member's ``last_read_seq``; the channel list reads it against ``channel_seqs.last_seq`` of the
``messages`` projection for an O(1) unread count). Events without an id of their own in their
data (``channel.renamed``...) take it from their stream id. Times are the events' ``recorded_at``.
Idempotency: rows and checkpoint commit together; every insert is ``ON CONFLICT DO NOTHING``,
counts move only when a row really appeared or went, and a read marker only grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from domain import channel as ch
from domain import workspace as ws
from domain.events import RecordedEvent
from domain.readstate import ReadMarkerMoved
from infra.db import Statement, run_statements

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workspaces{s} (
    workspace_id text NOT NULL, name text NOT NULL, owner_id text NOT NULL, created_at timestamptz NOT NULL,
    CONSTRAINT workspaces{s}_pkey PRIMARY KEY (workspace_id)
);
CREATE TABLE IF NOT EXISTS workspace_members{s} (
    workspace_id text NOT NULL, user_id text NOT NULL, role text NOT NULL, joined_at timestamptz NOT NULL,
    CONSTRAINT workspace_members{s}_pkey PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX IF NOT EXISTS workspace_members{s}_user_idx ON workspace_members{s} (user_id);
-- A workspace's guests, for the presence fan-out (projections/visibility.guests_seeing): few rows.
CREATE INDEX IF NOT EXISTS workspace_members{s}_guests_idx ON workspace_members{s} (workspace_id) WHERE role = 'guest';
CREATE TABLE IF NOT EXISTS invites{s} (
    code_hash text NOT NULL, workspace_id text NOT NULL, role text NOT NULL, expires_at timestamptz NOT NULL,
    created_by text NOT NULL, used_by text, used_at timestamptz,
    CONSTRAINT invites{s}_pkey PRIMARY KEY (code_hash)
);
CREATE TABLE IF NOT EXISTS channels{s} (
    channel_id text NOT NULL, workspace_id text NOT NULL, name text, kind text NOT NULL, private boolean NOT NULL,
    topic text NOT NULL, archived boolean NOT NULL DEFAULT false, general boolean NOT NULL DEFAULT false,
    created_by text NOT NULL, created_at timestamptz NOT NULL, member_count integer NOT NULL DEFAULT 0,
    CONSTRAINT channels{s}_pkey PRIMARY KEY (channel_id)
);
-- In id order, the order lists page in: a page reads its own rows, not every channel of the workspace.
CREATE INDEX IF NOT EXISTS channels{s}_workspace_order_idx ON channels{s} (workspace_id, channel_id);
DROP INDEX IF EXISTS channels{s}_workspace_idx;
CREATE TABLE IF NOT EXISTS channel_members{s} (
    channel_id text NOT NULL, user_id text NOT NULL, joined_at timestamptz NOT NULL,
    last_read_seq bigint NOT NULL DEFAULT 0,
    CONSTRAINT channel_members{s}_pkey PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX IF NOT EXISTS channel_members{s}_user_idx ON channel_members{s} (user_id);
"""

_SQL = {
    "ws": "INSERT INTO workspaces{s} VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
    "invite": "INSERT INTO invites{s} (code_hash, workspace_id, role, expires_at, created_by) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
    # A channel's member_count counts its members who are in the workspace now, as its member
    # list shows them: leaving the workspace takes someone out of every count there, coming back
    # (whose channel memberships were kept) puts them back in.
    "joined": "WITH j AS (INSERT INTO workspace_members{s} VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role"
    " RETURNING workspace_id, user_id, (xmax = 0) AS fresh)"
    " UPDATE channels{s} c SET member_count = c.member_count + 1 FROM channel_members{s} cm, j"
    " WHERE j.fresh AND cm.user_id = j.user_id AND cm.channel_id = c.channel_id"
    " AND c.workspace_id = j.workspace_id",
    "used": "UPDATE invites{s} SET used_by = %s, used_at = %s WHERE code_hash = %s AND used_by IS NULL",
    "role": "UPDATE workspace_members{s} SET role = %s WHERE workspace_id = %s AND user_id = %s",
    "left": "WITH gone AS (DELETE FROM workspace_members{s} WHERE workspace_id = %s AND user_id = %s"
    " RETURNING workspace_id, user_id)"
    " UPDATE channels{s} c SET member_count = c.member_count - 1 FROM channel_members{s} cm, gone g"
    " WHERE cm.user_id = g.user_id AND cm.channel_id = c.channel_id AND c.workspace_id = g.workspace_id",
    "channel": "INSERT INTO channels{s} (channel_id, workspace_id, name, kind, private, topic, general, created_by,"
    " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
    "renamed": "UPDATE channels{s} SET name = %s WHERE channel_id = %s",
    "topic": "UPDATE channels{s} SET topic = %s WHERE channel_id = %s",
    "archived": "UPDATE channels{s} SET archived = true WHERE channel_id = %s",
    "ch_joined": "WITH added AS (INSERT INTO channel_members{s} (channel_id, user_id, joined_at) VALUES (%s, %s, %s)"
    " ON CONFLICT DO NOTHING RETURNING channel_id, user_id)"
    " UPDATE channels{s} c SET member_count = c.member_count + 1 FROM added a"
    " WHERE c.channel_id = a.channel_id AND EXISTS (SELECT 1 FROM workspace_members{s} wm"
    "   WHERE wm.workspace_id = c.workspace_id AND wm.user_id = a.user_id)",
    "ch_left": "WITH gone AS (DELETE FROM channel_members{s} WHERE channel_id = %s AND user_id = %s"
    " RETURNING channel_id, user_id)"
    " UPDATE channels{s} c SET member_count = c.member_count - 1 FROM gone g"
    " WHERE c.channel_id = g.channel_id AND EXISTS (SELECT 1 FROM workspace_members{s} wm"
    "   WHERE wm.workspace_id = c.workspace_id AND wm.user_id = g.user_id)",
    "read": "UPDATE channel_members{s} SET last_read_seq = greatest(last_read_seq, %s)"
    " WHERE channel_id = %s AND user_id = %s",
}


def _id_of(stream_id: str, prefix: str) -> str:
    return stream_id.removeprefix(prefix)


def rows_for(recorded: RecordedEvent) -> tuple[str, tuple[Any, ...]] | None:
    """The statement (a key of ``_SQL``) and parameters that apply one event, or None."""
    at, e = recorded.recorded_at, recorded.event
    wsid = _id_of(recorded.stream_id, "workspace-")
    chid = _id_of(recorded.stream_id, "channel-")
    match e:
        case ws.WorkspaceCreated():
            return "ws", (e.workspace_id, e.name, e.owner_id, at)
        case ws.InviteCreated():
            return "invite", (e.code_hash, wsid, e.role, e.expires_at, e.created_by)
        case ws.MemberJoined():
            return "joined", (wsid, e.user_id, e.role, at)
        case ws.RoleChanged():
            return "role", (e.role, wsid, e.user_id)
        case ws.MemberLeft():
            return "left", (wsid, e.user_id)
        case ch.ChannelCreated():
            return "channel", (
                e.channel_id,
                e.workspace_id,
                e.name,
                e.kind,
                e.private,
                e.topic,
                e.general,
                e.created_by,
                at,
            )
        case ch.ChannelRenamed():
            return "renamed", (e.name, chid)
        case ch.ChannelTopicSet():
            return "topic", (e.topic, chid)
        case ch.ChannelArchived():
            return "archived", (chid,)
        case ch.ChannelMemberJoined():
            return "ch_joined", (chid, e.user_id, at)
        case ch.ChannelMemberLeft():
            return "ch_left", (chid, e.user_id)
        case ReadMarkerMoved():
            return "read", (e.seq, e.channel_id, _id_of(recorded.stream_id, "user-"))
    return None


class Workspaces:
    name = "workspaces"
    tables: Sequence[str] = ("workspaces", "workspace_members", "invites", "channels", "channel_members")

    def schema(self, suffix: str = "") -> str:
        return _SCHEMA.format(s=suffix)

    async def handle(self, conn: psycopg.AsyncConnection, events: Sequence[RecordedEvent], suffix: str = "") -> None:
        await run_statements(conn, self.statements(events, suffix))

    def statements(self, events: Sequence[RecordedEvent], suffix: str = "") -> list[Statement]:
        # One statement per event, in log order: a join and a leave in one batch must apply in turn.
        statements: list[Statement] = []
        for recorded in events:
            found = rows_for(recorded)
            if found is None:
                continue
            key, params = found
            statements.append((_SQL[key].format(s=suffix), params))
            if isinstance(recorded.event, ws.MemberJoined) and recorded.event.code_hash:
                statements.append(
                    (
                        _SQL["used"].format(s=suffix),
                        (recorded.event.user_id, recorded.recorded_at, recorded.event.code_hash),
                    )
                )
        return statements
