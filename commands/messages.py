"""Post, edit, delete, react: the command side of *Messages, threads, reactions* in API.md.

Every route first loads the channel's and the workspace's decider state (``channel-{id}``,
``workspace-{id}``) and asks ``domain/access.py``: a channel the caller may not see is 404 for
everything in it, an archived one refuses writes (409), and posting, reacting and editing need
membership (403 in a channel the caller can see). The message's own rules are its decider's.
A post with ``file_ids`` and the deletion of a message with files also write the files' streams
(``file.shared`` / ``file.unshared``, see ``commands/files.py``) in the same append.

``POST .../messages`` answers ``{id, seq, position}``: seq is given by the ``messages``
projection in log order, so the route waits (at most ``read_wait_timeout_s``) for it to pass the
position and reads it; if the projection is that late the answer is still 201, with ``seq: null``
(the message is in the log; the seq arrives with it in history and over the WebSocket).
A ``client_msg_id`` (or, without one, an ``Idempotency-Key``) makes the message id
``uuid5(channel, author, key)`` and the event id deterministic, so a retry appends nothing and
gets the first answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import replace

import msgspec
from litestar import Controller, Request, Response, delete, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from commands.shell import CommandShell, Context, backoff
from domain import access
from domain import message as m
from domain.channel import CHANNEL, Channel, channel_stream, visible, writable
from domain.emoji import check_emoji
from domain.errors import DomainError, Forbidden, NotFound
from domain.session import Principal
from domain.session import SESSION
from domain.workspace import WORKSPACE, Workspace, workspace_stream
from commands.auth import authenticate, principal_of, session_stream_of
from commands.ratelimits import check_post
from commands.here import here_online
from commands.edge import Services, services_of
from commands.files import share_entries, unshare_entries
from infra.http import with_position
from infra.eventstore import WrongExpectedVersion
from infra.ids import new_id
from projections.consistency import ReadConsistency
from projections.seqs import SeqLookup

READ_MODEL = "messages"
POST_ATTEMPTS = 3
"""A post decided on cached session, channel and workspace states, then on read ones (twice)."""


HeaderGet = Callable[[str], "str | None"]
"""A request header by its lower-case name (None if absent): ``request.headers.get`` or the post lane's."""


class PostBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str = ""
    thread_root_id: str | None = None
    file_ids: list[str] = []
    client_msg_id: str | None = None


class EditBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str


class PostedOut(msgspec.Struct, frozen=True):
    id: str
    seq: int | None
    position: int


class EditedOut(msgspec.Struct, frozen=True):
    id: str
    edited_at: dt.datetime | None
    position: int


class DeletedOut(msgspec.Struct, frozen=True):
    id: str
    deleted: bool
    position: int


class ReactionOut(msgspec.Struct, frozen=True):
    message_id: str
    emoji: str
    reacted: bool
    position: int


class Access(msgspec.Struct, frozen=True):
    channel: Channel
    role: str | None
    members: Collection[str]


def context(request: Request, principal: Principal, key: str | None = None) -> Context:
    return context_of(principal.user_id, request.headers.get, key)


def context_of(user_id: str, header: HeaderGet, key: str | None = None) -> Context:
    return Context(actor_id=user_id, now=dt.datetime.now(dt.UTC), correlation_id=header("x-request-id"),
                   idempotency_key=key)


async def channel_access(shell: CommandShell, channel_id: str, user_id: str) -> Access:
    """The channel as the caller may see it (404 otherwise), their role and the workspace's members."""
    if not m.could_be_id(channel_id):
        raise NotFound("no such channel")
    channel = (await shell.load(CHANNEL, channel_stream(channel_id))).state
    if channel.channel_id is None or channel.workspace_id is None:
        raise NotFound("no such channel")
    workspace = (await shell.load(WORKSPACE, workspace_stream(channel.workspace_id))).state
    return _access(channel, workspace, user_id)


async def caller_and_channel(shell: CommandShell, authorization: str | None, channel_id: str,
                             *, trust_cache: bool = False) -> tuple[Principal, Access, list[tuple[str, int]]]:
    """``authenticate`` then ``channel_access``, in ONE read of the session, channel and workspace
    streams once this process knows the channel's workspace (a channel never changes workspace),
    or, with ``trust_cache``, in no read at all when this process holds all three. Also answers
    the versions decided on, for the append to expect (a stale cache is then a refused append)."""
    session = session_stream_of(authorization)
    known = shell.cached(CHANNEL, channel_stream(channel_id)) if m.could_be_id(channel_id) else None
    if known is None or known.state.workspace_id is None:
        principal = await authenticate(shell, authorization)
        return principal, await channel_access(shell, channel_id, principal.user_id), []
    wanted = [(SESSION, session), (CHANNEL, channel_stream(channel_id)),
              (WORKSPACE, workspace_stream(known.state.workspace_id))]
    held = [shell.cached(decider, stream) for decider, stream in wanted] if trust_cache else []
    if held and all(h is not None and h.version > 0 for h in held):
        caller, channel, workspace = held
    else:
        caller, channel, workspace = await shell.load_many(wanted)
    principal = principal_of(session, caller)  # first: nothing is said about the channel to a stranger
    expect = [(stream, loaded.version) for (_, stream), loaded in zip(wanted, (caller, channel, workspace), strict=True)]
    return principal, _access(channel.state, workspace.state, principal.user_id), expect


