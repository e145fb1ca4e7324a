"""Notification preferences and read state: the command side of *Presence, notifications* in
API.md. Every command appends to the caller's ``user-{id}`` stream (decider ``domain.notify``),
so all of a person's devices share them; the ``notifications`` projection applies them.

- ``PUT /channels/{ch}/notify {level, muted?}``: the channel must be visible to the caller
  (404 otherwise, as everywhere); ``muted`` left out keeps the current mute.
- ``PUT /me/dnd {until}`` / ``{until: null}``; ``PUT /me/keywords {keywords}``;
  ``PUT /me/email-notifications {enabled, delay_s?}`` (ours: email of unread mentions and DMs).
- ``POST /notifications/read {ids}`` or ``{all: true}``: ids that are not the caller's change
  nothing (and say nothing). The event reaches the caller's other sockets as ``notifications.read``.
  Nothing is appended when none of them is unread (the notifications read model is asked, once
  it has caught up with the log as it was when the request came).
A command that changes nothing appends nothing and answers the stream's last position.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from psycopg_pool import AsyncConnectionPool

from commands.handlers import context, dispatch
from commands.shell import CommandShell, Decided
from domain import notify as n
from domain.session import Principal
from infra.http import with_position
from projections.consistency import ReadConsistency
from projections.notifications import any_unread

NOTIFICATIONS = "notifications"
"""The read model that knows which notifications are unread (``projections/notifications.py``)."""


class NotifyBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: str
    muted: bool | None = None


class NotifyOut(msgspec.Struct, frozen=True):
    channel_id: str
    level: str
    muted: bool
    position: int


class DndBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    until: dt.datetime | None


class DndOut(msgspec.Struct, frozen=True):
    until: dt.datetime | None
    position: int


class KeywordsBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keywords: list[str]


class KeywordsOut(msgspec.Struct, frozen=True):
    keywords: list[str]
    position: int


class EmailBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool
    delay_s: int | None = None


class EmailOut(msgspec.Struct, frozen=True):
    enabled: bool
    delay_s: int
    position: int


class ReadBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ids: list[str] = []
    all: bool = False


class ReadOut(msgspec.Struct, frozen=True):
    position: int


async def decide(
    request: Request, shell: CommandShell, principal: Principal, command: Any, body: object, target: str | None = None
) -> Decided:
    """``command`` on the caller's own stream (``target``: the channel it is about, which the
    caller must see: 404 otherwise)."""
    me = principal.user_id
    return await dispatch(shell, context(request, me, body), type(command), target or me, lambda _: command, on=me)


class NotificationCommands(Controller):
    path = "/"
    tags = ["notifications"]

    @put("/channels/{channel_id:str}/notify", operation_id="setChannelNotify")
    async def channel(
        self,
        request: Request,
        channel_id: FromPath[str],
        data: JSONBody[NotifyBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[NotifyOut]:
        command = n.SetChannelNotify(channel_id, data.level, data.muted)
        decided = await decide(request, shell, principal, command, data, channel_id)
        pref = decided.states[0].channel(channel_id)
        return with_position(
            Response(NotifyOut(channel_id, pref.level, pref.muted, decided.position)), decided.position
        )

    @put("/me/dnd", operation_id="setDoNotDisturb")
    async def dnd(
        self,
        request: Request,
        data: JSONBody[DndBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[DndOut]:
        decided = await decide(request, shell, principal, n.SetDnd(data.until, dt.datetime.now(dt.UTC)), data)
        return with_position(Response(DndOut(decided.states[0].dnd_until, decided.position)), decided.position)

    @put("/me/keywords", operation_id="setKeywords")
    async def keywords(
        self,
        request: Request,
        data: JSONBody[KeywordsBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[KeywordsOut]:
        decided = await decide(request, shell, principal, n.SetKeywords(data.keywords), data)
        return with_position(
            Response(KeywordsOut(list(decided.states[0].keywords), decided.position)), decided.position
        )

    @put("/me/email-notifications", operation_id="setEmailNotifications")
    async def email(
        self,
        request: Request,
        data: JSONBody[EmailBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[EmailOut]:
        decided = await decide(request, shell, principal, n.SetEmailNotify(data.enabled, data.delay_s), data)
        state = decided.states[0]
        return with_position(
            Response(EmailOut(state.email_enabled, state.email_delay_s, decided.position)), decided.position
        )

    @post("/notifications/read", status_code=200, operation_id="markNotificationsRead")
    async def read(
        self,
        request: Request,
        data: JSONBody[ReadBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> Response[ReadOut]:
        command = n.check_read(n.MarkRead(tuple(data.ids), data.all))
        unread = await any_unread_now(shell, pool, consistency, principal.user_id, command)
        decided = await decide(request, shell, principal, replace(command, unread=unread), data)
        return with_position(Response(ReadOut(decided.position)), decided.position)


async def any_unread_now(
    shell: CommandShell, pool: AsyncConnectionPool, consistency: ReadConsistency, user_id: str, command: n.MarkRead
) -> bool:
    """Whether ``command`` would mark anything read: asked of the notifications read model once it
    has every event logged before this request (a notification could be in the log and not yet
    in the table); if it is not there in time, assume so (an event too many, never one too few)."""
    if not await consistency.watcher.wait((NOTIFICATIONS,), await shell.head(), consistency.timeout_s):
        return True
    async with pool.connection() as conn:
        return await any_unread(conn, user_id, command.ids, command.all)
