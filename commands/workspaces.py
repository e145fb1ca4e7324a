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

import msgspec
from litestar import Controller, Request, Response, delete, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from commands.handlers import context, dispatch, entry
from commands.shell import CommandShell, Context, Entry, Plan
from domain import access
from domain import channel as ch
from domain import workspace as ws
from domain.errors import Conflict, NotFound
from domain.session import Principal
from infra.http import with_position
from infra.ids import new_id

KEYED_IDS = uuid.UUID("8a1d6c3e-2b4f-4e7a-9c5d-1f0e3b2a4c68")


def new_id_for(ctx: Context, purpose: str) -> str:
    """A fresh id, or under an Idempotency-Key the same id for the same caller, key and purpose,
    so a repeated create lands on the same streams and is answered from them."""
    if ctx.key is None:
        return new_id()
    return str(uuid.uuid5(KEYED_IDS, f"{ctx.key.record}\n{purpose}"))  # the record names the caller and the key


def invite_code(workspace_id: str) -> str:
    return f"{workspace_id}.{secrets.token_urlsafe(24)}"


def workspace_of_code(code: str) -> str:
    workspace_id, dot, _ = code.partition(".")
    if not dot or not access.looks_like_id(workspace_id):
        raise NotFound("no such invite; ask for a new one")
    return workspace_id


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
    async def create(
        self,
        request: Request,
        data: JSONBody[CreateBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[CreatedOut]:
        me = principal.user_id
        ctx = context(request, me, data)
        wsid, general = new_id_for(ctx, "workspace"), new_id_for(ctx, "general")
        decided = await shell.run(
            Plan(
                (
                    entry([ws.CreateWorkspace(wsid, data.name, me, general)], wsid),
                    entry([ch.CreateChannel(general, wsid, ch.GENERAL, me, "owner", general=True)], general),
                    entry([ch.Claim(general)], wsid, ch.GENERAL),
                ),
                ctx,
            )
        )
        body = CreatedOut(wsid, decided.states[0].name, decided.position, general)
        return with_position(Response(body, status_code=201), decided.position)

    @post("/{workspace_id:str}/invites", status_code=201, operation_id="createInvite")
    async def invite(
        self,
        request: Request,
        workspace_id: FromPath[str],
        data: JSONBody[InviteBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[InviteOut]:
        ctx = context(request, principal.user_id, data)
        code = invite_code(workspace_id)
        expires_at = ctx.now + dt.timedelta(seconds=max(0, min(data.expires_in_s, 10**8)))
        command = ws.CreateInvite(principal.user_id, ws.invite_hash(code), data.role, expires_at, ctx.now)
        decided = await dispatch(shell, ctx, ws.CreateInvite, workspace_id, lambda _: command)
        if decided.repeated:  # the first answer's code was never stored; a repeat cannot show it again
            raise Conflict(
                "this Idempotency-Key made an invite already, and its code is shown once; send a new key for a new code"
            )
        body = InviteOut(code, data.role, expires_at, decided.position)
        return with_position(Response(body, status_code=201), decided.position)

    @patch("/{workspace_id:str}/members/{user_id:str}", operation_id="changeMemberRole")
    async def change_role(
        self,
        request: Request,
        workspace_id: FromPath[str],
        user_id: FromPath[str],
        data: JSONBody[RoleBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[RoleOut]:
        me = principal.user_id
        decided = await dispatch(
            shell,
            context(request, me, data),
            ws.ChangeRole,
            workspace_id,
            lambda _: ws.ChangeRole(me, user_id, data.role),
        )
        role = decided.states[0].members.get(user_id, data.role)
        return with_position(Response(RoleOut(user_id, role, decided.position)), decided.position)

    @delete("/{workspace_id:str}/members/{user_id:str}", status_code=200, operation_id="removeMember")
    async def remove(
        self,
        request: Request,
        workspace_id: FromPath[str],
        user_id: FromPath[str],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[PositionOut]:
        me = principal.user_id
        decided = await dispatch(
            shell, context(request, me), ws.RemoveMember, workspace_id, lambda _: ws.RemoveMember(me, user_id)
        )
        return with_position(Response(PositionOut(decided.position)), decided.position)


class InviteCommands(Controller):
    path = "/invites"
    tags = ["workspaces"]

    @post("/{code:str}/accept", status_code=200, operation_id="acceptInvite")
    async def accept(
        self,
        request: Request,
        code: FromPath[str],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[AcceptedOut]:
        me = principal.user_id
        ctx = context(request, me)
        workspace_id, code_hash = workspace_of_code(code), ws.invite_hash(code)

        async def plan(_: bool) -> Plan:
            entries: list[Entry] = [entry([ws.AcceptInvite(me, code_hash, ctx.now)], workspace_id)]
            before: ws.Workspace = (await shell.load(ws.WORKSPACE, ws.workspace_stream(workspace_id))).state
            invited = before.invites.get(code_hash)
            if before.general_channel_id and invited and invited.role != "guest" and me not in before.members:
                # Members join #general with the invite, in the same append; guests see only what they are added to.
                entries.append(entry([ch.Join(me, invited.role)], before.general_channel_id))
            return Plan(entries, ctx)

        decided = await shell.run(plan)
        state: ws.Workspace = decided.states[0]
        assert state.workspace_id is not None
        body = AcceptedOut(state.workspace_id, state.members.get(me, ""), decided.position)
        return with_position(Response(body), decided.position)
