from __future__ import annotations

from domain import access
from domain.channel import (
    CHANNEL,
    NAME,
    AddMembers,
    Archive,
    Channel,
    ChannelArchived,
    ChannelArchivedError,
    ChannelCreated,
    ChannelMemberJoined,
    ChannelMemberLeft,
    ChannelNameClaimed,
    ChannelNameReleased,
    ChannelRenamed,
    ChannelTopicSet,
    Claim,
    CreateChannel,
    CreateDM,
    Join,
    Leave,
    NameTaken,
    Release,
    RemoveMember,
    Rename,
    SetTopic,
    check_name,
    dm_channel_id,
)
from domain.errors import Conflict, DomainError, Forbidden, NotFound
from tests.unit.given import given


def created(private: bool = False, general: bool = False, name: str = "random") -> tuple:
    return (
        ChannelCreated(
            channel_id="c1",
            workspace_id="w1",
            name=name,
            kind="channel",
            private=private,
            topic="",
            created_by="mem",
            general=general,
        ),
        ChannelMemberJoined(user_id="mem"),
    )


PUBLIC = created()
PRIVATE = created(private=True)
GENERAL = created(general=True, name="general")
ARCHIVED = (*PUBLIC, ChannelArchived(archived_by="mem"))


def test_members_create_channels_and_join_them() -> None:
    given(CHANNEL).when(CreateChannel("c1", "w1", " Random ", "mem", "member")).then(*PUBLIC)
    given(CHANNEL).when(CreateChannel("c1", "w1", "random", "mem", "member", private=True)).then(*PRIVATE)


def test_creating_checks_role_name_topic_and_existence() -> None:
    given(CHANNEL).when(CreateChannel("c1", "w1", "x", "g", "guest")).then_rejects(Forbidden)
    given(CHANNEL).when(CreateChannel("c1", "w1", "x", "s", None)).then_rejects(NotFound)
    given(CHANNEL, *PUBLIC).when(CreateChannel("c1", "w1", "x", "mem", "member")).then_rejects(Conflict)
    topic = CreateChannel("c1", "w1", "x", "mem", "member", topic="t" * 251)
    given(CHANNEL).when(topic).then_rejects(DomainError, "topic")


def test_slack_name_rules() -> None:
    assert check_name("Dev-Ops_2") == "dev-ops_2" and check_name("#ünïcødé") == "ünïcødé"
    assert check_name("日本語") == "日本語" and check_name("x" * 80) == "x" * 80
    for bad in ["", "#", "a b", "a.b", "x" * 81, "a/b", "emoji🎉", "tab\tx"]:
        given(CHANNEL).when(CreateChannel("c1", "w1", bad, "mem", "member")).then_rejects(DomainError, "name")


def test_rename_by_creator_or_admin() -> None:
    given(CHANNEL, *PUBLIC).when(Rename("mem", "member", "Dev")).then(ChannelRenamed(name="dev"))
    given(CHANNEL, *PUBLIC).when(Rename("adm", "admin", "dev")).then(ChannelRenamed(name="dev"))
    given(CHANNEL, *PUBLIC).when(Rename("mem", "member", "random")).then()
    given(CHANNEL, *PUBLIC).when(Rename("other", "member", "dev")).then_rejects(Forbidden)
    given(CHANNEL, *PUBLIC).when(Rename("mem", "member", "a b")).then_rejects(DomainError, "name")
    given(CHANNEL, *GENERAL).when(Rename("mem", "owner", "lobby")).then_rejects(Conflict, "name")


def test_topic_by_members() -> None:
    given(CHANNEL, *PUBLIC).when(SetTopic("mem", "member", " plans ")).then(ChannelTopicSet(topic="plans"))
    given(CHANNEL, *PUBLIC).when(SetTopic("other", "member", "x")).then_rejects(Forbidden)
    given(CHANNEL, *PUBLIC).when(SetTopic("mem", "member", "x" * 251)).then_rejects(DomainError, "topic")


