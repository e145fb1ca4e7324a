"""Channels, DMs and group DMs: metadata, privacy, membership, archive. One stream per channel.

Stream ``channel-{id}``. Commands carry the actor's workspace role (``None``: not a member),
loaded by the handler from the workspace stream, so the rules of ``domain/access.py`` apply
here without I/O. A channel invisible to the actor is ``NotFound`` whatever the command.
Unique names live in their own streams, ``channelname-{ws}-{name}`` (``NAME`` below): a create
or rename appends the channel event and the claim in one atomic ``append_many``.
DMs have no name; their id is derived from the set of people (``dm_channel_id``), so creating
"the DM of these people" twice, however concurrently, finds one stream.
Membership here is channel membership only: someone who left the workspace keeps their row in
the set, but every rule also asks for a workspace role, so they see and do nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, assert_never

from domain import access
from domain.decider import Decider
from domain.errors import Conflict, DomainError, Forbidden, NotFound
from domain.events import Event

Kind = Literal["channel", "dm", "group"]
MAX_NAME = 80
MAX_TOPIC = 250
MAX_DM_OTHERS = 9
GENERAL = "general"
DM_NAMESPACE = uuid.UUID("5d0c2b7e-8f6a-4c1d-9e3b-7a2f4c6d8e10")


class ChannelCreated(Event, frozen=True, tag="channel.created"):
    channel_id: str
    workspace_id: str
    name: str | None
    kind: Kind
    private: bool
    topic: str
    created_by: str
    general: bool = False


class ChannelRenamed(Event, frozen=True, tag="channel.renamed"):
    name: str


class ChannelTopicSet(Event, frozen=True, tag="channel.topic_set"):
    topic: str


class ChannelArchived(Event, frozen=True, tag="channel.archived"):
    archived_by: str | None = None


class ChannelMemberJoined(Event, frozen=True, tag="channel.member_joined"):
    user_id: str
    added_by: str | None = None
    """None when the user joined on their own (or created the channel)."""


class ChannelMemberLeft(Event, frozen=True, tag="channel.member_left"):
    user_id: str
    removed_by: str | None = None
    """None when the user left on their own."""


@dataclass(frozen=True)
class Channel:
    channel_id: str | None = None
    workspace_id: str | None = None
    name: str | None = None
    kind: Kind = "channel"
    private: bool = False
    topic: str = ""
    archived: bool = False
    members: frozenset[str] = frozenset()
    created_by: str | None = None
    general: bool = False


@dataclass(frozen=True)
class CreateChannel:
    channel_id: str
    workspace_id: str
    name: str
    actor_id: str
    role: str | None
    private: bool = False
    topic: str = ""
    general: bool = False


@dataclass(frozen=True)
class CreateDM:
    """The conversation of ``actor_id`` with ``others``; ``roles`` holds every one's workspace role."""

    channel_id: str
    workspace_id: str
    actor_id: str
    others: frozenset[str]
    roles: Mapping[str, str | None]


@dataclass(frozen=True)
class Rename:
    actor_id: str
    role: str | None
    name: str


@dataclass(frozen=True)
class SetTopic:
    actor_id: str
    role: str | None
    topic: str


@dataclass(frozen=True)
class Archive:
    actor_id: str
    role: str | None


@dataclass(frozen=True)
class Join:
    actor_id: str
    role: str | None


@dataclass(frozen=True)
class Leave:
    actor_id: str
    role: str | None


@dataclass(frozen=True)
class AddMembers:
    actor_id: str
    role: str | None
    roles: Mapping[str, str | None]
    """Each user to add -> their workspace role (None: not in the workspace)."""


@dataclass(frozen=True)
class RemoveMember:
    actor_id: str
    role: str | None
    user_id: str


ChannelEvent = (
    ChannelCreated | ChannelRenamed | ChannelTopicSet | ChannelArchived | ChannelMemberJoined | ChannelMemberLeft
)
ChannelCommand = CreateChannel | CreateDM | Rename | SetTopic | Archive | Join | Leave | AddMembers | RemoveMember


class NameTaken(Conflict):
    title = "Channel name taken"


class ChannelArchivedError(Conflict):
    title = "Channel archived"


def channel_stream(channel_id: str) -> str:
    return f"channel-{channel_id}"


def name_stream(workspace_id: str, name: str) -> str:
    return f"channelname-{workspace_id}-{name}"


def dm_channel_id(workspace_id: str, user_ids: Iterable[str]) -> str:
    """The one id of the DM (or group DM) of exactly these people in this workspace."""
    return str(uuid.uuid5(DM_NAMESPACE, "\n".join([workspace_id, *sorted(set(user_ids))])))


