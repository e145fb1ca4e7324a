"""Notifications and notification settings: the query side (read model: the ``notifications``
projection; who may see which channel: ``projections/visibility.py``).

``GET /notifications`` lists the caller's notifications newest first (ids sort in log order),
``?unread=true`` only the unread ones, paging with ``before`` = the ``next_cursor`` of the previous
page. Only notifications from channels the caller may see now are listed: someone removed from a
private channel or a workspace no longer hears of it, as with the WebSocket.
``GET /me/notification-settings`` answers the caller's preferences (ours; the PUTs set them).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, Parameter
from psycopg_pool import AsyncConnectionPool

from domain import notify as n
from domain.session import Principal
from projections.consistency import ReadConsistency
from projections.visibility import VISIBLE_FROM, VISIBLE_WHERE

Limit = Annotated[int, Parameter(ge=1, le=200)]
Cursor = Annotated[str | None, Parameter(max_length=64)]

_LIST = f"""
SELECT n.id, n.kind, n.channel_id, n.message_id, n.workspace_id, n.created_at, n.read
FROM notifications n JOIN ({VISIBLE_FROM}) ON c.channel_id = n.channel_id
WHERE n.user_id = %(user_id)s AND {VISIBLE_WHERE} AND (NOT %(unread)s OR NOT n.read)
  AND (%(before)s::text IS NULL OR n.id < %(before)s)
ORDER BY n.id DESC LIMIT %(limit)s
"""
_USER = "SELECT dnd_until, email_enabled, email_delay_s FROM notify_users WHERE user_id = %(user_id)s"
_KEYWORDS = "SELECT keyword FROM notify_keywords WHERE user_id = %(user_id)s ORDER BY n"
_CHANNELS = f"""
SELECT p.channel_id, p.level, p.muted FROM notify_channel_prefs p JOIN ({VISIBLE_FROM}) ON c.channel_id = p.channel_id
WHERE p.user_id = %(user_id)s AND {VISIBLE_WHERE} ORDER BY p.channel_id
"""


class NotificationOut(msgspec.Struct, frozen=True):
    id: str
    kind: str
    channel_id: str
    message_id: str
    workspace_id: str
    created_at: dt.datetime
    read: bool


class NotificationsOut(msgspec.Struct, frozen=True):
    items: list[NotificationOut]
    next_cursor: str | None


class ChannelSettingOut(msgspec.Struct, frozen=True):
    channel_id: str
    level: str
    muted: bool


class EmailSettingOut(msgspec.Struct, frozen=True):
    enabled: bool
    delay_s: int


class SettingsOut(msgspec.Struct, frozen=True):
    dnd_until: dt.datetime | None
    keywords: list[str]
    email: EmailSettingOut
    channels: list[ChannelSettingOut]
    """Channels whose settings differ from the default (level ``mentions``, not muted) or were set."""


class NotificationQueries(Controller):
    path = "/"
    tags = ["notifications"]

    @get("/notifications", operation_id="listNotifications")
    async def list_notifications(
        self,
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
        unread: FromQuery[bool] = False,
        limit: Limit = 50,
        before: Cursor = None,
    ) -> NotificationsOut:
        await consistency.wait(principal.since_position)
        params = {"user_id": principal.user_id, "unread": unread, "before": before, "limit": limit}
        async with pool.connection() as conn:
            cur = await conn.execute(_LIST, params)
            items = [NotificationOut(*row) for row in await cur.fetchall()]
        return NotificationsOut(items, items[-1].id if len(items) == limit else None)

    @get("/me/notification-settings", operation_id="getNotificationSettings")
    async def settings(
        self,
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> SettingsOut:
        await consistency.wait(principal.since_position)
        params = {"user_id": principal.user_id}
        async with pool.connection() as conn:
            user = await (await conn.execute(_USER, params)).fetchone()
            keywords = [row[0] for row in await (await conn.execute(_KEYWORDS, params)).fetchall()]
            channels = [ChannelSettingOut(*row) for row in await (await conn.execute(_CHANNELS, params)).fetchall()]
        dnd, enabled, delay = user or (None, True, n.DEFAULT_EMAIL_DELAY_S)
        return SettingsOut(dnd, keywords, EmailSettingOut(enabled, delay), channels)
