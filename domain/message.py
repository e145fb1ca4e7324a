"""Messages: one stream per message, ``message-{id}``, so posting never writes the channel stream.

The stream holds the post, its edits, its deletion and its reactions. Who may post, react or
edit in a channel (membership, archive, privacy) is decided on the channel's state before the
command gets here (``domain/access.py``); this decider keeps the rules of the message itself:
its text, its author, its thread, its reactions.

Rules where the API is silent, chosen like Slack:
- text is trimmed at both ends and then holds 1 to 40,000 characters (code points); it may be
  empty only when files come with it. Control characters other than tab and newlines are refused.
  A text of nothing but invisible characters (whitespace of any kind, zero-width spaces and
  joiners, the BOM, bidi marks, variation selectors: Unicode's default-ignorable code points,
  and the blank Braille pattern) counts as empty.
- files: at most 10 different ones; who may attach which file is the file decider's rule
  (``domain/file.py``), decided in the same append as the post.
- threads are one level deep: a reply names its channel's top-level message as root; a reply to
  a reply is refused (422). A deleted root still takes replies (its thread lives on, as in Slack).
- editing is for the author only, and an edit with the same text records nothing; every earlier
  text is kept in the log and listed as a version until the message is deleted.
- deleting (author, or a workspace admin or owner) leaves a tombstone: no text, no mentions, no
  reactions; the thread summary stays. A deleted message cannot be edited or reacted to (409);
  deleting it again records nothing.
- reactions are a set of (user, emoji): adding one twice or removing one absent records nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import assert_never

import msgspec

from domain.decider import Decider
from domain.emoji import check_emoji
from domain.errors import Conflict, DomainError, Forbidden, NotFound
from domain.events import Event
from domain.mentions import parse_mentions

MAX_TEXT = 40_000
MAX_FILES = 10
MAX_CLIENT_MSG_ID = 128
CLIENT_MSG_NAMESPACE = uuid.UUID("7d0c1f0e-3b0a-4c52-9a43-64a1f3f0c2d4")
_CONTROL = {c for c in range(32) if chr(c) not in "\t\n\r"} | {0x7F}
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt of Unicode 15), whitespace
# (``\s``: every Unicode space) and U+2800 BRAILLE PATTERN BLANK, which draws nothing either.
_INVISIBLE = re.compile(
    "[\\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]*"
)


class MessagePosted(Event, frozen=True, tag="message.posted"):
    message_id: str
    channel_id: str
    workspace_id: str
    author_id: str
    text: str
    thread_root_id: str | None = None
    mentions: list[str] = []
    mention_channel: bool = False
    mention_here: bool = False
    file_ids: list[str] = []
    client_msg_id: str | None = None
    here_user_ids: list[str] = []
    """With ``@here``: the channel's members who were online when it was posted (the log must hold
    it: presence is not in the log, and notifications are rebuilt from the log)."""


class MessageEdited(Event, frozen=True, tag="message.edited"):
    message_id: str
    channel_id: str
    text: str
    mentions: list[str] = []
    mention_channel: bool = False
    mention_here: bool = False


class MessageDeleted(Event, frozen=True, tag="message.deleted"):
    message_id: str
    channel_id: str
    deleted_by: str
    thread_root_id: str | None = None


class ReactionAdded(Event, frozen=True, tag="reaction.added"):
    message_id: str
    channel_id: str
    user_id: str
    emoji: str


class ReactionRemoved(Event, frozen=True, tag="reaction.removed"):
    message_id: str
    channel_id: str
    user_id: str
    emoji: str


MessageEvent = MessagePosted | MessageEdited | MessageDeleted | ReactionAdded | ReactionRemoved


@dataclass(frozen=True)
class Message:
    message_id: str | None = None
    channel_id: str | None = None
    workspace_id: str | None = None
    author_id: str | None = None
    thread_root_id: str | None = None
    text: str = ""
    versions: int = 0
    deleted: bool = False
    reactions: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (emoji, user_id)
    file_ids: tuple[str, ...] = ()

    @property
    def exists(self) -> bool:
        return self.message_id is not None


class Post(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    channel_id: str
    workspace_id: str
    author_id: str
    text: str
    workspace_members: Collection[str]
    """Who a ``<@id>`` may name (the workspace state's own key view: no copy of 10,000 ids per post)."""
    thread_root_id: str | None = None
    root: Message | None = None
    """The state of ``message-{thread_root_id}``, loaded by the caller when replying."""
    file_ids: tuple[str, ...] = ()
    client_msg_id: str | None = None
    online_ids: frozenset[str] = frozenset()
    """The channel's members online at posting time, read by the caller when the text says @here."""


class Edit(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    text: str
    workspace_members: Collection[str]


class Delete(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    actor_is_admin: bool = False
    """A workspace admin or owner, who may delete anyone's message."""


class React(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    emoji: str


class Unreact(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    emoji: str


MessageCommand = Post | Edit | Delete | React | Unreact


class MessageDeletedError(Conflict):
    title = "Message deleted"


def could_be_id(value: str) -> bool:
    """Whether ``value`` could be one of our ids (a canonical UUID: messages get UUIDv7 or uuid5).
    Anything else is answered as missing (404) before it reaches a stream or a query, where a NUL
    would not survive. The same test as ``domain.access.looks_like_id`` (being added there):
    use that one once it is committed."""
    try:
        return len(value) == 36 and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def message_stream(message_id: str) -> str:
    return f"message-{message_id}"


def client_message_id(channel_id: str, author_id: str, key: str) -> str:
    """The id of the message an author posts in a channel under a client key: a retry gets the same."""
    return str(uuid.uuid5(CLIENT_MSG_NAMESPACE, f"{channel_id}\n{author_id}\n{key}"))


def check_text(text: str, *, files: bool = False) -> str:
    text = "" if _INVISIBLE.fullmatch(text) else text.strip()
    if not text and not files:
        raise DomainError("text must not be empty (a message needs text or files)", field="text")
    if len(text) > MAX_TEXT:
        raise DomainError(f"text must be at most {MAX_TEXT:,} characters, not {len(text):,}", field="text")
    if any(ord(c) in _CONTROL for c in text):
        raise DomainError("text must not contain control characters other than tab and newlines", field="text")
    return text


def check_client_msg_id(value: str | None) -> str | None:
    if value is not None and not (1 <= len(value) <= MAX_CLIENT_MSG_ID and value.isprintable()):
        raise DomainError(f"client_msg_id must be 1 to {MAX_CLIENT_MSG_ID} printable characters", field="client_msg_id")
    return value


def check_files(file_ids: Sequence[str]) -> list[str]:
    if len(file_ids) > MAX_FILES or len(set(file_ids)) != len(file_ids):
        raise DomainError(f"file_ids must list at most {MAX_FILES} different files", field="file_ids")
    return list(file_ids)


def check_root(command: Post) -> None:
    if command.thread_root_id is None:
        return
    root = command.root
    if root is None or not root.exists or root.channel_id != command.channel_id:
        raise NotFound("no such message in this channel to reply to", field="thread_root_id")
    if root.thread_root_id is not None:
        raise DomainError(
            f"threads are one level deep: reply to the thread's root {root.thread_root_id} instead of to a reply",
            field="thread_root_id",
        )


def decide(state: Message, command: MessageCommand) -> Sequence[Event]:
    match command:
        case Post():
            return _post(state, command)
        case Edit():
            return _edit(_existing(state), command)
        case Delete():
            return _delete(_existing(state), command)
        case React():
            return _react(_alive(_existing(state), "react to"), command)
        case Unreact():
            return _unreact(_existing(state), command)
        case _:
            assert_never(command)


def _existing(state: Message) -> Message:
    if not state.exists:
        raise NotFound("no such message")
    return state


def _alive(state: Message, doing: str) -> Message:
    if state.deleted:
        raise MessageDeletedError(f"this message was deleted; you cannot {doing} it")
    return state


def _post(state: Message, command: Post) -> Sequence[Event]:
    if state.exists:
        raise Conflict("a message with this id exists already; post with another client_msg_id", field="client_msg_id")
    files = check_files(command.file_ids)
    text = check_text(command.text, files=bool(files))
    check_root(command)
    mentions = parse_mentions(text, command.workspace_members)
    return [
        MessagePosted(
            message_id=command.message_id,
            channel_id=command.channel_id,
            workspace_id=command.workspace_id,
            author_id=command.author_id,
            text=text,
            thread_root_id=command.thread_root_id,
            mentions=list(mentions.user_ids),
            mention_channel=mentions.channel,
            mention_here=mentions.here,
            file_ids=files,
            client_msg_id=check_client_msg_id(command.client_msg_id),
            here_user_ids=sorted(command.online_ids) if mentions.here else [],
        )
    ]


def _edit(state: Message, command: Edit) -> Sequence[Event]:
    if command.actor_id != state.author_id:
        raise Forbidden("only the author can edit a message")
    _alive(state, "edit")
    text = check_text(command.text)
    if text == state.text:
        return []
    mentions = parse_mentions(text, command.workspace_members)
    assert state.message_id and state.channel_id
    return [
        MessageEdited(
            message_id=state.message_id,
            channel_id=state.channel_id,
            text=text,
            mentions=list(mentions.user_ids),
            mention_channel=mentions.channel,
            mention_here=mentions.here,
        )
    ]


def _delete(state: Message, command: Delete) -> Sequence[Event]:
    if command.actor_id != state.author_id and not command.actor_is_admin:
        raise Forbidden("only the author or a workspace admin can delete a message")
    if state.deleted:
        return []
    assert state.message_id and state.channel_id
    return [
        MessageDeleted(
            message_id=state.message_id,
            channel_id=state.channel_id,
            deleted_by=command.actor_id,
            thread_root_id=state.thread_root_id,
        )
    ]


def _react(state: Message, command: React) -> Sequence[Event]:
    emoji = check_emoji(command.emoji)
    if (emoji, command.user_id) in state.reactions:
        return []
    assert state.message_id and state.channel_id
    return [
        ReactionAdded(message_id=state.message_id, channel_id=state.channel_id, user_id=command.user_id, emoji=emoji)
    ]


def _unreact(state: Message, command: Unreact) -> Sequence[Event]:
    emoji = check_emoji(command.emoji)
    if (emoji, command.user_id) not in state.reactions:
        return []
    assert state.message_id and state.channel_id
    return [
        ReactionRemoved(message_id=state.message_id, channel_id=state.channel_id, user_id=command.user_id, emoji=emoji)
    ]


def evolve(state: Message, event: Event) -> Message:
    if not isinstance(event, MessageEvent):
        return state
    match event:
        case MessagePosted():
            return Message(
                event.message_id,
                event.channel_id,
                event.workspace_id,
                event.author_id,
                event.thread_root_id,
                event.text,
                versions=1,
                file_ids=tuple(event.file_ids),
            )
        case MessageEdited():
            return replace(state, text=event.text, versions=state.versions + 1)
        case MessageDeleted():
            return replace(state, text="", deleted=True, reactions=frozenset(), file_ids=())
        case ReactionAdded():
            return replace(state, reactions=state.reactions | {(event.emoji, event.user_id)})
        case ReactionRemoved():
            return replace(state, reactions=state.reactions - {(event.emoji, event.user_id)})
        case _:
            assert_never(event)


MESSAGE: Decider[Message, MessageCommand] = Decider("message", Message(), evolve, decide)
