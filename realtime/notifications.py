"""``notification.created`` frames, sent to the person notified on ``hubbub.user.{user}``.

A notification is no event of its own in the log: it is a ``message.posted`` as one person gets
it. Its frame therefore carries that event's position, and travels in ONE envelope with the
event's own frames (``message.posted``, ``thread.updated``) on the person's subject, published
before the channel's envelope. A socket keeps the first envelope of a position and drops the
others (``realtime/connection.py``), so the person gets the message and then its notification,
each once, and everyone else gets the channel's envelope as before. Only notifications with
``pushed`` are sent (do-not-disturb and mute record them silently). A replay (resume) adds the
same frames for the socket's own user (``with_notifications``), so a resumed client misses none.

Bulk: one query per batch (or replay page) for every notification of its posts, and one publish
per person (an ``@channel`` to 10,000 members: 10,000 publishes, then one flush by the publisher).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Sequence

import msgspec
import psycopg

from domain.events import RecordedEvent
from domain.message import MessagePosted
from realtime import subjects
from realtime.frames import EventFrame, Route, Shaped

_PUSHED = """SELECT user_id, position, id, kind, channel_id, message_id, workspace_id, created_at, read
             FROM notifications WHERE message_id = ANY(%(ids)s) AND pushed
             AND (%(user)s::text IS NULL OR user_id = %(user)s)"""
_ENCODER = msgspec.json.Encoder()
_USER_PREFIX = subjects.user("")


class NotificationData(msgspec.Struct, frozen=True):
    """As ``GET /notifications`` lists it."""

    id: str
    kind: str
    channel_id: str
    message_id: str
    workspace_id: str
    created_at: dt.datetime
    read: bool


def _posted_ids(events: Sequence[tuple[RecordedEvent, Route]]) -> list[str]:
    return [r.event.message_id for r, _ in events if isinstance(r.event, MessagePosted)]


async def _pushed(conn: psycopg.AsyncConnection, events: Sequence[tuple[RecordedEvent, Route]],
                  user_id: str | None) -> dict[int, list[tuple[str, str]]]:
    """position -> [(user id, encoded notification.created frame)] for the posts among ``events``."""
    ids = _posted_ids(events)
    if not ids:
        return {}
    cur = await conn.execute(_PUSHED, {"ids": ids, "user": user_id})
    found: defaultdict[int, list[tuple[str, str]]] = defaultdict(list)
    for user, position, *data in await cur.fetchall():
        item = NotificationData(*data)
        frame = EventFrame(position=position, type="notification.created", workspace_id=item.workspace_id,
                           channel_id=item.channel_id, data=item)
        found[position].append((user, _ENCODER.encode(frame).decode()))
    return found


async def notification_envelopes(conn: psycopg.AsyncConnection, shaped: Sequence[Shaped],
                                 events: Sequence[tuple[RecordedEvent, Route]]) -> dict[int, list[subjects.Envelope]]:
    """position -> the envelopes to publish BEFORE that event's own: one per person notified."""
    pushed = await _pushed(conn, events, None)
    out: dict[int, list[subjects.Envelope]] = {}
    for item in shaped:
        if item.position in pushed:
            out[item.position] = [subjects.Envelope(subjects.user(user), item.position, (*item.frames, frame))
                                  for user, frame in pushed[item.position]]
    return out


def owner_of(wanted: Collection[str]) -> str | None:
    """The user whose socket listens to ``wanted`` (the one user subject among them)."""
    return next((s.removeprefix(_USER_PREFIX) for s in wanted if s.startswith(_USER_PREFIX)), None)


async def with_notifications(conn: psycopg.AsyncConnection, shaped: list[Shaped],
                             events: Sequence[tuple[RecordedEvent, Route]], wanted: Collection[str]) -> list[Shaped]:
    """A replay page with the socket owner's ``notification.created`` frames added."""
    user = owner_of(wanted)
    if user is None:
        return shaped
    pushed = await _pushed(conn, events, user)
    if not pushed:
        return shaped
    return [dataclasses.replace(item, frames=(*item.frames, *(f for _, f in pushed[item.position])))
            if item.position in pushed else item for item in shaped]