def check_name(name: str) -> str:
    """Slack's rules: lower-case letters (any script), digits, ``-`` and ``_``; 1 to 80 of them."""
    name = name.strip().removeprefix("#").lower()
    if not 1 <= len(name) <= MAX_NAME:
        raise DomainError(f"name must be 1 to {MAX_NAME} characters", field="name")
    if not all(ch.isalnum() or ch in "-_" for ch in name):
        raise DomainError("name may hold only lower-case letters, digits, - and _ (no spaces or periods)", field="name")
    return name


def check_topic(topic: str) -> str:
    topic = " ".join(topic.split())
    if len(topic) > MAX_TOPIC or not topic.isprintable():
        raise DomainError(f"topic must be at most {MAX_TOPIC} printable characters", field="topic")
    return topic


def evolve(state: Channel, event: Event) -> Channel:
    if not isinstance(event, ChannelEvent):
        return state
    match event:
        case ChannelCreated():
            return Channel(
                event.channel_id,
                event.workspace_id,
                event.name,
                event.kind,
                event.private,
                event.topic,
                created_by=event.created_by,
                general=event.general,
            )
        case ChannelRenamed():
            return replace(state, name=event.name)
        case ChannelTopicSet():
            return replace(state, topic=event.topic)
        case ChannelArchived():
            return replace(state, archived=True)
        case ChannelMemberJoined():
            return replace(state, members=state.members | {event.user_id})
        case ChannelMemberLeft():
            return replace(state, members=state.members - {event.user_id})
        case _:
            assert_never(event)


def fold(state: Channel, events: Sequence[Event]) -> Channel:
    """``evolve`` over ``events``, with the members of a run of joins and leaves gathered in one
    mutable set and frozen once (not copied per event)."""
    members: set[str] | None = None
    for event in events:
        match event:
            case ChannelMemberJoined() | ChannelMemberLeft():
                members = set(state.members) if members is None else members
                if isinstance(event, ChannelMemberJoined):
                    members.add(event.user_id)
                else:
                    members.discard(event.user_id)
            case _:
                if members is not None:
                    state, members = replace(state, members=frozenset(members)), None
                state = evolve(state, event)
    return state if members is None else replace(state, members=frozenset(members))


def visible(state: Channel, actor_id: str, role: str | None) -> Channel:
    if not access.can_see_channel(role, state, actor_id):
        raise NotFound("no such channel")
    return state


def writable(state: Channel, actor_id: str, role: str | None) -> Channel:
    visible(state, actor_id, role)
    if state.archived:
        raise ChannelArchivedError("this channel is archived and read-only")
    return state


def not_a_dm(state: Channel, what: str) -> None:
    if state.kind != "channel":
        raise DomainError(f"a direct message's {what} cannot change; start another conversation instead")


def _create(state: Channel, c: CreateChannel) -> Sequence[Event]:
    if state.channel_id is not None:
        raise Conflict("this channel already exists")
    if c.role is None:
        raise NotFound("no such workspace")
    if not access.can_create_channel(c.role):
        raise Forbidden("guests cannot create channels")
    return [
        ChannelCreated(
            channel_id=c.channel_id,
            workspace_id=c.workspace_id,
            name=check_name(c.name),
            kind="channel",
            private=c.private,
            topic=check_topic(c.topic),
            created_by=c.actor_id,
            general=c.general,
        ),
        ChannelMemberJoined(user_id=c.actor_id),
    ]


def _create_dm(state: Channel, c: CreateDM) -> Sequence[Event]:
    if c.roles.get(c.actor_id) is None:
        raise NotFound("no such workspace")
    others = c.others - {c.actor_id}
    if not 1 <= len(others) <= MAX_DM_OTHERS:
        raise DomainError(f"name 1 to {MAX_DM_OTHERS} people besides yourself", field="user_ids")
    if any(c.roles.get(u) is None for u in others):
        raise NotFound("some of these people are not in this workspace", field="user_ids")
    if state.channel_id is not None:
        return []  # the conversation exists: everyone asking gets the same one
    people = sorted(others | {c.actor_id})
    kind: Kind = "dm" if len(people) == 2 else "group"
    return [
        ChannelCreated(
            channel_id=c.channel_id,
            workspace_id=c.workspace_id,
            name=None,
            kind=kind,
            private=True,
            topic="",
            created_by=c.actor_id,
        ),
        *(ChannelMemberJoined(user_id=u, added_by=None if u == c.actor_id else c.actor_id) for u in people),
    ]


def _rename(state: Channel, c: Rename) -> Sequence[Event]:
    writable(state, c.actor_id, c.role)
    not_a_dm(state, "name")
    name = check_name(c.name)
    if not access.can_manage_channel(c.role, state, c.actor_id):
        raise Forbidden("only the channel's creator and workspace admins can rename it")
    if state.general and name != state.name:
        raise Conflict("#general keeps its name", field="name")
    return [] if name == state.name else [ChannelRenamed(name=name)]


