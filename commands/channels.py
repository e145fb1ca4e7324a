"""Channels, DMs, read markers: the command side of *Channels and direct messages* in API.md.

Every channel command loads the channel (for its workspace), then the caller's role in that
workspace, and hands both to the CHANNEL decider, which applies ``domain/access.py``. The role is
read, not locked: a role change racing a channel command may land on either side of it.
Creating and renaming claim the name in the same atomic append as the channel event.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any

import msgspec
import psycopg
from litestar import Controller, Request, Response, delete, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from psycopg_pool import AsyncConnectionPool

from commands.shell import CommandShell, Context
from commands.workspaces import (
    PositionOut,
    context,
    new_id_for,
    position_of,
    stream_position,
    workspace_stream,
)
from domain import access
from domain import channel as ch
from domain import readstate as rs
from domain import workspace as ws
from domain.errors import Forbidden, NotFound
from domain.session import Principal
from infra.consistency import ReadConsistency
from infra.http import with_position
from readapi.visibility import hidden_from_guest

UserIds = Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]],
                    msgspec.Meta(min_length=1, max_length=100)]

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


async def workspace_of(shell: CommandShell, workspace_id: str) -> ws.Workspace:
    return (await shell.load(ws.WORKSPACE, workspace_stream(workspace_id))).state


async def roles_seen_by(pool: AsyncConnectionPool, consistency: ReadConsistency, principal: Principal,
                        members: dict[str, str], workspace_id: str, people: Collection[str]) -> dict[str, str | None]:
    """Each of ``people`` -> their role in the workspace as the caller may know it: None for
    strangers and, when the caller is a guest, for the people a guest does not see
    (``readapi/visibility.guest_sees``, read from the read models as of the caller's position)."""
    roles = access.visible_roles(members, people)
    if members.get(principal.user_id) != "guest":
        return roles
    await consistency.wait(principal.since_position)
    async with pool.connection() as conn:
        hidden = await hidden_from_guest(conn, workspace_id, principal.user_id, sorted(people))
    return {u: None if u in hidden else r for u, r in roles.items()}


async def channel_and_role(shell: CommandShell, channel_id: str, user_id: str) -> tuple[ch.Channel, str | None]:
    if not access.looks_like_id(channel_id):
        raise NotFound("no such channel")
    channel: ch.Channel = (await shell.load(ch.CHANNEL, ch.channel_stream(channel_id))).state
    if channel.workspace_id is None:
        raise NotFound("no such channel")
    role = access.role_of((await workspace_of(shell, channel.workspace_id)).members, user_id)
    if not access.can_see_channel(role, channel, user_id):
        raise NotFound("no such channel")
    return channel, role


async def run(shell: CommandShell, channel_id: str, command: Any, ctx: Context) -> tuple[int, ch.Channel]:
    stream = ch.channel_stream(channel_id)
    outcome = await shell.handle(ch.CHANNEL, stream, command, ctx)
    return await position_of(shell, ch.CHANNEL, stream, outcome), outcome.state


def answered(position: int, status_code: int = 200) -> Response[PositionOut]:
    return with_position(Response(PositionOut(position), status_code=status_code), position)


class WorkspaceChannelCommands(Controller):
    path = "/workspaces/{workspace_id:str}"
    tags = ["channels"]

    @post("/channels", status_code=201, operation_id="createChannel")
    async def create(self, request: Request, workspace_id: FromPath[str], data: JSONBody[CreateBody],
                     principal: NamedDependency[Principal],
                     shell: NamedDependency[CommandShell]) -> Response[CreatedOut]:
        ctx = context(request, principal)
        me = principal.user_id
        role = access.role_of((await workspace_of(shell, workspace_id)).members, me)
        if role is None:
            raise NotFound("no such workspace")
        channel_id = new_id_for(ctx, "channel")
        create = ch.CreateChannel(channel_id, workspace_id, data.name, me, role, data.private, data.topic)
        position, states = await shell.decide_many([
            (ch.CHANNEL, ch.channel_stream(channel_id), [create]),
            (ch.NAME, ch.name_stream(workspace_id, ch.check_name(data.name)), [ch.Claim(channel_id)]),
        ], ctx)
        body = CreatedOut(channel_id, states[0].name, "channel", position)
        return with_position(Response(body, status_code=201), position)

    @post("/dms", status_code=201, operation_id="openDirectMessage")
    async def open_dm(self, request: Request, workspace_id: FromPath[str], data: JSONBody[UsersBody],
                      principal: NamedDependency[Principal], shell: NamedDependency[CommandShell],
                      pool: NamedDependency[AsyncConnectionPool],
                      consistency: NamedDependency[ReadConsistency]) -> Response[CreatedOut]:
        me = principal.user_id
        members = (await workspace_of(shell, workspace_id)).members
        people = frozenset(data.user_ids) | {me}
        channel_id = ch.dm_channel_id(workspace_id, people)
        roles = await roles_seen_by(pool, consistency, principal, members, workspace_id, people)
        command = ch.CreateDM(channel_id, workspace_id, me, frozenset(data.user_ids), roles)
        stream = ch.channel_stream(channel_id)
        outcome = await shell.handle(ch.CHANNEL, stream, command, context(request, principal))
        position = await position_of(shell, ch.CHANNEL, stream, outcome)
        body = CreatedOut(channel_id, None, outcome.state.kind, position)
        created = bool(outcome.events) and not outcome.repeated
        return with_position(Response(body, status_code=201 if created else 200), position)


class ChannelCommands(Controller):
    path = "/channels/{channel_id:str}"
    tags = ["channels"]

    @patch("/", operation_id="updateChannel")
    async def update(self, request: Request, channel_id: FromPath[str], data: JSONBody[UpdateBody],
                     principal: NamedDependency[Principal],
                     shell: NamedDependency[CommandShell]) -> Response[UpdatedOut]:
        me = principal.user_id
        channel, role = await channel_and_role(shell, channel_id, me)
        commands: list[Any] = []
        entries: list[Any] = []
        if isinstance(data.name, str):
            commands.append(ch.Rename(me, role, data.name))
        if isinstance(data.topic, str):
            commands.append(ch.SetTopic(me, role, data.topic))
        entries.append((ch.CHANNEL, ch.channel_stream(channel_id), commands))
        if isinstance(data.name, str) and access.can_see_channel(role, channel, me) and channel.kind == "channel":
            new = ch.check_name(data.name)
            if new != channel.name and channel.workspace_id and channel.name:
                entries.append((ch.NAME, ch.name_stream(channel.workspace_id, new), [ch.Claim(channel_id)]))
                entries.append((ch.NAME, ch.name_stream(channel.workspace_id, channel.name), [ch.Release(channel_id)]))
        position, states = await shell.decide_many(entries, context(request, principal))
        state: ch.Channel = states[0]
        return with_position(Response(UpdatedOut(channel_id, state.name, state.topic, position)), position)

    @post("/archive", status_code=200, operation_id="archiveChannel")
    async def archive(self, request: Request, channel_id: FromPath[str], principal: NamedDependency[Principal],
                      shell: NamedDependency[CommandShell]) -> Response[PositionOut]:
        _, role = await channel_and_role(shell, channel_id, principal.user_id)
        position, _ = await run(shell, channel_id, ch.Archive(principal.user_id, role), context(request, principal))
        return answered(position)

    @post("/join", status_code=200, operation_id="joinChannel")
    async def join(self, request: Request, channel_id: FromPath[str], principal: NamedDependency[Principal],
                   shell: NamedDependency[CommandShell]) -> Response[PositionOut]:
        _, role = await channel_and_role(shell, channel_id, principal.user_id)
        position, _ = await run(shell, channel_id, ch.Join(principal.user_id, role), context(request, principal))
        return answered(position)

    @post("/leave", status_code=200, operation_id="leaveChannel")
    async def leave(self, request: Request, channel_id: FromPath[str], principal: NamedDependency[Principal],
                    shell: NamedDependency[CommandShell]) -> Response[PositionOut]:
        _, role = await channel_and_role(shell, channel_id, principal.user_id)
        position, _ = await run(shell, channel_id, ch.Leave(principal.user_id, role), context(request, principal))
        return answered(position)

    @post("/members", status_code=200, operation_id="addChannelMembers")
    async def add_members(self, request: Request, channel_id: FromPath[str], data: JSONBody[UsersBody],
                          principal: NamedDependency[Principal], shell: NamedDependency[CommandShell],
                          pool: NamedDependency[AsyncConnectionPool],
                          consistency: NamedDependency[ReadConsistency]) -> Response[PositionOut]:
        channel, role = await channel_and_role(shell, channel_id, principal.user_id)
        assert channel.workspace_id is not None
        members = (await workspace_of(shell, channel.workspace_id)).members
        roles = await roles_seen_by(pool, consistency, principal, members, channel.workspace_id, set(data.user_ids))
        command = ch.AddMembers(principal.user_id, role, roles)
        position, _ = await run(shell, channel_id, command, context(request, principal))
        return answered(position)

    @delete("/members/{user_id:str}", status_code=200, operation_id="removeChannelMember")
    async def remove_member(self, request: Request, channel_id: FromPath[str], user_id: FromPath[str],
                            principal: NamedDependency[Principal],
                            shell: NamedDependency[CommandShell]) -> Response[PositionOut]:
        _, role = await channel_and_role(shell, channel_id, principal.user_id)
        command = ch.RemoveMember(principal.user_id, role, user_id)
        position, _ = await run(shell, channel_id, command, context(request, principal))
        return answered(position)

    @post("/read", status_code=200, operation_id="markChannelRead")
    async def read(self, request: Request, channel_id: FromPath[str], data: JSONBody[ReadBody], principal: NamedDependency[Principal],
                   shell: NamedDependency[CommandShell],
                   pool: NamedDependency[AsyncConnectionPool]) -> Response[ReadOut]:
        me = principal.user_id
        channel, role = await channel_and_role(shell, channel_id, me)
        if not access.is_channel_member(role, channel, me):
            raise Forbidden("join the channel to keep a read marker in it")
        command = rs.MoveReadMarker(channel_id, data.seq, await last_seq(pool, channel_id))
        stream = rs.user_stream(me)
        outcome = await shell.handle(rs.READ_STATE, stream, command, context(request, principal))
        position = outcome.position or await stream_position(shell, rs.READ_STATE, stream)
        body = ReadOut(channel_id, outcome.state.marker(channel_id), position)
        return with_position(Response(body), position)


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
