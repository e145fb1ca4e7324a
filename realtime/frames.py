"""Log events -> client frames: where each event goes (``route``, no I/O) and what clients get
(``shape``: the read models' current objects, one query per kind for a whole batch, all sent at once).

The publisher and the gateway's replay both use this module, so a resumed client gets exactly
the frames a live one got. Messages are the objects ``GET /messages/{id}`` answers, channels a
summary without the per-user fields (the structs and their SQL: ``projections/shapes.py``).
Read models must have passed the events' positions before ``shape`` is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never

import msgspec
import psycopg
import structlog

from domain import channel as ch
from domain import workspace as ws
from domain.events import RecordedEvent
from domain.file import FileDeleted, FileShared
from domain.message import MessageDeleted, MessageEdited, MessagePosted, ReactionAdded, ReactionRemoved
from domain.notify import NotificationsRead
from domain.readstate import ReadMarkerMoved
from domain.session import SessionEnded
from projections.shapes import (
    CHANNELS_BY_IDS,
    FILES_BY_IDS,
    MESSAGES_BY_IDS,
    ChannelInfo,
    FileOut,
    MessageOut,
    to_message,
)
from realtime import subjects

log = structlog.get_logger(__name__)

MESSAGE_EVENTS = (MessagePosted, MessageEdited, MessageDeleted, ReactionAdded, ReactionRemoved)


class EventFrame(msgspec.Struct, frozen=True, kw_only=True):
    op: str = "event"
    position: int
    type: str
    workspace_id: str | None
    channel_id: str | None
    data: Any


@dataclass(frozen=True)
class Route:
    subjects: tuple[str, ...]
    resync: frozenset[str] = frozenset()
    """Subjects whose recipients may see more or less after this event."""
    session_ended: str | None = None


@dataclass(frozen=True)
class Shaped:
    position: int
    route: Route
    frames: tuple[str, ...] = field(default=())

    def envelopes(self) -> list[subjects.Envelope]:
        return [
            subjects.Envelope(s, self.position, self.frames, s in self.route.resync, self.route.session_ended)
            for s in self.route.subjects
        ]


def _id(stream_id: str, prefix: str) -> str:
    return stream_id.removeprefix(prefix)


def route(recorded: RecordedEvent) -> Route | None:
    """Which subjects ``recorded`` goes to; None for events no client is told about."""
    event = recorded.event
    match event:
        case MessagePosted() | MessageEdited() | MessageDeleted() | ReactionAdded() | ReactionRemoved() | FileShared():
            return Route((subjects.channel(event.channel_id),))
        case ch.ChannelCreated() if not event.private:
            where = subjects.workspace(event.workspace_id)
            return Route((where,), resync=frozenset({where}))
        case ch.ChannelRenamed() | ch.ChannelTopicSet() | ch.ChannelArchived():
            return Route((subjects.channel(_id(recorded.stream_id, "channel-")),))
        case ch.ChannelMemberJoined() | ch.ChannelMemberLeft():
            who = subjects.user(event.user_id)
            return Route((subjects.channel(_id(recorded.stream_id, "channel-")), who), resync=frozenset({who}))
        case ws.MemberJoined() | ws.RoleChanged() | ws.MemberLeft():
            who = subjects.user(event.user_id)
            return Route((subjects.workspace(_id(recorded.stream_id, "workspace-")), who), resync=frozenset({who}))
        case ReadMarkerMoved() | NotificationsRead():
            return Route((subjects.user(_id(recorded.stream_id, "user-")),))
        case SessionEnded():
            return Route((subjects.user(event.user_id),), session_ended=event.session_id)
        case FileDeleted() if event.channel_ids:
            return Route(tuple(subjects.channel(c) for c in event.channel_ids))
    return None


_ENCODER = msgspec.json.Encoder()


async def shape(conn: psycopg.AsyncConnection, events: Sequence[tuple[RecordedEvent, Route]]) -> list[Shaped]:
    """The frames of ``events`` (each with its route), in the same order; events whose objects
    the read models do not hold are left out (logged). Its lookups (messages, channels, files)
    are all sent before any answer is read: on a connection in pipeline mode, with whatever the
    caller sent before (``realtime/notifications.ask_pushed``), they take one round trip."""
    lookups = (
        (MESSAGES_BY_IDS, _message_ids(events)),
        (CHANNELS_BY_IDS, _channel_ids(events)),
        (FILES_BY_IDS, _file_ids(events)),
    )
    messages_cur, channels_cur, files_cur = [await conn.execute(sql, (ids,)) if ids else None for sql, ids in lookups]
    messages = {m.id: m for m in map(to_message, await rows_of(messages_cur))}
    channels = {row[0]: ChannelInfo(*row) for row in await rows_of(channels_cur)}
    files = {row[0]: FileOut(*row) for row in await rows_of(files_cur)}
    shaped = []
    for recorded, where in events:
        frames = (
            _file_frames(recorded, files, channels)
            if isinstance(recorded.event, FileShared)
            else _frames(recorded, messages, channels)
        )
        if frames is None:
            log.warning("realtime.shape_missing_row", position=recorded.position, type=recorded.type)
            continue
        shaped.append(Shaped(recorded.position, where, tuple(_ENCODER.encode(f).decode() for f in frames)))
    return shaped


async def rows_of(cur: psycopg.AsyncCursor[Any] | None) -> list[tuple[Any, ...]]:
    """The answer to a lookup that was sent (none if there was nothing to look up)."""
    return [] if cur is None else await cur.fetchall()


def _message_ids(events: Sequence[tuple[RecordedEvent, Route]]) -> list[str]:
    ids: set[str] = set()
    for recorded, _ in events:
        if isinstance(recorded.event, MESSAGE_EVENTS):
            ids.add(recorded.event.message_id)
            root = getattr(recorded.event, "thread_root_id", None)
            if root:
                ids.add(root)
    return sorted(ids)


def _file_ids(events: Sequence[tuple[RecordedEvent, Route]]) -> list[str]:
    return sorted({r.event.file_id for r, _ in events if isinstance(r.event, FileShared)})


def _file_frames(
    recorded: RecordedEvent, files: dict[str, FileOut], channels: dict[str, ChannelInfo]
) -> list[EventFrame] | None:
    """``file.shared``: the file object as messages list it, and the message that shared it."""
    event = recorded.event
    assert isinstance(event, FileShared)
    info, found = channels.get(event.channel_id), files.get(event.file_id)
    if info is None:
        return None
    if found is None:
        return []  # deleted since: nobody is told about it any more
    return [
        EventFrame(
            position=recorded.position,
            type="file.shared",
            workspace_id=info.workspace_id,
            channel_id=info.id,
            data={"message_id": event.message_id, "file": found},
        )
    ]


def _channel_of(recorded: RecordedEvent) -> str | None:
    event = recorded.event
    if isinstance(event, (*MESSAGE_EVENTS, ReadMarkerMoved, FileShared)):
        return event.channel_id
    if isinstance(event, ch.ChannelCreated):
        return event.channel_id
    if recorded.stream_id.startswith("channel-"):
        return _id(recorded.stream_id, "channel-")
    return None


def _channel_ids(events: Sequence[tuple[RecordedEvent, Route]]) -> list[str]:
    return sorted({c for c in (_channel_of(r) for r, _ in events) if c})


def _frames(
    recorded: RecordedEvent, messages: dict[str, MessageOut], channels: dict[str, ChannelInfo]
) -> list[EventFrame] | None:
    event, position = recorded.event, recorded.position
    if isinstance(event, SessionEnded):
        return []  # for the gateway only (see Route.session_ended)
    if isinstance(event, NotificationsRead):  # read on another device: ``{ids, all}``
        return [
            EventFrame(
                position=position,
                type="notifications.read",
                workspace_id=None,
                channel_id=None,
                data={"ids": event.ids, "all": event.all},
            )
        ]
    if isinstance(event, (ws.MemberJoined, ws.RoleChanged, ws.MemberLeft)):
        return [_workspace_frame(recorded)]
    if isinstance(event, FileDeleted):  # one frame for all its channels, so it carries nothing of any of them
        return [
            EventFrame(
                position=position,
                type="file.deleted",
                workspace_id=event.workspace_id,
                channel_id=None,
                data={"file_id": event.file_id, "file": FileOut(event.file_id, "", 0, "", deleted=True)},
            )
        ]
    channel_id = _channel_of(recorded)
    info = channels.get(channel_id or "")
    if info is None:
        return None

    def frame(type_: str, data: Any) -> EventFrame:
        return EventFrame(position=position, type=type_, workspace_id=info.workspace_id, channel_id=info.id, data=data)

    if isinstance(event, MESSAGE_EVENTS):
        return _message_frames(event, messages, frame)
    match event:
        case ch.ChannelCreated():
            return [frame("channel.created", info)]
        case ch.ChannelRenamed() | ch.ChannelTopicSet():
            return [frame("channel.updated", info)]
        case ch.ChannelArchived():
            return [frame("channel.archived", info)]
        case ch.ChannelMemberJoined():
            return [
                frame("channel.member_joined", {"user_id": event.user_id, "added_by": event.added_by, "channel": info})
            ]
        case ch.ChannelMemberLeft():
            return [
                frame(
                    "channel.member_left", {"user_id": event.user_id, "removed_by": event.removed_by, "channel": info}
                )
            ]
        case ReadMarkerMoved():
            return [frame("read_marker.moved", {"channel_id": event.channel_id, "seq": event.seq})]
    return None


def _message_frames(event: Any, messages: dict[str, MessageOut], frame: Any) -> list[EventFrame] | None:
    message = messages.get(event.message_id)
    if message is None:
        return None
    if isinstance(event, (ReactionAdded, ReactionRemoved)):
        return [
            frame(
                event.type_name,
                {"message_id": event.message_id, "user_id": event.user_id, "emoji": event.emoji, "message": message},
            )
        ]
    frames = [frame(event.type_name, message)]
    root = messages.get(getattr(event, "thread_root_id", None) or "")
    if isinstance(event, (MessagePosted, MessageDeleted)) and root is not None:
        frames.append(frame("thread.updated", root))
    return frames


def _workspace_frame(recorded: RecordedEvent) -> EventFrame:
    event = recorded.event
    assert isinstance(event, (ws.MemberJoined, ws.RoleChanged, ws.MemberLeft))
    data: dict[str, Any] = {"user_id": event.user_id}
    match event:
        case ws.MemberJoined():
            data["role"] = event.role
        case ws.RoleChanged():
            data |= {"role": event.role, "changed_by": event.changed_by}
        case ws.MemberLeft():
            data["removed_by"] = event.removed_by
        case _:
            assert_never(event)
    return EventFrame(
        position=recorded.position,
        type=event.type_name,
        workspace_id=_id(recorded.stream_id, "workspace-"),
        channel_id=None,
        data=data,
    )
