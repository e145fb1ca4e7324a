"""Workspaces: settings, members and their roles, invites. One stream per workspace.

Stream ``workspace-{id}``. An invite's code is a random token made in ``commands/``; only its
sha256 reaches the log, so reading the log never lets anyone in. Invites are single-use: the
first person to accept one uses it up (accepting again, or while already a member, is a no-op).
Roles rank owner > admin > member > guest (rules in ``domain/access.py``); the last owner can
neither leave nor be demoted nor removed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, assert_never

from domain import access
from domain.decider import Decider
from domain.errors import Conflict, DomainError, Forbidden, NotFound
from domain.events import Event

MAX_NAME = 80
DEFAULT_INVITE_TTL = dt.timedelta(days=7)
MAX_INVITE_TTL = dt.timedelta(days=30)


class WorkspaceCreated(Event, frozen=True, tag="workspace.created"):
    workspace_id: str
    name: str
    owner_id: str
    general_channel_id: str | None = None
    """``#general``, which members join when they accept an invite (guests do not)."""


class InviteCreated(Event, frozen=True, tag="workspace.invite_created"):
    code_hash: str
    role: str
    expires_at: dt.datetime
    created_by: str


class MemberJoined(Event, frozen=True, tag="workspace.member_joined"):
    user_id: str
    role: str
    via: Literal["created", "invite"]
    code_hash: str | None = None


class RoleChanged(Event, frozen=True, tag="workspace.role_changed"):
    user_id: str
    role: str
    changed_by: str | None = None


class MemberLeft(Event, frozen=True, tag="workspace.member_left"):
    user_id: str
    removed_by: str | None = None
    """None when the member left on their own."""


@dataclass(frozen=True)
class CreateWorkspace:
    workspace_id: str
    name: str
    owner_id: str
    general_channel_id: str | None = None


@dataclass(frozen=True)
class CreateInvite:
    actor_id: str
    code_hash: str
    role: str
    expires_at: dt.datetime
    now: dt.datetime


@dataclass(frozen=True)
class AcceptInvite:
    user_id: str
    code_hash: str
    now: dt.datetime


@dataclass(frozen=True)
class ChangeRole:
    actor_id: str
    user_id: str
    role: str


@dataclass(frozen=True)
class RemoveMember:
    """Remove ``user_id``; when ``actor_id`` is ``user_id`` this is leaving."""

    actor_id: str
    user_id: str


WorkspaceEvent = WorkspaceCreated | InviteCreated | MemberJoined | RoleChanged | MemberLeft
MembershipEvent = InviteCreated | MemberJoined | RoleChanged | MemberLeft
WorkspaceCommand = CreateWorkspace | CreateInvite | AcceptInvite | ChangeRole | RemoveMember


@dataclass(frozen=True)
class Invite:
    role: str
    expires_at: dt.datetime
    used_by: str | None = None


@dataclass(frozen=True)
class Workspace:
    workspace_id: str | None = None
    name: str | None = None
    members: Mapping[str, str] = field(default_factory=dict)
    """user id -> role"""
    invites: Mapping[str, Invite] = field(default_factory=dict)
    """code hash -> invite"""
    general_channel_id: str | None = None

    @property
    def owners(self) -> list[str]:
        return [u for u, r in self.members.items() if r == "owner"]


class InviteUsed(Conflict):
    title = "Invite already used"


class InviteExpired(Conflict):
    title = "Invite expired"


class LastOwner(Conflict):
    title = "The last owner must stay"


def workspace_stream(workspace_id: str) -> str:
    return f"workspace-{workspace_id}"


def invite_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def check_name(name: str) -> str:
    name = " ".join(name.split())
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise DomainError(f"name must be 1 to {MAX_NAME} printable characters", field="name")
    return name


def evolve(state: Workspace, event: Event) -> Workspace:
    if not isinstance(event, WorkspaceEvent):
        return state
    match event:
        case WorkspaceCreated():
            return Workspace(event.workspace_id, event.name, {}, {}, event.general_channel_id)
        case InviteCreated():
            invite = Invite(event.role, event.expires_at)
            return replace(state, invites={**state.invites, event.code_hash: invite})
        case MemberJoined():
            invites = dict(state.invites)
            if event.code_hash in invites:
                invites[event.code_hash] = replace(invites[event.code_hash], used_by=event.user_id)
            return replace(state, members={**state.members, event.user_id: event.role}, invites=invites)
        case RoleChanged():
            return replace(state, members={**state.members, event.user_id: event.role})
        case MemberLeft():
            return replace(state, members={u: r for u, r in state.members.items() if u != event.user_id})
        case _:
            assert_never(event)


