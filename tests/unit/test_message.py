"""The message decider: given(events).when(command).then(events), every command and rejection;
mention parsing and emoji validation."""

from __future__ import annotations

import pytest

from domain.emoji import check_emoji
from domain.errors import Conflict, DomainError, Forbidden, NotFound
from domain.mentions import parse_mentions
from domain.message import (
    MAX_TEXT,
    MESSAGE,
    Delete,
    Edit,
    Message,
    MessageDeleted,
    MessageDeletedError,
    MessageEdited,
    MessagePosted,
    Post,
    React,
    ReactionAdded,
    ReactionRemoved,
    Unreact,
    client_message_id,
    could_be_id,
)
from tests.unit.given import given

MEMBERS = frozenset({"ada", "bob", "cy"})
POSTED = MessagePosted(message_id="m1", channel_id="c1", workspace_id="w1", author_id="ada", text="hello")
REPLY_POSTED = MessagePosted(
    message_id="r1", channel_id="c1", workspace_id="w1", author_id="bob", text="hi", thread_root_id="m1"
)
ROOT = Message("m1", "c1", "w1", "ada", None, "hello", versions=1)


def post(text: str = "hello", **extra) -> Post:
    return Post(
        **{
            "message_id": "m1",
            "channel_id": "c1",
            "workspace_id": "w1",
            "author_id": "ada",
            "text": text,
            "workspace_members": MEMBERS,
            **extra,
        }
    )


def test_post_trims_text_and_parses_mentions() -> None:
    given(MESSAGE).when(post("  hi <@bob> <@stranger> <@bob> @here\n")).then(
        MessagePosted(
            message_id="m1",
            channel_id="c1",
            workspace_id="w1",
            author_id="ada",
            text="hi <@bob> <@stranger> <@bob> @here",
            mentions=["bob"],
            mention_here=True,
        )
    )


def test_post_keeps_client_msg_id_and_files() -> None:
    given(MESSAGE).when(post("", file_ids=("f1",), client_msg_id="k1")).then(
        MessagePosted(
            message_id="m1",
            channel_id="c1",
            workspace_id="w1",
            author_id="ada",
            text="",
            file_ids=["f1"],
            client_msg_id="k1",
        )
    )


@pytest.mark.parametrize("text", ["", "   \n\t ", "x" * (MAX_TEXT + 1), "a\x00b", "bell\x07"])
def test_post_refuses_bad_text(text: str) -> None:
    given(MESSAGE).when(post(text)).then_rejects(DomainError, field="text")


INVISIBLE = {
    "zero-width space": "\u200b",
    "zero-width joiner": "\u200d",
    "zero-width non-joiner": "\u200c",
    "byte order mark": "\ufeff",
    "word joiner": "\u2060",
    "soft hyphen": "\u00ad",
    "no-break space": "\u00a0",
    "ideographic space": "\u3000",
    "em space": "\u2003",
    "narrow no-break space": "\u202f",
    "line separator": "\u2028",
    "left-to-right mark": "\u200e",
    "variation selector 16": "\ufe0f",
    "Hangul filler": "\u3164",
    "Braille blank": "\u2800",
    "tag letter": "\U000e0041",
    "all of them": " \u200b\u200d\ufeff\u2060\u00a0\u3000\u2800\u3164\n",
}