def _access(channel: Channel, workspace: Workspace, user_id: str) -> Access:
    role = access.role_of(workspace.members, user_id)
    visible(channel, user_id, role)
    return Access(channel, role, workspace.members.keys())  # a view: no copy of every member per post


def must_be_member(found: Access, user_id: str, doing: str) -> None:
    if not access.is_channel_member(found.role, found.channel, user_id):
        raise Forbidden(f"join this channel to {doing}")


async def message_access(shell: CommandShell, message_id: str, user_id: str) -> tuple[m.Message, Access]:
    """The message and its channel, or 404 if either is missing or the channel is not visible."""
    if not m.could_be_id(message_id):
        raise NotFound("no such message")
    message = (await shell.load(m.MESSAGE, m.message_stream(message_id))).state
    if not message.exists or message.channel_id is None:
        raise NotFound("no such message")
    try:
        return message, await channel_access(shell, message.channel_id, user_id)
    except NotFound:
        raise NotFound("no such message") from None


async def thread_root(shell: CommandShell, root_id: str | None) -> m.Message | None:
    """The state of the message a reply names (the decider checks it); an id that cannot be ours
    is one that does not exist."""
    if root_id is None:
        return None
    if not m.could_be_id(root_id):
        return m.Message()
    return (await shell.load(m.MESSAGE, m.message_stream(root_id))).state


async def stream_position(shell: CommandShell, stream_id: str) -> int:
    """The latest position of a stream: the answer of a command that changed nothing."""
    return (await shell.load(m.MESSAGE, stream_id)).last_position