def test_invisible_channels_are_not_found_for_every_command() -> None:
    commands = [
        Rename("other", "member", "x"),
        SetTopic("other", "member", "x"),
        Archive("other", "admin"),
        Join("other", "owner"),
        Leave("other", "member"),
        AddMembers("other", "admin", {"x": "member"}),
        RemoveMember("other", "owner", "mem"),
    ]
    for command in commands:
        given(CHANNEL, *PRIVATE).when(command).then_rejects(NotFound)
        given(CHANNEL).when(command).then_rejects(NotFound)
    given(CHANNEL, *PUBLIC).when(Join("mem", None)).then_rejects(NotFound)  # left the workspace
    given(CHANNEL, *PUBLIC).when(Join("g", "guest")).then_rejects(NotFound)  # guests see only their channels


def test_archive_makes_every_write_a_conflict() -> None:
    given(CHANNEL, *PUBLIC).when(Archive("mem", "member")).then(ChannelArchived(archived_by="mem"))
    given(CHANNEL, *PUBLIC).when(Archive("other", "member")).then_rejects(Forbidden)
    given(CHANNEL, *GENERAL).when(Archive("own", "owner")).then_rejects(Conflict)
    for command in [
        Rename("mem", "member", "x"),
        SetTopic("mem", "member", "x"),
        Archive("mem", "member"),
        Join("other", "member"),
        Leave("mem", "member"),
        AddMembers("mem", "member", {"x": "member"}),
        RemoveMember("adm", "admin", "mem"),
    ]:
        given(CHANNEL, *ARCHIVED).when(command).then_rejects(ChannelArchivedError)


def test_join_public_channels_once() -> None:
    given(CHANNEL, *PUBLIC).when(Join("other", "member")).then(ChannelMemberJoined(user_id="other"))
    given(CHANNEL, *PUBLIC).when(Join("mem", "member")).then()


def test_leave() -> None:
    given(CHANNEL, *PUBLIC).when(Leave("mem", "member")).then(ChannelMemberLeft(user_id="mem"))
    given(CHANNEL, *PUBLIC).when(Leave("other", "member")).then()
    given(CHANNEL, *GENERAL).when(Leave("mem", "member")).then_rejects(Conflict)


def test_add_members() -> None:
    given(CHANNEL, *PRIVATE).when(AddMembers("mem", "member", {"g": "guest", "mem": "member"})).then(
        ChannelMemberJoined(user_id="g", added_by="mem")
    )
    given(CHANNEL, *PUBLIC).when(AddMembers("adm", "admin", {"x": "member"})).then(
        ChannelMemberJoined(user_id="x", added_by="adm")
    )
    given(CHANNEL, *PUBLIC).when(AddMembers("other", "member", {"x": "member"})).then_rejects(Forbidden)
    given(CHANNEL, *PRIVATE).when(AddMembers("mem", "member", {"x": None})).then_rejects(NotFound, "user_ids")
    given(CHANNEL, *PRIVATE).when(AddMembers("mem", "member", {})).then_rejects(NotFound, "user_ids")


def test_remove_member() -> None:
    with_other = (*PUBLIC, ChannelMemberJoined(user_id="x", added_by="mem"))
    given(CHANNEL, *with_other).when(RemoveMember("mem", "member", "x")).then(
        ChannelMemberLeft(user_id="x", removed_by="mem")
    )
    given(CHANNEL, *with_other).when(RemoveMember("x", "member", "x")).then(ChannelMemberLeft(user_id="x"))
    given(CHANNEL, *with_other).when(RemoveMember("x", "member", "mem")).then_rejects(Forbidden)
    given(CHANNEL, *with_other).when(RemoveMember("mem", "member", "nobody")).then_rejects(NotFound, "user_id")
    given(CHANNEL, *GENERAL).when(RemoveMember("own", "owner", "mem")).then_rejects(Conflict)


ROLES = {"a": "member", "b": "guest", "c": "member", "s": None}


