"""Handlers as data: for every command type, the decider that decides it, the stream it is
decided on, and the loader of what the caller may do there (``commands/access.py``).

A route builds its command and hands it over: ``dispatch`` for one command on one stream, or a
``Plan`` of ``entry``s for several streams at once. Either way the shell's ``run`` is the only
retry loop, and ``context`` the only way a request becomes a ``Context`` (who, when, the request
id, and the Idempotency-Key scoped to the caller and tied to the request: see
``commands/idempotency.py``). ``access=None``: the decider checks from its own state (a
workspace's members), or the route does before it decides (noted on the row).
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from litestar import Request

from commands.access import channel_access, message_access, workspace_stream_of
from commands.idempotency import Key, keyed
from commands.shell import CommandShell, Context, Decided, Entry, Plan
from domain import account, session
from domain import channel as ch
from domain import file as f
from domain import message as m
from domain import notify as n
from domain import readstate as rs
from domain import workspace as ws
from domain.decider import Decider

C = TypeVar("C")

Loader = Callable[[CommandShell, str, str], Awaitable[Any]]
"""``(shell, id the command points at, caller's user id)`` -> what the caller may do there; 404
for what they may not see."""


@dataclass(frozen=True, slots=True)
class Handler:
    decider: Decider[Any, Any]
    stream: Callable[..., str]
    """The stream, from the ids the command is addressed to (a channel's; the caller's own)."""
    access: Loader | None = None


_CHANNEL = Handler(ch.CHANNEL, ch.channel_stream, channel_access)
_MESSAGE = Handler(m.MESSAGE, m.message_stream, message_access)
_NAME = Handler(ch.NAME, ch.name_stream)
_WORKSPACE = Handler(ws.WORKSPACE, workspace_stream_of)  # the decider checks the caller's role
_FILE = Handler(f.FILE, f.file_stream)
_PREFS = Handler(n.NOTIFY, rs.user_stream)

HANDLERS: dict[type, Handler] = {
    **dict.fromkeys((ch.Rename, ch.SetTopic, ch.Archive, ch.Join, ch.Leave, ch.AddMembers, ch.RemoveMember), _CHANNEL),
    ch.CreateChannel: Handler(ch.CHANNEL, ch.channel_stream),  # the route checks the workspace role
    ch.CreateDM: Handler(ch.CHANNEL, ch.channel_stream),  # the decider checks the people's roles
    ch.Claim: _NAME,
    ch.Release: _NAME,
    m.Post: Handler(m.MESSAGE, m.message_stream, channel_access),  # the route loads it with the session
    **dict.fromkeys((m.Edit, m.Delete, m.React, m.Unreact), _MESSAGE),
    rs.MoveReadMarker: Handler(rs.READ_STATE, rs.user_stream, channel_access),
    n.SetChannelNotify: Handler(n.NOTIFY, rs.user_stream, channel_access),
    **dict.fromkeys((n.SetDnd, n.SetKeywords, n.SetEmailNotify, n.MarkRead, n.RecordEmailed), _PREFS),
    **dict.fromkeys((ws.CreateWorkspace, ws.CreateInvite, ws.AcceptInvite, ws.ChangeRole, ws.RemoveMember), _WORKSPACE),
    # Files: the routes check the workspace role (upload) and what the caller sees (delete, share).
    **dict.fromkeys((f.Upload, f.Share, f.Unshare, f.Delete, f.RemoveBlobs), _FILE),
    session.Start: Handler(session.SESSION, session.session_stream),  # from the token
    session.End: Handler(session.SESSION, str),  # the session's stream, as the principal names it
    account.Register: Handler(account.ACCOUNT, account.account_stream),
}


def entry(commands: Sequence[Any], *ids: str) -> Entry:
    """``commands`` (of one decider) on the stream ``ids`` name, for a ``Plan``."""
    handler = HANDLERS[type(commands[0])]
    return handler.decider, handler.stream(*ids), commands


async def dispatch(
    shell: CommandShell,
    ctx: Context,
    kind: type[C],
    target: str,
    make: Callable[[Any], C | Awaitable[C]],
    *,
    on: str | None = None,
) -> Decided:
    """Decide one command of type ``kind`` pointed at ``target``: each attempt loads what the
    caller may do there (the handler's loader), makes the command from that with ``make``, and
    decides it on the handler's stream (of ``on`` if given: the caller's own, for their read
    markers and preferences). A conflict is retried by loading again. ``make`` may be a
    coroutine function, for a command that needs a read of its own (a channel's last seq)."""
    handler = HANDLERS[kind]
    stream = handler.stream(target if on is None else on)
    loader = handler.access

    async def plan(_: bool) -> Plan:
        found = None if loader is None or ctx.actor_id is None else await loader(shell, target, ctx.actor_id)
        command = make(found)
        if inspect.isawaitable(command):
            command = await command
        return Plan(((handler.decider, stream, (command,)),), ctx)

    return await shell.run(plan)


def context(
    request: Request[Any, Any, Any], actor_id: str | None, body: object = None, *, keys: bool = True
) -> Context:
    """The request's ``Context``. ``body``: the decoded body, part of what an Idempotency-Key
    is tied to, with the route's ``operation_id`` and path parameters. ``keys=False``: the
    route does not honour Idempotency-Key (its answer cannot be repeated)."""
    header = request.headers.get
    value = header("idempotency-key") if keys else None
    key = None if value is None else keyed(actor_id, value, operation_of(request), request.path_params, body)
    return context_of(actor_id, header, key)


def context_of(actor_id: str | None, header: Callable[[str], str | None], key: Key | None = None) -> Context:
    """``context`` from a header lookup (the post lane has no ``Request``)."""
    return Context(actor_id=actor_id, now=dt.datetime.now(dt.UTC), correlation_id=header("x-request-id"), key=key)


def operation_of(request: Request[Any, Any, Any]) -> str:
    operation = request.route_handler.operation_id
    return operation if isinstance(operation, str) else request.route_handler.handler_name