@pytest.mark.parametrize("text", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_a_text_of_invisible_characters_is_empty(text: str) -> None:
    given(MESSAGE).when(post(text * 3)).then_rejects(DomainError, field="text")
    given(MESSAGE, POSTED).when(Edit(actor_id="ada", text=text, workspace_members=MEMBERS)).then_rejects(
        DomainError, field="text"
    )
    assert given(MESSAGE).when(post(text, file_ids=("f1",))).result[0].text == ""  # files with no text


def test_invisible_characters_inside_a_visible_text_stay() -> None:
    assert given(MESSAGE).when(post("\u200bhi\u200d\U0001f44b")).result[0].text == "\u200bhi\u200d\U0001f44b"


def test_post_allows_the_longest_text_and_newlines() -> None:
    given(MESSAGE).when(post("x" * MAX_TEXT)).then(
        MessagePosted(message_id="m1", channel_id="c1", workspace_id="w1", author_id="ada", text="x" * MAX_TEXT)
    )
    assert given(MESSAGE).when(post("a\r\n\tb")).result[0].text == "a\r\n\tb"


def test_post_refuses_too_many_or_repeated_files_and_bad_client_ids() -> None:
    given(MESSAGE).when(post(file_ids=tuple(f"f{i}" for i in range(11)))).then_rejects(DomainError, field="file_ids")
    given(MESSAGE).when(post(file_ids=("f", "f"))).then_rejects(DomainError, field="file_ids")
    given(MESSAGE).when(post(client_msg_id="")).then_rejects(DomainError, field="client_msg_id")
    given(MESSAGE).when(post(client_msg_id="x" * 129)).then_rejects(DomainError, field="client_msg_id")


def test_post_twice_under_one_id_conflicts() -> None:
    given(MESSAGE, POSTED).when(post()).then_rejects(Conflict)


def test_a_reply_names_a_root_of_the_same_channel() -> None:
    reply = post("hi", message_id="r1", author_id="bob", thread_root_id="m1", root=ROOT)
    given(MESSAGE).when(reply).then(REPLY_POSTED)


def test_a_reply_to_a_deleted_root_is_allowed() -> None:
    deleted_root = Message("m1", "c1", "w1", "ada", None, "", versions=1, deleted=True)
    reply = post("hi", message_id="r1", author_id="bob", thread_root_id="m1", root=deleted_root)
    given(MESSAGE).when(reply).then(REPLY_POSTED)


def test_a_reply_to_a_reply_is_refused() -> None:
    root_is_reply = Message("r1", "c1", "w1", "bob", "m1", "hi", versions=1)
    given(MESSAGE).when(post(thread_root_id="r1", root=root_is_reply)).then_rejects(
        DomainError, field="thread_root_id", match="one level deep"
    )


@pytest.mark.parametrize("root", [None, Message(), Message("m9", "other-channel", "w1", "ada", None, "x")])
def test_a_reply_to_a_missing_or_foreign_root_is_not_found(root: Message | None) -> None:
    given(MESSAGE).when(post(thread_root_id="m9", root=root)).then_rejects(NotFound, field="thread_root_id")


def test_the_author_edits_and_the_mentions_follow() -> None:
    given(MESSAGE, POSTED).when(Edit(actor_id="ada", text=" hey <@cy> @channel ", workspace_members=MEMBERS)).then(
        MessageEdited(
            message_id="m1", channel_id="c1", text="hey <@cy> @channel", mentions=["cy"], mention_channel=True
        )
    )


def test_an_edit_to_the_same_text_records_nothing() -> None:
    given(MESSAGE, POSTED).when(Edit(actor_id="ada", text="hello ", workspace_members=MEMBERS)).then()


def test_edit_rejections() -> None:
    given(MESSAGE).when(Edit(actor_id="ada", text="x", workspace_members=MEMBERS)).then_rejects(NotFound)
    given(MESSAGE, POSTED).when(Edit(actor_id="bob", text="x", workspace_members=MEMBERS)).then_rejects(Forbidden)
    given(MESSAGE, POSTED).when(Edit(actor_id="ada", text=" ", workspace_members=MEMBERS)).then_rejects(
        DomainError, field="text"
    )
    deleted = MessageDeleted(message_id="m1", channel_id="c1", deleted_by="ada")
    given(MESSAGE, POSTED, deleted).when(Edit(actor_id="ada", text="x", workspace_members=MEMBERS)).then_rejects(
        MessageDeletedError
    )


def test_the_author_or_an_admin_deletes() -> None:
    given(MESSAGE, POSTED).when(Delete(actor_id="ada")).then(
        MessageDeleted(message_id="m1", channel_id="c1", deleted_by="ada")
    )
    given(MESSAGE, POSTED).when(Delete(actor_id="bob", actor_is_admin=True)).then(
        MessageDeleted(message_id="m1", channel_id="c1", deleted_by="bob")
    )
    given(MESSAGE, REPLY_POSTED).when(Delete(actor_id="bob")).then(
        MessageDeleted(message_id="r1", channel_id="c1", deleted_by="bob", thread_root_id="m1")
    )


def test_delete_rejections_and_repeats() -> None:
    given(MESSAGE).when(Delete(actor_id="ada")).then_rejects(NotFound)
    given(MESSAGE, POSTED).when(Delete(actor_id="bob")).then_rejects(Forbidden)
    deleted = MessageDeleted(message_id="m1", channel_id="c1", deleted_by="ada")
    given(MESSAGE, POSTED, deleted).when(Delete(actor_id="ada")).then()


def test_deleting_leaves_a_tombstone_without_text_or_reactions() -> None:
    added = ReactionAdded(message_id="m1", channel_id="c1", user_id="bob", emoji="👍")
    deleted = MessageDeleted(message_id="m1", channel_id="c1", deleted_by="ada")
    state = given(MESSAGE, POSTED, added, deleted).state
    assert state.deleted and state.text == "" and not state.reactions
    given(MESSAGE, POSTED, added, deleted).when(React(user_id="bob", emoji="👍")).then_rejects(MessageDeletedError)
    given(MESSAGE, POSTED, added, deleted).when(Unreact(user_id="bob", emoji="👍")).then()


def test_reactions_are_idempotent_per_user_and_emoji() -> None:
    added = ReactionAdded(message_id="m1", channel_id="c1", user_id="bob", emoji="❤️")
    given(MESSAGE, POSTED).when(React(user_id="bob", emoji="❤")).then(added)  # stored fully qualified
    given(MESSAGE, POSTED, added).when(React(user_id="bob", emoji="❤️")).then()
    given(MESSAGE, POSTED, added).when(React(user_id="cy", emoji="❤️")).then(
        ReactionAdded(message_id="m1", channel_id="c1", user_id="cy", emoji="❤️")
    )
    given(MESSAGE, POSTED, added).when(Unreact(user_id="bob", emoji="❤️")).then(
        ReactionRemoved(message_id="m1", channel_id="c1", user_id="bob", emoji="❤️")
    )
    given(MESSAGE, POSTED).when(Unreact(user_id="bob", emoji="❤️")).then()


def test_reaction_rejections() -> None:
    given(MESSAGE).when(React(user_id="bob", emoji="👍")).then_rejects(NotFound)
    given(MESSAGE).when(Unreact(user_id="bob", emoji="👍")).then_rejects(NotFound)
    given(MESSAGE, POSTED).when(React(user_id="bob", emoji="thumbsup")).then_rejects(DomainError, field="emoji")
    given(MESSAGE, POSTED).when(Unreact(user_id="bob", emoji="👍👍")).then_rejects(DomainError, field="emoji")


def test_edits_count_versions() -> None:
    edited = MessageEdited(message_id="m1", channel_id="c1", text="v2")
    state = given(MESSAGE, POSTED, edited).state
    assert (state.text, state.versions) == ("v2", 2)


@pytest.mark.parametrize(
    ("text", "users", "channel", "here"),
    [
        ("<@ada> and <@bob>, <@ada> again", ("ada", "bob"), False, False),
        ("<@nobody> <@ ada> <@ada", (), False, False),
        ("@channel look", (), True, False),
        ("(@here)", (), False, True),
        ("mail me at me@channel.com or @channels or @@here or x@here", (), False, False),
        ("@here, @channel!", (), True, True),
    ],
)
def test_mentions(text: str, users: tuple[str, ...], channel: bool, here: bool) -> None:
    mentions = parse_mentions(text, {"ada", "bob"})
    assert (mentions.user_ids, mentions.channel, mentions.here) == (users, channel, here)


@pytest.mark.parametrize(
    ("given_emoji", "stored"),
    [
        ("👍", "👍"),
        ("👍🏽", "👍🏽"),
        ("❤", "❤️"),
        ("❤️", "❤️"),
        ("👨‍👩‍👧", "👨‍👩‍👧"),
        ("🇫🇷", "🇫🇷"),
        ("1️⃣", "1️⃣"),
        ("🏳️‍🌈", "🏳️‍🌈"),
        (":tada:", ":tada:"),
        (":+1:", ":+1:"),
        (":party-parrot_2:", ":party-parrot_2:"),
        (":" + "a" * 64 + ":", ":" + "a" * 64 + ":"),
    ],
)
def test_valid_emoji(given_emoji: str, stored: str) -> None:
    assert check_emoji(given_emoji) == stored


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a",
        "tada",
        ":tada",
        "::",
        ":Tada:",
        ":ta da:",
        ":" + "a" * 65 + ":",
        "👍👍",
        "👍 ",
        "\u200d",
        "#",
        "1",
        "<script>",
        "👍" * 20,
        ":é:",
    ],
)
def test_invalid_emoji(bad: str) -> None:
    with pytest.raises(DomainError) as caught:
        check_emoji(bad)
    assert caught.value.field == "emoji"


def test_client_message_ids_are_stable_per_channel_and_author() -> None:
    assert client_message_id("c1", "ada", "k") == client_message_id("c1", "ada", "k")
    assert (
        len(
            {
                client_message_id("c1", "ada", "k"),
                client_message_id("c2", "ada", "k"),
                client_message_id("c1", "bob", "k"),
                client_message_id("c1", "ada", "k2"),
            }
        )
        == 4
    )


def test_only_canonical_uuids_could_be_ids() -> None:
    assert could_be_id(client_message_id("c1", "ada", "k"))
    assert could_be_id("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
    for bad in [
        "",
        "m1",
        "a\x00b",
        "0193A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B".lower() + "x",
        "{0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}",
    ]:
        assert not could_be_id(bad), bad
