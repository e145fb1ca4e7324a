"""Channels, DMs, read markers: the command side of *Channels and direct messages* in API.md.

Every channel command loads the channel (for its workspace), then the caller's role in that
workspace, and hands both to the CHANNEL decider, which applies ``domain/access.py``. The role is
read, not locked: a role change racing a channel command may land on either side of it.
Creating and renaming claim the name in the same atomic append as the channel event.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Annotated, Any

import msgspec
import psycopg
from litestar import Controller, Request, Response, delete, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from psycopg_pool import AsyncConnectionPool

from commands.access import Access, channel_access, workspace_of, workspace_stream_of
from commands.handlers import context, dispatch, entry
from commands.shell import CommandShell, Decided, Entry, Plan
from commands.workspaces import PositionOut, new_id_for
from domain import access
from domain import channel as ch
from domain import readstate as rs
from domain.errors import Forbidden, NotFound
from domain.session import Principal
from infra.http import with_position
from projections.consistency import ReadConsistency
from projections.visibility import hidden_from_guest

UserIds = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]], msgspec.Meta(min_length=1, max_length=100)
]

_LAST_SEQ = "SELECT last_seq FROM channel_seqs WHERE channel_id = %s"


class CreateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    private: bool = False
    topic: str = ""


class CreatedOut(msgspec.Struct, frozen=True):
    id: str
    name: str | None
    kind: str
    position: int


class UpdateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    topic: str | msgspec.UnsetType = msgspec.UNSET


class UpdatedOut(msgspec.Struct, frozen=True):
    id: str
    name: str | None
    topic: str
    position: int


class UsersBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_ids: UserIds


class ReadBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seq: int


class ReadOut(msgspec.Struct, frozen=True):
    channel_id: str
    last_read_seq: int
    position: int


async def roles_seen_by(
    pool: AsyncConnectionPool,
    consistency: ReadConsistency,
    principal: Principal,
    members: Mapping[str, str],
    workspace_id: str,
    people: Collection[str],
) -> dict[str, str | None]:
    """Each of ``people`` -> their role in the workspace as the caller may know it: None for
    strangers and, when the caller is a guest, for the people a guest does not see
    (``projections/visibility.guest_sees``, read from the read models as of the caller's position)."""
    roles = access.visible_roles(members, people)
    if members.get(principal.user_id) != "guest":
        return roles
    await consistency.wait(principal.since_position)
    async with pool.connection() as conn:
        hidden = await hidden_from_guest(conn, workspace_id, principal.user_id, sorted(people))
    return {u: None if u in hidden else r for u, r in roles.items()}


def answered(decided: Decided, status_code: int = 200) -> Response[PositionOut]:
    return with_position(Response(PositionOut(decided.position), status_code=status_code), decided.position)


class WorkspaceChannelCommands(Controller):
    path = "/workspaces/{workspace_id:str}"
    tags = ["channels"]

    @post("/channels", status_code=201, operation_id="createChannel")
    async def create(
        self,
        request: Request,
        workspace_id: FromPath[str],
        data: JSONBody[CreateBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[CreatedOut]:
        me = principal.user_id
        ctx = context(request, me, data)
        channel_id = new_id_for(ctx, "channel")

        async def plan(_: bool) -> Plan:
            role = access.role_of((await workspace_of(shell, workspace_id)).members, me)
            if role is None:
                raise NotFound("no such workspace")
            create = ch.CreateChannel(channel_id, workspace_id, data.name, me, role, data.private, data.topic)
            return Plan(
                (entry([create], channel_id), entry([ch.Claim(channel_id)], workspace_id, ch.check_name(data.name))),
                ctx,
            )

        decided = await shell.run(plan)
        body = CreatedOut(channel_id, decided.states[0].name, "channel", decided.position)
        return with_position(Response(body, status_code=201), decided.position)

    @post("/dms", status_code=201, operation_id="openDirectMessage")
    async def open_dm(
        self,
        request: Request,
        workspace_id: FromPath[str],
        data: JSONBody[UsersBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> Response[CreatedOut]:
        me = principal.user_id
        workspace_stream_of(workspace_id)  # 404 for an id that cannot be a workspace
        people = frozenset(data.user_ids) | {me}
        channel_id = ch.dm_channel_id(workspace_id, people)

        async def make(_: None) -> ch.CreateDM:
            members = (await workspace_of(shell, workspace_id)).members
            roles = await roles_seen_by(pool, consistency, principal, members, workspace_id, people)
            return ch.CreateDM(channel_id, workspace_id, me, frozenset(data.user_ids), roles)

        decided = await dispatch(shell, context(request, me, data), ch.CreateDM, channel_id, make)
        body = CreatedOut(channel_id, None, decided.states[0].kind, decided.position)
        created = bool(decided.events[0]) and not decided.repeated
        return with_position(Response(body, status_code=201 if created else 200), decided.position)


class ChannelCommands(Controller):
    path = "/channels/{channel_id:str}"
    tags = ["channels"]

    @patch("/", operation_id="updateChannel")
    async def update(
        self,
        request: Request,
        channel_id: FromPath[str],
        data: JSONBody[UpdateBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[UpdatedOut]:
        me = principal.user_id

        async def plan(_: bool) -> Plan:
            found = await channel_access(shell, channel_id, me)
            return Plan(update_entries(found, channel_id, me, data), ctx)

        ctx = context(request, me, data)
        decided = await shell.run(plan)
        state: ch.Channel = decided.states[0]
        body = UpdatedOut(channel_id, state.name, state.topic, decided.position)
        return with_position(Response(body), decided.position)

    @post("/archive", status_code=200, operation_id="archiveChannel")
    async def archive(
        self,
        request: Request,
        channel_id: FromPath[str],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[PositionOut]:
        me = principal.user_id
        return answered(
            await dispatch(
                shell, context(request, me), ch.Archive, channel_id, lambda found: ch.Archive(me, found.role)
            )
        )

    @post("/join", status_code=200, operation_id="joinChannel")
    async def join(
        self,
        request: Request,
        channel_id: FromPath[str],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[PositionOut]:
        me = principal.user_id
        return answered(
            await dispatch(shell, context(request, me), ch.Join, channel_id, lambda found: ch.Join(me, found.role))
        )

    @post("/leave", status_code=200, operation_id="leaveChannel")
    async def leave(
        self,
        request: Request,
        channel_id: FromPath[str],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[PositionOut]:
        me = principal.user_id
        return answered(
            await dispatch(shell, context(request, me), ch.Leave, channel_id, lambda found: ch.Leave(me, found.role))
        )

    @post("/members", status_code=200, operation_id="addChannelMembers")
    async def add_members(
        self,
        request: Request,
        channel_id: FromPath[str],
        data: JSONBody[UsersBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> Response[PositionOut]:
        me = principal.user_id

        async def make(found: Access) -> ch.AddMembers:
            assert found.channel.workspace_id is not None
            people = set(data.user_ids)
            roles = await roles_seen_by(pool, consistency, principal, found.roles, found.channel.workspace_id, people)
            return ch.AddMembers(me, found.role, roles)

        return answered(await dispatch(shell, context(request, me, data), ch.AddMembers, channel_id, make))

    @delete("/members/{user_id:str}", status_code=200, operation_id="removeChannelMember")
    async def remove_member(
        self,
        request: Request,
        channel_id: FromPath[str],
        user_id: FromPath[str],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[PositionOut]:
        me = principal.user_id
        return answered(
            await dispatch(
                shell,
                context(request, me),
                ch.RemoveMember,
                channel_id,
                lambda found: ch.RemoveMember(me, found.role, user_id),
            )
        )

    @post("/read", status_code=200, operation_id="markChannelRead")
    async def read(
        self,
        request: Request,
        channel_id: FromPath[str],
        data: JSONBody[ReadBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
        pool: NamedDependency[AsyncConnectionPool],
    ) -> Response[ReadOut]:
        me = principal.user_id

        async def make(found: Access) -> rs.MoveReadMarker:
            if not access.is_channel_member(found.role, found.channel, me):
                raise Forbidden("join the channel to keep a read marker in it")
            return rs.MoveReadMarker(channel_id, data.seq, await last_seq(pool, channel_id))

        decided = await dispatch(shell, context(request, me, data), rs.MoveReadMarker, channel_id, make, on=me)
        body = ReadOut(channel_id, decided.states[0].marker(channel_id), decided.position)
        return with_position(Response(body), decided.position)


def update_entries(found: Access, channel_id: str, me: str, data: UpdateBody) -> list[Entry]:
    """The channel's rename and topic, and for a rename the new name's claim and the old one's
    release, in the same append."""
    channel, role = found.channel, found.role
    commands: list[Any] = []
    if isinstance(data.name, str):
        commands.append(ch.Rename(me, role, data.name))
    if isinstance(data.topic, str):
        commands.append(ch.SetTopic(me, role, data.topic))
    entries: list[Entry] = [(ch.CHANNEL, ch.channel_stream(channel_id), commands)]
    if isinstance(data.name, str) and channel.kind == "channel":
        new = ch.check_name(data.name)
        if new != channel.name and channel.workspace_id and channel.name:
            entries.append(entry([ch.Claim(channel_id)], channel.workspace_id, new))
            entries.append(entry([ch.Release(channel_id)], channel.workspace_id, channel.name))
    return entries


async def last_seq(pool: AsyncConnectionPool, channel_id: str) -> int:
    """The channel's last seq as the ``messages`` projection has it (0 before any message). Read
    here, on the command side, because seqs are given in log order by that projection."""
    async with pool.connection() as conn:
        try:
            cur = await conn.execute(_LAST_SEQ, (channel_id,))
        except psycopg.errors.UndefinedTable:  # the messages projection has not started yet
            return 0
        row = await cur.fetchone()
    return int(row[0]) if row else 0
