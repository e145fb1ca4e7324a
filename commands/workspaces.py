"""Workspaces, invites, roles: the command side of *Workspaces and members* in API.md.

Creating a workspace writes, in one atomic ``append_many``, the workspace and its owner, the
``#general`` name claim, and ``#general`` with its owner as member: there is never a workspace
without ``#general``. An invite code is ``{workspace_id}.{random}``: the workspace part says
which stream to load on accept (knowing it grants nothing), and only the code's sha256 is logged.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from commands.shell import CommandShell, Context, Entry, Outcome
from domain import access
from domain import channel as ch
from domain import workspace as ws
from domain.decider import Decider
from domain.errors import Conflict, NotFound
from domain.session import Principal
from infra.http import with_position
from infra.ids import new_id

KEYED_IDS = uuid.UUID("8a1d6c3e-2b4f-4e7a-9c5d-1f0e3b2a4c68")


def context(request: Request, principal: Principal) -> Context:
    return Context(actor_id=principal.user_id, now=dt.datetime.now(dt.UTC),
                   correlation_id=request.headers.get("x-request-id"),
                   idempotency_key=request.headers.get("idempotency-key"))


def new_id_for(ctx: Context, purpose: str) -> str:
    """A fresh id, or under an Idempotency-Key the same id for the same caller, key and purpose,
    so a repeated create lands on the same streams and is answered from them."""
    if ctx.idempotency_key is None:
        return new_id()
    return str(uuid.uuid5(KEYED_IDS, f"{ctx.actor_id}\n{ctx.idempotency_key}\n{purpose}"))


async def stream_position(shell: CommandShell, decider: Decider[Any, Any], stream: str) -> int:
    """The position of the stream's last event: the answer of a command that changed nothing."""
    return (await shell.load(decider, stream)).last_position


async def position_of(shell: CommandShell, decider: Decider[Any, Any], stream: str, outcome: Outcome[Any]) -> int:
    return outcome.position or await stream_position(shell, decider, stream)


def invite_code(workspace_id: str) -> str:
    return f"{workspace_id}.{secrets.token_urlsafe(24)}"


def workspace_of_code(code: str) -> str:
    workspace_id, dot, _ = code.partition(".")
    if not dot or not access.looks_like_id(workspace_id):
        raise NotFound("no such invite; ask for a new one")
    return workspace_id


def workspace_stream(workspace_id: str) -> str:
    """The workspace's stream; an id that cannot exist is 404 like one the caller may not see."""
    if not access.looks_like_id(workspace_id):
        raise NotFound("no such workspace")
    return ws.workspace_stream(workspace_id)


class CreateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str


class CreatedOut(msgspec.Struct, frozen=True):
    id: str
    name: str
    position: int
    general_channel_id: str


class InviteBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str = "member"
    expires_in_s: int = int(ws.DEFAULT_INVITE_TTL.total_seconds())


class InviteOut(msgspec.Struct, frozen=True):
    code: str
    role: str
    expires_at: dt.datetime
    position: int


class AcceptedOut(msgspec.Struct, frozen=True):
    workspace_id: str
    role: str
    position: int


class RoleBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str


class RoleOut(msgspec.Struct, frozen=True):
    user_id: str
    role: str
    position: int


class PositionOut(msgspec.Struct, frozen=True):
    position: int


