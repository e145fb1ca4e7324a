"""Channel lists, one channel, channel members: the query side of *Channels and direct messages*.

Read models: ``channels`` and ``channel_members`` (projection ``workspaces``) and ``channel_seqs``
(projection ``messages``). Only what ``projections/visibility.py`` lets the caller see; the rest is
404. ``unread_count = channel_seqs.last_seq - channel_members.last_read_seq`` per row, so a list
costs the same whatever the channels' sizes. ``mention_count`` is the member's unread notifications
of the counted kinds in the channel (``notification_counts``, projection ``notifications``): one row
per (channel, user), kept current by the projection, so it is O(1) per row too.
Lists are ordered by channel id (creation order) and page with ``after`` = the last id seen.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, Parameter
from psycopg_pool import AsyncConnectionPool

from domain.access import looks_like_id
from domain.errors import NotFound
from domain.session import Principal
from projections.consistency import ReadConsistency
from projections.members import channel_member_page
from projections.visibility import VISIBLE_FROM, VISIBLE_WHERE, channel_visible_to, workspace_role
from readapi.edge import services_of

Limit = Annotated[int, Parameter(ge=1, le=200)]

_COLUMNS = """
c.channel_id, c.name, c.kind, c.private, c.topic, cm.user_id IS NOT NULL,
coalesce(s.last_seq, 0), coalesce(cm.last_read_seq, 0),
CASE WHEN cm.user_id IS NULL THEN 0 ELSE greatest(coalesce(s.last_seq, 0) - cm.last_read_seq, 0) END,
CASE WHEN cm.user_id IS NULL THEN 0 ELSE coalesce(nc.mention_count, 0) END, c.workspace_id, c.archived, c.member_count
"""
_COUNTS = "LEFT JOIN notification_counts nc ON nc.channel_id = c.channel_id AND nc.user_id = %(user_id)s"
_LIST = f"""
SELECT {_COLUMNS} FROM {VISIBLE_FROM} LEFT JOIN channel_seqs s ON s.channel_id = c.channel_id {_COUNTS}
WHERE c.workspace_id = %(workspace_id)s AND {VISIBLE_WHERE} AND c.channel_id > %(after)s
ORDER BY c.channel_id LIMIT %(limit)s
"""
_ONE = f"""
SELECT {_COLUMNS} FROM {VISIBLE_FROM} LEFT JOIN channel_seqs s ON s.channel_id = c.channel_id {_COUNTS}
WHERE c.channel_id = %(channel_id)s AND {VISIBLE_WHERE}
"""


class ChannelOut(msgspec.Struct, frozen=True):
    id: str
    name: str | None
    kind: str
    private: bool
    topic: str
    member: bool
    last_seq: int
    last_read_seq: int
    unread_count: int
    mention_count: int
    workspace_id: str
    archived: bool
    member_count: int


class ChannelsOut(msgspec.Struct, frozen=True):
    items: list[ChannelOut]
    next_cursor: str | None


class ChannelMemberOut(msgspec.Struct, frozen=True):
    user_id: str
    display_name: str
    role: str


class ChannelMembersOut(msgspec.Struct, frozen=True):
    items: list[ChannelMemberOut]
    next_cursor: str | None


class WorkspaceChannelQueries(Controller):
    path = "/workspaces/{workspace_id:str}/channels"
    tags = ["channels"]

    @get("/", operation_id="listChannels")
    async def list_channels(
        self, request: Request, workspace_id: FromPath[str], limit: Limit = 50, after: FromQuery[str] = ""
    ) -> ChannelsOut:
        # A hot read: no dependency injection (see readapi/edge.py).
        services = services_of(request)
        principal = await services.authenticate(request.headers.get("authorization"))
        await services.consistency.wait(principal.since_position)
        if not looks_like_id(workspace_id):
            raise NotFound("no such workspace")
        params = {"workspace_id": workspace_id, "user_id": principal.user_id, "after": after, "limit": limit}
        async with services.pool.connection() as conn:
            cur = await conn.execute(_LIST, params)  # joins the caller's membership: none, no rows
            items = [ChannelOut(*row) for row in await cur.fetchall()]
            # Only an empty page needs asking whether the caller is in the workspace at all.
            if not items and await workspace_role(conn, workspace_id, principal.user_id) is None:
                raise NotFound("no such workspace")
        return ChannelsOut(items, items[-1].id if len(items) == limit else None)


class ChannelQueries(Controller):
    path = "/channels/{channel_id:str}"
    tags = ["channels"]

    @get("/", operation_id="getChannel")
    async def one(
        self,
        channel_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> ChannelOut:
        await consistency.wait(principal.since_position)
        if not looks_like_id(channel_id):
            raise NotFound("no such channel")
        async with pool.connection() as conn:
            cur = await conn.execute(_ONE, {"channel_id": channel_id, "user_id": principal.user_id})
            row = await cur.fetchone()
        if row is None:
            raise NotFound("no such channel")
        return ChannelOut(*row)

    @get("/members", operation_id="listChannelMembers")
    async def members(
        self,
        channel_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
        limit: Limit = 50,
        after: FromQuery[str] = "",
    ) -> ChannelMembersOut:
        await consistency.wait(principal.since_position)
        if not looks_like_id(channel_id):
            raise NotFound("no such channel")
        async with pool.connection() as conn:
            if await channel_visible_to(conn, channel_id, principal.user_id) is None:
                raise NotFound("no such channel")
            items = [ChannelMemberOut(*row) for row in await channel_member_page(conn, channel_id, after, limit)]
        return ChannelMembersOut(items, items[-1].user_id if len(items) == limit else None)