def test_dms_have_a_kind_by_size_and_no_name() -> None:
    dm = CreateDM("d1", "w1", "a", frozenset({"b"}), ROLES)
    given(CHANNEL).when(dm).then(
        ChannelCreated(
            channel_id="d1", workspace_id="w1", name=None, kind="dm", private=True, topic="", created_by="a"
        ),
        ChannelMemberJoined(user_id="a"),
        ChannelMemberJoined(user_id="b", added_by="a"),
    )
    group = given(CHANNEL).when(CreateDM("d1", "w1", "a", frozenset({"a", "b", "c"}), ROLES))
    assert isinstance(group.result, list) and group.result[0].kind == "group" and len(group.result) == 4


def test_an_existing_dm_is_answered_not_created_again() -> None:
    history = [*CHANNEL.decide(Channel(), CreateDM("d1", "w1", "a", frozenset({"b"}), ROLES))]
    given(CHANNEL, *history).when(CreateDM("d1", "w1", "b", frozenset({"a"}), ROLES)).then()


def test_dm_rules() -> None:
    given(CHANNEL).when(CreateDM("d1", "w1", "a", frozenset({"a"}), ROLES)).then_rejects(DomainError, "user_ids")
    given(CHANNEL).when(CreateDM("d1", "w1", "a", frozenset({"s"}), ROLES)).then_rejects(NotFound, "user_ids")
    given(CHANNEL).when(CreateDM("d1", "w1", "s", frozenset({"a"}), ROLES)).then_rejects(NotFound)
    many = {f"u{i}": "member" for i in range(10)} | {"a": "member"}
    given(CHANNEL).when(CreateDM("d1", "w1", "a", frozenset(many) - {"a"}, many)).then_rejects(DomainError, "user_ids")


def test_dm_people_are_fixed() -> None:
    history = [*CHANNEL.decide(Channel(), CreateDM("d1", "w1", "a", frozenset({"c"}), ROLES))]
    for command in [
        Leave("a", "member"),
        AddMembers("a", "member", {"b": "guest"}),
        Rename("a", "member", "x"),
        Archive("a", "owner"),
        RemoveMember("a", "owner", "c"),
    ]:
        given(CHANNEL, *history).when(command).then_rejects(DomainError)
    given(CHANNEL, *history).when(Join("b", "owner")).then_rejects(NotFound)


def test_dm_ids_depend_on_the_set_of_people_only() -> None:
    assert dm_channel_id("w1", ["a", "b"]) == dm_channel_id("w1", ["b", "a", "a"])
    assert dm_channel_id("w1", ["a", "b"]) != dm_channel_id("w2", ["a", "b"])
    assert dm_channel_id("w1", ["a", "b"]) != dm_channel_id("w1", ["a", "b", "c"])


def test_a_name_is_held_by_one_channel_at_a_time() -> None:
    claimed = ChannelNameClaimed(channel_id="c1")
    given(NAME).when(Claim("c1")).then(claimed)
    given(NAME, claimed).when(Claim("c1")).then()
    given(NAME, claimed).when(Claim("c2")).then_rejects(NameTaken, "name")
    given(NAME, claimed).when(Release("c1")).then(ChannelNameReleased(channel_id="c1"))
    given(NAME, claimed).when(Release("c2")).then()
    given(NAME, claimed, ChannelNameReleased(channel_id="c1")).when(Claim("c2")).then(
        ChannelNameClaimed(channel_id="c2")
    )


def test_who_sees_what() -> None:
    public = Channel("c1", "w1", "x", members=frozenset({"m"}))
    private = Channel("c2", "w1", "y", private=True, members=frozenset({"m", "g"}))
    assert access.can_see_channel("member", public, "other")
    assert not access.can_see_channel("guest", public, "g")
    assert access.can_see_channel("guest", private, "g")
    assert not access.can_see_channel("owner", private, "own")
    assert not access.can_see_channel(None, public, "m")
    assert access.can_delete_message("admin", "a", "b") and not access.can_delete_message("member", "a", "b")


def test_only_canonical_uuids_look_like_ids() -> None:
    assert access.looks_like_id(dm_channel_id("w1", ["a", "b"]))
    for bad in ["", "nope", "a\x00b", dm_channel_id("w1", ["a"]).upper(), "x" * 36, dm_channel_id("w", []) + "0"]:
        assert not access.looks_like_id(bad), bad
