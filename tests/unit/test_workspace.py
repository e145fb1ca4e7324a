from __future__ import annotations

import datetime as dt

from domain.errors import Conflict, DomainError, Forbidden, NotFound
from domain.readstate import READ_STATE, MoveReadMarker, ReadMarkerMoved
from domain.workspace import (
    WORKSPACE,
    AcceptInvite,
    ChangeRole,
    CreateInvite,
    CreateWorkspace,
    InviteCreated,
    InviteExpired,
    InviteUsed,
    LastOwner,
    MemberJoined,
    MemberLeft,
    RemoveMember,
    RoleChanged,
    WorkspaceCreated,
)
from tests.unit.given import given

NOW = dt.datetime(2026, 3, 3, 12, tzinfo=dt.UTC)
WEEK = NOW + dt.timedelta(days=7)
CREATED = (
    WorkspaceCreated(workspace_id="w1", name="Acme", owner_id="own"),
    MemberJoined(user_id="own", role="owner", via="created"),
)


def joined(user: str, role: str) -> MemberJoined:
    return MemberJoined(user_id=user, role=role, via="invite", code_hash=f"h-{user}")


TEAM = (
    *CREATED,
    InviteCreated(code_hash="h-adm", role="member", expires_at=WEEK, created_by="own"),
    joined("adm", "member"),
    RoleChanged(user_id="adm", role="admin", changed_by="own"),
    joined("mem", "member"),
    joined("gst", "guest"),
)


def test_creating_a_workspace_makes_the_creator_its_owner() -> None:
    given(WORKSPACE).when(CreateWorkspace("w1", "  Acme  ", "own")).then(*CREATED)


def test_a_workspace_is_created_once_and_its_name_is_checked() -> None:
    given(WORKSPACE, *CREATED).when(CreateWorkspace("w1", "Acme", "own")).then_rejects(Conflict)
    for name in ["", "   ", "x" * 81, "a\x00b"]:
        given(WORKSPACE).when(CreateWorkspace("w1", name, "own")).then_rejects(DomainError, "name")


def test_admins_invite_members_and_guests() -> None:
    given(WORKSPACE, *TEAM).when(CreateInvite("adm", "h1", "guest", WEEK, NOW)).then(
        InviteCreated(code_hash="h1", role="guest", expires_at=WEEK, created_by="adm")
    )


def test_invites_rules() -> None:
    given(WORKSPACE, *TEAM).when(CreateInvite("mem", "h1", "member", WEEK, NOW)).then_rejects(Forbidden)
    given(WORKSPACE, *TEAM).when(CreateInvite("stranger", "h1", "member", WEEK, NOW)).then_rejects(NotFound)
    given(WORKSPACE).when(CreateInvite("own", "h1", "member", WEEK, NOW)).then_rejects(NotFound)
    given(WORKSPACE, *TEAM).when(CreateInvite("own", "h1", "admin", WEEK, NOW)).then_rejects(DomainError, "role")
    given(WORKSPACE, *TEAM).when(CreateInvite("own", "h1", "member", NOW, NOW)).then_rejects(DomainError)
    far = NOW + dt.timedelta(days=31)
    given(WORKSPACE, *TEAM).when(CreateInvite("own", "h1", "member", far, NOW)).then_rejects(DomainError)


INVITED = (*TEAM, InviteCreated(code_hash="h1", role="guest", expires_at=WEEK, created_by="own"))


def test_accepting_an_invite_joins_with_its_role() -> None:
    given(WORKSPACE, *INVITED).when(AcceptInvite("new", "h1", NOW)).then(
        MemberJoined(user_id="new", role="guest", via="invite", code_hash="h1")
    )


def test_accepting_again_or_as_a_member_changes_nothing() -> None:
    used = MemberJoined(user_id="new", role="guest", via="invite", code_hash="h1")
    given(WORKSPACE, *INVITED, used).when(AcceptInvite("new", "h1", NOW)).then()
    given(WORKSPACE, *INVITED).when(AcceptInvite("mem", "h1", NOW)).then()


def test_unknown_used_and_expired_invites_are_refused() -> None:
    used = MemberJoined(user_id="new", role="guest", via="invite", code_hash="h1")
    given(WORKSPACE, *INVITED).when(AcceptInvite("new", "nope", NOW)).then_rejects(NotFound)
    given(WORKSPACE).when(AcceptInvite("new", "h1", NOW)).then_rejects(NotFound)
    given(WORKSPACE, *INVITED, used).when(AcceptInvite("other", "h1", NOW)).then_rejects(InviteUsed)
    given(WORKSPACE, *INVITED).when(AcceptInvite("new", "h1", WEEK)).then_rejects(InviteExpired)


