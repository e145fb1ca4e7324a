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
from typing import Any

import msgspec
import psycopg

from domain.events import RecordedEvent
from domain.message import MessagePosted
from realtime import subjects
from realtime.frames import EventFrame, Route, Shaped, rows_of

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


async def ask_pushed(
    conn: psycopg.AsyncConnection, events: Sequence[tuple[RecordedEvent, Route]], user_id: str | None
) -> psycopg.AsyncCursor[Any] | None:
    """Send the lookup of the pushed notifications of the posts among ``events`` (of ``user_id``
    only, or everyone's); ``pushed`` reads its answer. Sent before ``shape``'s lookups on a
    connection in pipeline mode, they share one round trip."""
    ids = _posted_ids(events)
    return await conn.execute(_PUSHED, {"ids": ids, "user": user_id}) if ids else None


async def pushed(asked: psycopg.AsyncCursor[Any] | None) -> dict[int, list[tuple[str, str]]]:
    """position -> [(user id, encoded notification.created frame)]."""
    found: defaultdict[int, list[tuple[str, str]]] = defaultdict(list)
    for user, position, *data in await rows_of(asked):
        item = NotificationData(*data)
        frame = EventFrame(
            position=position,
            type="notification.created",
            workspace_id=item.workspace_id,
            channel_id=item.channel_id,
            data=item,
        )
        found[position].append((user, _ENCODER.encode(frame).decode()))
    return found


def notification_envelopes(
    shaped: Sequence[Shaped], found: dict[int, list[tuple[str, str]]]
) -> dict[int, list[subjects.Envelope]]:
    """position -> the envelopes to publish BEFORE that event's own: one per person notified."""
    out: dict[int, list[subjects.Envelope]] = {}
    for item in shaped:
        if item.position in found:
            out[item.position] = [
                subjects.Envelope(subjects.user(user), item.position, (*item.frames, frame))
                for user, frame in found[item.position]
            ]
    return out


def owner_of(wanted: Collection[str]) -> str | None:
    """The user whose socket listens to ``wanted`` (the one user subject among them)."""
    return next((s.removeprefix(_USER_PREFIX) for s in wanted if s.startswith(_USER_PREFIX)), None)


def with_notifications(shaped: list[Shaped], found: dict[int, list[tuple[str, str]]]) -> list[Shaped]:
    """A replay page with the socket owner's ``notification.created`` frames added (``found``:
    ``pushed`` of that user's lookup)."""
    if not found:
        return shaped
    return [
        dataclasses.replace(item, frames=(*item.frames, *(f for _, f in found[item.position])))
        if item.position in found
        else item
        for item in shaped
    ]