class WorkspaceCommands(Controller):
    path = "/workspaces"
    tags = ["workspaces"]

    @post("/", status_code=201, operation_id="createWorkspace")
    async def create(self, request: Request, data: JSONBody[CreateBody], principal: NamedDependency[Principal],
                     shell: NamedDependency[CommandShell]) -> Response[CreatedOut]:
        ctx = context(request, principal)
        wsid, general = new_id_for(ctx, "workspace"), new_id_for(ctx, "general")
        me = principal.user_id
        position, states = await shell.decide_many([
            (ws.WORKSPACE, ws.workspace_stream(wsid), [ws.CreateWorkspace(wsid, data.name, me, general)]),
            (ch.CHANNEL, ch.channel_stream(general),
             [ch.CreateChannel(general, wsid, ch.GENERAL, me, "owner", general=True)]),
            (ch.NAME, ch.name_stream(wsid, ch.GENERAL), [ch.Claim(general)]),
        ], ctx)
        body = CreatedOut(wsid, states[0].name, position, general)
        return with_position(Response(body, status_code=201), position)

    @post("/{workspace_id:str}/invites", status_code=201, operation_id="createInvite")
    async def invite(self, request: Request, workspace_id: FromPath[str], data: JSONBody[InviteBody],
                     principal: NamedDependency[Principal], shell: NamedDependency[CommandShell]) -> Response[InviteOut]:
        ctx = context(request, principal)
        code = invite_code(workspace_id)
        expires_at = ctx.now + dt.timedelta(seconds=max(0, min(data.expires_in_s, 10**8)))
        command = ws.CreateInvite(principal.user_id, ws.invite_hash(code), data.role, expires_at, ctx.now)
        outcome = await shell.handle(ws.WORKSPACE, workspace_stream(workspace_id), command, ctx)
        if outcome.repeated:  # the first answer's code was never stored; a repeat cannot show it again
            raise Conflict("this Idempotency-Key made an invite already, and its code is shown once; "
                           "send a new key for a new code")
        body = InviteOut(code, data.role, expires_at, outcome.position)
        return with_position(Response(body, status_code=201), outcome.position)

    @patch("/{workspace_id:str}/members/{user_id:str}", operation_id="changeMemberRole")
    async def change_role(self, request: Request, workspace_id: FromPath[str], user_id: FromPath[str], data: JSONBody[RoleBody],
                          principal: NamedDependency[Principal],
                          shell: NamedDependency[CommandShell]) -> Response[RoleOut]:
        stream = workspace_stream(workspace_id)
        command = ws.ChangeRole(principal.user_id, user_id, data.role)
        outcome = await shell.handle(ws.WORKSPACE, stream, command, context(request, principal))
        position = await position_of(shell, ws.WORKSPACE, stream, outcome)
        return with_position(Response(RoleOut(user_id, outcome.state.members.get(user_id, data.role), position)), position)

    @delete("/{workspace_id:str}/members/{user_id:str}", status_code=200, operation_id="removeMember")
    async def remove(self, request: Request, workspace_id: FromPath[str], user_id: FromPath[str], principal: NamedDependency[Principal],
                     shell: NamedDependency[CommandShell]) -> Response[PositionOut]:
        command = ws.RemoveMember(principal.user_id, user_id)
        outcome = await shell.handle(ws.WORKSPACE, workspace_stream(workspace_id), command,
                                     context(request, principal))
        return with_position(Response(PositionOut(outcome.position)), outcome.position)


class InviteCommands(Controller):
    path = "/invites"
    tags = ["workspaces"]

    @post("/{code:str}/accept", status_code=200, operation_id="acceptInvite")
    async def accept(self, request: Request, code: FromPath[str], principal: NamedDependency[Principal],
                     shell: NamedDependency[CommandShell]) -> Response[AcceptedOut]:
        ctx = context(request, principal)
        me, code_hash = principal.user_id, ws.invite_hash(code)
        stream = ws.workspace_stream(workspace_of_code(code))
        entries: list[Entry] = [(ws.WORKSPACE, stream, [ws.AcceptInvite(me, code_hash, ctx.now)])]
        before: ws.Workspace = (await shell.load(ws.WORKSPACE, stream)).state
        invited = before.invites.get(code_hash)
        if before.general_channel_id and invited and invited.role != "guest" and me not in before.members:
            # Members join #general with the invite, in the same append; guests see only what they are added to.
            entries.append((ch.CHANNEL, ch.channel_stream(before.general_channel_id), [ch.Join(me, invited.role)]))
        position, states = await shell.decide_many(entries, ctx)
        state: ws.Workspace = states[0]
        assert state.workspace_id is not None
        body = AcceptedOut(state.workspace_id, state.members.get(principal.user_id, ""), position)
        return with_position(Response(body), position)
