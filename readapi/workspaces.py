"""The caller's workspaces and a workspace's members: the query side of *Workspaces and members*
(read models: ``workspaces``, ``workspace_members`` of projection ``workspaces``, ``users`` of
``accounts``, read by ``projections/members.py``). A workspace the caller is not in is 404; a
guest's member list holds only the people they see (``projections/visibility.guest_sees``)."""

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
from projections.consistency import ReadConsistency
from projections.members import member_page, workspace_of_user, workspaces_of_user
from projections.visibility import workspace_role

Limit = Annotated[int, Parameter(ge=1, le=200)]


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
    async def mine(
        self,
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> WorkspacesOut:
        await consistency.wait(principal.since_position)
        async with pool.connection() as conn:
            return WorkspacesOut([WorkspaceOut(*row) for row in await workspaces_of_user(conn, principal.user_id)])

    @get("/{workspace_id:str}", operation_id="getWorkspace")
    async def one(
        self,
        workspace_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> WorkspaceOut:
        await consistency.wait(principal.since_position)
        if not looks_like_id(workspace_id):
            raise NotFound("no such workspace")
        async with pool.connection() as conn:
            row = await workspace_of_user(conn, principal.user_id, workspace_id)
        if row is None:
            raise NotFound("no such workspace")
        return WorkspaceOut(*row)

    @get("/{workspace_id:str}/members", operation_id="listWorkspaceMembers")
    async def members(
        self,
        workspace_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
        limit: Limit = 50,
        after: FromQuery[str] = "",
    ) -> MembersOut:
        await consistency.wait(principal.since_position)
        if not looks_like_id(workspace_id):
            raise NotFound("no such workspace")
        async with pool.connection() as conn:
            role = await workspace_role(conn, workspace_id, principal.user_id)
            if role is None:
                raise NotFound("no such workspace")
            guest = principal.user_id if role == "guest" else None
            items = [MemberOut(*row) for row in await member_page(conn, workspace_id, after, limit, guest)]
        return MembersOut(items, items[-1].user_id if len(items) == limit else None)