def test_owners_change_any_role_and_admins_only_below_admin() -> None:
    given(WORKSPACE, *TEAM).when(ChangeRole("own", "mem", "owner")).then(
        RoleChanged(user_id="mem", role="owner", changed_by="own")
    )
    given(WORKSPACE, *TEAM).when(ChangeRole("adm", "gst", "member")).then(
        RoleChanged(user_id="gst", role="member", changed_by="adm")
    )
    given(WORKSPACE, *TEAM).when(ChangeRole("adm", "mem", "member")).then()
    given(WORKSPACE, *TEAM).when(ChangeRole("adm", "mem", "admin")).then_rejects(Forbidden)
    given(WORKSPACE, *TEAM).when(ChangeRole("adm", "mem", "owner")).then_rejects(Forbidden)
    given(WORKSPACE, *TEAM).when(ChangeRole("adm", "own", "member")).then_rejects(Forbidden)
    given(WORKSPACE, *TEAM).when(ChangeRole("mem", "gst", "member")).then_rejects(Forbidden)


def test_role_changes_check_the_role_and_the_people() -> None:
    given(WORKSPACE, *TEAM).when(ChangeRole("own", "mem", "boss")).then_rejects(DomainError, "role")
    given(WORKSPACE, *TEAM).when(ChangeRole("own", "nobody", "member")).then_rejects(NotFound, "user_id")
    given(WORKSPACE, *TEAM).when(ChangeRole("stranger", "mem", "member")).then_rejects(NotFound)


def test_the_last_owner_cannot_be_demoted_but_one_of_two_can() -> None:
    given(WORKSPACE, *TEAM).when(ChangeRole("own", "own", "admin")).then_rejects(LastOwner, "role")
    two = (*TEAM, RoleChanged(user_id="adm", role="owner", changed_by="own"))
    given(WORKSPACE, *two).when(ChangeRole("adm", "own", "member")).then(
        RoleChanged(user_id="own", role="member", changed_by="adm")
    )


def test_admins_remove_people_below_them_and_anyone_may_leave() -> None:
    given(WORKSPACE, *TEAM).when(RemoveMember("adm", "mem")).then(MemberLeft(user_id="mem", removed_by="adm"))
    given(WORKSPACE, *TEAM).when(RemoveMember("own", "adm")).then(MemberLeft(user_id="adm", removed_by="own"))
    given(WORKSPACE, *TEAM).when(RemoveMember("gst", "gst")).then(MemberLeft(user_id="gst"))
    given(WORKSPACE, *TEAM).when(RemoveMember("mem", "gst")).then_rejects(Forbidden)
    given(WORKSPACE, *TEAM).when(RemoveMember("adm", "own")).then_rejects(Forbidden)
    given(WORKSPACE, *TEAM).when(RemoveMember("own", "nobody")).then_rejects(NotFound)
    given(WORKSPACE, *TEAM).when(RemoveMember("stranger", "mem")).then_rejects(NotFound)


def test_the_last_owner_cannot_leave() -> None:
    given(WORKSPACE, *TEAM).when(RemoveMember("own", "own")).then_rejects(LastOwner)
    assert issubclass(LastOwner, Conflict)


def test_a_member_who_left_is_a_stranger() -> None:
    left = MemberLeft(user_id="mem")
    given(WORKSPACE, *TEAM, left).when(RemoveMember("mem", "mem")).then_rejects(NotFound)


def test_read_markers_move_forward_only() -> None:
    moved = ReadMarkerMoved(channel_id="c1", seq=5)
    given(READ_STATE).when(MoveReadMarker("c1", 5, 10)).then(moved)
    given(READ_STATE, moved).when(MoveReadMarker("c1", 3, 10)).then()
    given(READ_STATE, moved).when(MoveReadMarker("c1", 5, 10)).then()
    given(READ_STATE, moved).when(MoveReadMarker("c2", 3, 10)).then(ReadMarkerMoved(channel_id="c2", seq=3))
    given(READ_STATE).when(MoveReadMarker("c1", 11, 10)).then_rejects(DomainError, "seq")
    given(READ_STATE).when(MoveReadMarker("c1", -1, 10)).then_rejects(DomainError, "seq")