class MessagesController(Controller):
    path = "/"
    tags = ["messages"]

    @post("/channels/{channel_id:str}/messages", status_code=201, operation_id="postMessage")
    async def post_message(
        self, request: Request, channel_id: FromPath[str], data: JSONBody[PostBody],
    ) -> Response[PostedOut]:
        # The hottest route: no dependencies (Litestar resolves two or more in a task group),
        # and the caller's session is read with the channel (see caller_and_channel). Well-formed
        # posts rarely get here: commands/lane.py answers them with accept_post, past Litestar.
        out = await accept_post(services_of(request), request.headers.get, channel_id, data)
        return with_position(Response(out, status_code=201), out.position)

    @patch("/messages/{message_id:str}", operation_id="editMessage")
    async def edit_message(
        self, request: Request, message_id: FromPath[str], data: JSONBody[EditBody], principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[EditedOut]:
        user = principal.user_id
        _, found = await message_access(shell, message_id, user)
        writable(found.channel, user, found.role)
        must_be_member(found, user, "edit messages in it")
        ctx = context(request, principal)
        command = m.Edit(actor_id=user, text=data.text, workspace_members=found.members)
        outcome = await shell.handle(m.MESSAGE, m.message_stream(message_id), command, ctx)
        position = outcome.position or await stream_position(shell, m.message_stream(message_id))
        edited_at = ctx.now if outcome.events else None
        return with_position(Response(EditedOut(message_id, edited_at, position)), position)

    @delete("/messages/{message_id:str}", status_code=200, operation_id="deleteMessage")
    async def delete_message(
        self, request: Request, message_id: FromPath[str], principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[DeletedOut]:
        user = principal.user_id
        message, found = await message_access(shell, message_id, user)
        writable(found.channel, user, found.role)
        command = m.Delete(actor_id=user, actor_is_admin=access.is_admin(found.role))
        if message.file_ids:  # the files stop being visible through this message, in the same append
            entries = [(m.MESSAGE, m.message_stream(message_id), [command]), *unshare_entries(message.file_ids, message_id)]
            position, _ = await shell.decide_many(entries, context(request, principal))
        else:
            outcome = await shell.handle(m.MESSAGE, m.message_stream(message_id), command, context(request, principal))
            position = outcome.position or await stream_position(shell, m.message_stream(message_id))
        return with_position(Response(DeletedOut(message_id, True, position)), position)

    @put("/messages/{message_id:str}/reactions/{emoji:str}", operation_id="addReaction")
    async def add_reaction(
        self, request: Request, message_id: FromPath[str], emoji: FromPath[str], principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[ReactionOut]:
        return await react(request, shell, principal, message_id, m.React(user_id=principal.user_id, emoji=emoji))

    @delete("/messages/{message_id:str}/reactions/{emoji:str}", status_code=200, operation_id="removeReaction")
    async def remove_reaction(
        self, request: Request, message_id: FromPath[str], emoji: FromPath[str], principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[ReactionOut]:
        return await react(request, shell, principal, message_id, m.Unreact(user_id=principal.user_id, emoji=emoji))


async def react(request: Request, shell: CommandShell, principal: Principal, message_id: str,
                command: m.React | m.Unreact) -> Response[ReactionOut]:
    user = principal.user_id
    _, found = await message_access(shell, message_id, user)
    writable(found.channel, user, found.role)
    if isinstance(command, m.React):
        must_be_member(found, user, "react in it")
    outcome = await shell.handle(m.MESSAGE, m.message_stream(message_id), command, context(request, principal))
    position = outcome.position or await stream_position(shell, m.message_stream(message_id))
    body = ReactionOut(message_id, check_emoji(command.emoji), isinstance(command, m.React), position)
    return with_position(Response(body), position)


async def post_with_files(ctx: Context, services: Services, command: m.Post, key: str | None) -> int:
    """The post and a ``file.shared`` on each file's stream, in one append (all or nothing).
    Under a client key the message id stands in for it: it is unique per channel and author,
    while the same client_msg_id may share the same file in another channel."""
    m.check_files(command.file_ids)
    entries = [(m.MESSAGE, m.message_stream(command.message_id), [command]),
               *await share_entries(services, list(command.file_ids), command.author_id, command.workspace_id,
                                    command.channel_id, command.message_id)]
    position, _ = await services.shell.decide_many(entries, replace(ctx, idempotency_key=key and command.message_id))
    return position


async def accept_post(services: Services, header: HeaderGet, channel_id: str, data: PostBody) -> PostedOut:
    """``POST /channels/{ch}/messages``: decided, appended and answered with the seq the
    ``messages`` projection gave it. ``header`` looks up a request header by lower-case name."""
    shell, consistency = services.shell, services.consistency
    authorization = header("authorization")
    # First on what this process holds of the session, channel and workspace, without reading
    # them. The append expects their versions, so if one moved meanwhile (revoked, removed,
    # archived...) nothing is written; and a refusal is only answered once decided on a read.
    # The next attempt reads them and decides again.
    limited = False
    for attempt in range(1, POST_ATTEMPTS + 1):
        held = attempt == 1 and not data.file_ids
        try:
            principal, found, expect = await caller_and_channel(shell, authorization, channel_id, trust_cache=held)
            writable(found.channel, principal.user_id, found.role)
            must_be_member(found, principal.user_id, "post in it")
            if not limited:
                await check_post(services.limiter, services.settings, principal.user_id)
                limited = True
            message_id, position = await _append_post(header, services, principal, found, expect, channel_id, data)
        except DomainError:
            if not held:
                raise
            continue
        except WrongExpectedVersion as exc:
            if attempt == POST_ATTEMPTS or exc.stream_id not in dict(expect):
                raise
            await asyncio.sleep(backoff(attempt - 1) if attempt > 1 else 0)
            continue
        break
    seq = await seq_of(services.seqs, consistency, message_id, position)
    return PostedOut(message_id, seq, position)


async def _append_post(header: HeaderGet, services: Services, principal: Principal, found: Access,
                       expect: list[tuple[str, int]], channel_id: str, data: PostBody) -> tuple[str, int]:
    shell, user = services.shell, principal.user_id
    key = m.check_client_msg_id(data.client_msg_id) or header("idempotency-key")
    message_id = m.client_message_id(channel_id, user, key) if key else new_id()
    root = await thread_root(shell, data.thread_root_id)
    command = m.Post(message_id=message_id, channel_id=channel_id, workspace_id=found.channel.workspace_id or "",
                     author_id=user, text=data.text, workspace_members=found.members,
                     thread_root_id=data.thread_root_id, root=root, file_ids=tuple(data.file_ids),
                     client_msg_id=data.client_msg_id,
                     online_ids=await here_online(services.presence, data.text, found.channel.members & found.members,
                                                  user))
    ctx = context_of(user, header, key)
    if data.file_ids:
        return message_id, await post_with_files(ctx, services, command, key)
    outcome = await shell.handle(m.MESSAGE, m.message_stream(message_id), command, ctx, new=key is None,
                                 expect=expect)
    return message_id, outcome.position


async def seq_of(seqs: SeqLookup, consistency: ReadConsistency, message_id: str, position: int) -> int | None:
    """The seq the ``messages`` projection gave the post at ``position``: as it notified it with
    the batch (``projections/consistency.py``), or read from its table when this process missed that."""
    watcher = consistency.watcher
    if not await watcher.wait((READ_MODEL,), position, consistency.timeout_s):
        return None
    seq = watcher.seqs.get(position)
    return seq if seq is not None else await seqs.seq(message_id)