def fold(state: Workspace, events: Sequence[Event]) -> Workspace:
    """``evolve`` over ``events``, with members and invites of a run of membership events kept
    in mutable dicts and set once (not copied per event)."""
    members: dict[str, str] | None = None
    invites: dict[str, Invite] = {}
    for event in events:
        match event:
            case InviteCreated() | MemberJoined() | RoleChanged() | MemberLeft():
                if members is None:
                    members, invites = dict(state.members), dict(state.invites)
                _apply(members, invites, event)
            case _:
                if members is not None:
                    state, members = replace(state, members=members, invites=invites), None
                state = evolve(state, event)
    return state if members is None else replace(state, members=members, invites=invites)


def _apply(members: dict[str, str], invites: dict[str, Invite], event: MembershipEvent) -> None:
    match event:
        case InviteCreated():
            invites[event.code_hash] = Invite(event.role, event.expires_at)
        case MemberJoined():
            if event.code_hash in invites:
                invites[event.code_hash] = replace(invites[event.code_hash], used_by=event.user_id)
            members[event.user_id] = event.role
        case RoleChanged():
            members[event.user_id] = event.role
        case MemberLeft():
            members.pop(event.user_id, None)
        case _:
            assert_never(event)


def member_role(state: Workspace, user_id: str) -> str:
    """The caller's role, or NotFound: a workspace you are not in looks like no workspace."""
    role = access.role_of(state.members, user_id)
    if state.workspace_id is None or role is None:
        raise NotFound("no such workspace")
    return role


def target_role(state: Workspace, user_id: str) -> str:
    role = access.role_of(state.members, user_id)
    if role is None:
        raise NotFound("no such member in this workspace", field="user_id")
    return role


def _create(state: Workspace, c: CreateWorkspace) -> Sequence[Event]:
    if state.workspace_id is not None:
        raise Conflict("this workspace already exists")
    created = WorkspaceCreated(
        workspace_id=c.workspace_id,
        name=check_name(c.name),
        owner_id=c.owner_id,
        general_channel_id=c.general_channel_id,
    )
    return [created, MemberJoined(user_id=c.owner_id, role="owner", via="created")]


def _invite(state: Workspace, c: CreateInvite) -> Sequence[Event]:
    if not access.can_invite(member_role(state, c.actor_id)):
        raise Forbidden("only owners and admins can invite people")
    if c.role not in access.INVITABLE_ROLES:
        raise DomainError("role must be member or guest (promote people after they join)", field="role")
    if not c.now < c.expires_at <= c.now + MAX_INVITE_TTL:
        raise DomainError("an invite must expire within 30 days from now", field="expires_in_s")
    return [InviteCreated(code_hash=c.code_hash, role=c.role, expires_at=c.expires_at, created_by=c.actor_id)]


def _accept(state: Workspace, c: AcceptInvite) -> Sequence[Event]:
    invite = state.invites.get(c.code_hash)
    if state.workspace_id is None or invite is None:
        raise NotFound("no such invite; ask for a new one")
    if c.user_id in state.members:
        return []  # already in: accepting again changes nothing
    if invite.used_by is not None:
        raise InviteUsed("this invite has already been used; ask for a new one")
    if c.now >= invite.expires_at:
        raise InviteExpired("this invite has expired; ask for a new one")
    return [MemberJoined(user_id=c.user_id, role=invite.role, via="invite", code_hash=c.code_hash)]


def _change_role(state: Workspace, c: ChangeRole) -> Sequence[Event]:
    actor = member_role(state, c.actor_id)
    if c.role not in access.ROLES:
        raise DomainError("role must be one of owner, admin, member, guest", field="role")
    current = target_role(state, c.user_id)
    if current == c.role:
        return []
    if not access.can_change_role(actor, current, c.role):
        raise Forbidden("admins change roles below admin only; only owners make owners or change admins")
    if current == "owner" and state.owners == [c.user_id]:
        raise LastOwner("the last owner cannot be demoted; make someone else owner first", field="role")
    return [RoleChanged(user_id=c.user_id, role=c.role, changed_by=c.actor_id)]


def _remove(state: Workspace, c: RemoveMember) -> Sequence[Event]:
    actor = member_role(state, c.actor_id)
    current = target_role(state, c.user_id)
    if c.actor_id != c.user_id and not access.can_remove_member(actor, current):
        raise Forbidden("only admins remove members, and only those below their own role")
    if current == "owner" and state.owners == [c.user_id]:
        raise LastOwner("the last owner cannot leave; make someone else owner first", field="user_id")
    removed_by = None if c.actor_id == c.user_id else c.actor_id
    return [MemberLeft(user_id=c.user_id, removed_by=removed_by)]


def decide(state: Workspace, command: WorkspaceCommand) -> Sequence[Event]:
    match command:
        case CreateWorkspace():
            return _create(state, command)
        case CreateInvite():
            return _invite(state, command)
        case AcceptInvite():
            return _accept(state, command)
        case ChangeRole():
            return _change_role(state, command)
        case RemoveMember():
            return _remove(state, command)
        case _:
            assert_never(command)


WORKSPACE: Decider[Workspace, WorkspaceCommand] = Decider(
    "workspace", Workspace(), evolve, decide, fold, snapshots=True
)