def _set_topic(state: Channel, c: SetTopic) -> Sequence[Event]:
    writable(state, c.actor_id, c.role)
    topic = check_topic(c.topic)
    if not (access.is_channel_member(c.role, state, c.actor_id) or access.is_admin(c.role)):
        raise Forbidden("join the channel to set its topic")
    return [] if topic == state.topic else [ChannelTopicSet(topic=topic)]


def _archive(state: Channel, c: Archive) -> Sequence[Event]:
    writable(state, c.actor_id, c.role)
    not_a_dm(state, "archive state")
    if state.general:
        raise Conflict("#general cannot be archived")
    if not access.can_manage_channel(c.role, state, c.actor_id):
        raise Forbidden("only the channel's creator and workspace admins can archive it")
    return [ChannelArchived(archived_by=c.actor_id)]


def _join(state: Channel, c: Join) -> Sequence[Event]:
    writable(state, c.actor_id, c.role)
    if c.actor_id in state.members:
        return []  # like Slack's conversations.join: already in is fine
    return [ChannelMemberJoined(user_id=c.actor_id)]  # visible and not a member: a public channel


def _leave(state: Channel, c: Leave) -> Sequence[Event]:
    writable(state, c.actor_id, c.role)
    not_a_dm(state, "people")
    if state.general:
        raise Conflict("nobody leaves #general; leave the workspace instead")
    if c.actor_id not in state.members:
        return []
    return [ChannelMemberLeft(user_id=c.actor_id)]


def _add(state: Channel, c: AddMembers) -> Sequence[Event]:
    writable(state, c.actor_id, c.role)
    not_a_dm(state, "people")
    if not access.can_add_to_channel(c.role, state, c.actor_id):
        raise Forbidden("join the channel to add people to it")
    if not c.roles or any(r is None for r in c.roles.values()):
        raise NotFound("some of these people are not in this workspace", field="user_ids")
    return [ChannelMemberJoined(user_id=u, added_by=c.actor_id) for u in sorted(c.roles) if u not in state.members]


def _remove(state: Channel, c: RemoveMember) -> Sequence[Event]:
    if c.user_id == c.actor_id:
        return _leave(state, Leave(c.actor_id, c.role))
    writable(state, c.actor_id, c.role)
    not_a_dm(state, "people")
    if not access.can_manage_channel(c.role, state, c.actor_id):
        raise Forbidden("only the channel's creator and workspace admins can remove people")
    if state.general:
        raise Conflict("nobody is removed from #general; remove them from the workspace instead")
    if c.user_id not in state.members:
        raise NotFound("this person is not in this channel", field="user_id")
    return [ChannelMemberLeft(user_id=c.user_id, removed_by=c.actor_id)]


def decide(state: Channel, command: ChannelCommand) -> Sequence[Event]:
    match command:
        case CreateChannel():
            return _create(state, command)
        case CreateDM():
            return _create_dm(state, command)
        case Rename():
            return _rename(state, command)
        case SetTopic():
            return _set_topic(state, command)
        case Archive():
            return _archive(state, command)
        case Join():
            return _join(state, command)
        case Leave():
            return _leave(state, command)
        case AddMembers():
            return _add(state, command)
        case RemoveMember():
            return _remove(state, command)
        case _:
            assert_never(command)


CHANNEL: Decider[Channel, ChannelCommand] = Decider("channel", Channel(), evolve, decide, fold, snapshots=True)


# -- unique names: stream ``channelname-{ws}-{name}`` --------------------------------------------


class ChannelNameClaimed(Event, frozen=True, tag="channel.name_claimed"):
    channel_id: str


class ChannelNameReleased(Event, frozen=True, tag="channel.name_released"):
    channel_id: str


@dataclass(frozen=True)
class ChannelName:
    holder: str | None = None


@dataclass(frozen=True)
class Claim:
    channel_id: str


@dataclass(frozen=True)
class Release:
    channel_id: str


def evolve_name(state: ChannelName, event: Event) -> ChannelName:
    if not isinstance(event, ChannelNameClaimed | ChannelNameReleased):
        return state
    match event:
        case ChannelNameClaimed():
            return ChannelName(event.channel_id)
        case ChannelNameReleased():
            return ChannelName(None)
        case _:
            assert_never(event)


def decide_name(state: ChannelName, command: Claim | Release) -> Sequence[Event]:
    match command:
        case Claim():
            if state.holder == command.channel_id:
                return []
            if state.holder is not None:
                raise NameTaken("a channel with this name already exists in this workspace", field="name")
            return [ChannelNameClaimed(channel_id=command.channel_id)]
        case Release():
            return [ChannelNameReleased(channel_id=command.channel_id)] if state.holder == command.channel_id else []
        case _:
            assert_never(command)


NAME: Decider[ChannelName, Claim | Release] = Decider("channelname", ChannelName(), evolve_name, decide_name)
