"""The caller's workspaces and a workspace's members: the query side of *Workspaces and members*
(read models: ``workspaces``, ``workspace_members`` of projection ``workspaces``, ``users`` of
``accounts``). A workspace the caller is not in is 404; a guest's member list holds only the
people they see (``readapi/visibility.guest_sees``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, Parameter
from psycopg_pool import AsyncConnectionPool

from domain.access import looks_like_id
from domain.errors import NotFound
from domain.session import Principal
from infra.consistency import ReadConsistency
from readapi.visibility import GUEST_SEES, workspace_role

Limit = Annotated[int, Parameter(ge=1, le=200)]

_MINE = """
SELECT w.workspace_id, w.name, m.role, w.created_at FROM workspace_members m
JOIN workspaces w USING (workspace_id) WHERE m.user_id = %s ORDER BY w.workspace_id
"""
_ONE = """
SELECT w.workspace_id, w.name, m.role, w.created_at FROM workspace_members m
JOIN workspaces w USING (workspace_id) WHERE m.user_id = %s AND m.workspace_id = %s
"""
_MEMBERS = """
SELECT m.user_id, coalesce(u.display_name, ''), m.role FROM workspace_members m
LEFT JOIN users u USING (user_id)
WHERE m.workspace_id = %(workspace_id)s AND m.user_id > %(after)s {guest} ORDER BY m.user_id LIMIT %(limit)s
"""
_MEMBERS_ALL, _MEMBERS_FOR_GUEST = _MEMBERS.format(guest=""), _MEMBERS.format(guest=f"AND {GUEST_SEES}")


class WorkspaceOut(msgspec.Struct, frozen=True):
    id: str
    name: str
    role: str
    created_at: dt.datetime


class WorkspacesOut(msgspec.Struct, frozen=True):
    items: list[WorkspaceOut]


class MemberOut(msgspec.Struct, frozen=True):
    user_id: str
    display_name: str
    role: str


class MembersOut(msgspec.Struct, frozen=True):
    items: list[MemberOut]
    next_cursor: str | None


class WorkspaceQueries(Controller):
    path = "/workspaces"
    tags = ["workspaces"]

    @get("/", operation_id="listWorkspaces")
    async def mine(self, principal: NamedDependency[Principal], pool: NamedDependency[AsyncConnectionPool],
                   consistency: NamedDependency[ReadConsistency]) -> WorkspacesOut:
        await consistency.wait(principal.since_position)
        async with pool.connection() as conn:
            cur = await conn.execute(_MINE, (principal.user_id,))
            return WorkspacesOut([WorkspaceOut(*row) for row in await cur.fetchall()])

    @get("/{workspace_id:str}", operation_id="getWorkspace")
    async def one(self, workspace_id: FromPath[str], principal: NamedDependency[Principal],
                  pool: NamedDependency[AsyncConnectionPool],
                  consistency: NamedDependency[ReadConsistency]) -> WorkspaceOut:
        await consistency.wait(principal.since_position)
        if not looks_like_id(workspace_id):
            raise NotFound("no such workspace")
        async with pool.connection() as conn:
            cur = await conn.execute(_ONE, (principal.user_id, workspace_id))
            row = await cur.fetchone()
        if row is None:
            raise NotFound("no such workspace")
        return WorkspaceOut(*row)

    @get("/{workspace_id:str}/members", operation_id="listWorkspaceMembers")
    async def members(self, workspace_id: FromPath[str], principal: NamedDependency[Principal],
                      pool: NamedDependency[AsyncConnectionPool], consistency: NamedDependency[ReadConsistency],
                      limit: Limit = 50, after: FromQuery[str] = "") -> MembersOut:
        await consistency.wait(principal.since_position)
        if not looks_like_id(workspace_id):
            raise NotFound("no such workspace")
        async with pool.connection() as conn:
            role = await workspace_role(conn, workspace_id, principal.user_id)
            if role is None:
                raise NotFound("no such workspace")
            cur = await conn.execute(_MEMBERS_FOR_GUEST if role == "guest" else _MEMBERS_ALL,
                                     {"workspace_id": workspace_id, "after": after, "limit": limit,
                                      "viewer": principal.user_id})
            items = [MemberOut(*row) for row in await cur.fetchall()]
        return MembersOut(items, items[-1].user_id if len(items) == limit else None)
