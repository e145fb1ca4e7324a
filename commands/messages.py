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
``uuid5(channel, author, key)``, so a retry appends nothing and gets the first answer; the same
key with another body is 422 (``commands/idempotency.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import assert_never

import msgspec
from litestar import Controller, Request, Response, delete, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from commands.access import Access, access_of, channel_access, message_access, must_be_member
from commands.auth import authenticate, principal_of, session_stream_of
from commands.edge import Services, services_of
from commands.files import share_entries, unshare_entries
from commands.handlers import context, context_of, dispatch, entry
from commands.here import here_online
from commands.idempotency import Key, fingerprint, keyed
from commands.ratelimits import check_post
from commands.shell import CommandShell, Plan
from domain import access
from domain import message as m
from domain.channel import CHANNEL, channel_stream, writable
from domain.emoji import check_emoji
from domain.session import SESSION, Principal
from domain.workspace import WORKSPACE, workspace_stream
from infra.http import with_position
from infra.ids import new_id
from projections.consistency import ReadConsistency
from projections.seqs import SeqLookup

READ_MODEL = "messages"
POST = "postMessage"


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


async def caller_and_channel(
    shell: CommandShell, authorization: str | None, channel_id: str, *, trust_cache: bool = False
) -> tuple[Principal, Access, list[tuple[str, int]]]:
    """``authenticate`` then ``channel_access``, in ONE read of the session, channel and workspace
    streams once this process knows the channel's workspace (a channel never changes workspace),
    or, with ``trust_cache``, in no read at all when this process holds all three. Also answers
    the versions decided on, for the append to expect (a stale cache is then a refused append)."""
    session = session_stream_of(authorization)
    known = shell.cached(CHANNEL, channel_stream(channel_id)) if m.could_be_id(channel_id) else None
    if known is None or known.state.workspace_id is None:
        principal = await authenticate(shell, authorization)
        return principal, await channel_access(shell, channel_id, principal.user_id), []
    wanted = [
        (SESSION, session),
        (CHANNEL, channel_stream(channel_id)),
        (WORKSPACE, workspace_stream(known.state.workspace_id)),
    ]
    held = [shell.cached(decider, stream) for decider, stream in wanted] if trust_cache else []
    if held and all(h is not None and h.version > 0 for h in held):
        caller, channel, workspace = held
    else:
        caller, channel, workspace = await shell.load_many(wanted)
    principal = principal_of(session, caller)  # first: nothing is said about the channel to a stranger
    expect = [
        (stream, loaded.version) for (_, stream), loaded in zip(wanted, (caller, channel, workspace), strict=True)
    ]
    return principal, access_of(channel.state, workspace.state, principal.user_id), expect


async def thread_root(shell: CommandShell, root_id: str | None) -> m.Message | None:
    """The state of the message a reply names (the decider checks it); an id that cannot be ours
    is one that does not exist."""
    if root_id is None:
        return None
    if not m.could_be_id(root_id):
        return m.Message()
    return (await shell.load(m.MESSAGE, m.message_stream(root_id))).state


class MessagesController(Controller):
    path = "/"
    tags = ["messages"]

    @post("/channels/{channel_id:str}/messages", status_code=201, operation_id="postMessage")
    async def post_message(
        self,
        request: Request,
        channel_id: FromPath[str],
        data: JSONBody[PostBody],
    ) -> Response[PostedOut]:
        # The hottest route: no dependencies (Litestar resolves two or more in a task group),
        # and the caller's session is read with the channel (see caller_and_channel). Well-formed
        # posts rarely get here: commands/lane.py answers them with accept_post, past Litestar.
        out = await accept_post(services_of(request), request.headers.get, channel_id, data)
        return with_position(Response(out, status_code=201), out.position)

    @patch("/messages/{message_id:str}", operation_id="editMessage")
    async def edit_message(
        self,
        request: Request,
        message_id: FromPath[str],
        data: JSONBody[EditBody],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[EditedOut]:
        me = principal.user_id

        def edit(found: tuple[m.Message, Access]) -> m.Edit:
            where = found[1]
            writable(where.channel, me, where.role)
            must_be_member(where, me, "edit messages in it")
            return m.Edit(actor_id=me, text=data.text, workspace_members=where.members)

        ctx = context(request, me, data)
        decided = await dispatch(shell, ctx, m.Edit, message_id, edit)
        edited_at = ctx.now if decided.events[0] else None
        return with_position(Response(EditedOut(message_id, edited_at, decided.position)), decided.position)

    @delete("/messages/{message_id:str}", status_code=200, operation_id="deleteMessage")
    async def delete_message(
        self,
        request: Request,
        message_id: FromPath[str],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[DeletedOut]:
        me = principal.user_id

        async def plan(_: bool) -> Plan:
            # The files stop being visible through this message in the same append.
            message, where = await message_access(shell, message_id, me)
            writable(where.channel, me, where.role)
            command = m.Delete(actor_id=me, actor_is_admin=access.is_admin(where.role))
            return Plan((entry([command], message_id), *unshare_entries(message.file_ids, message_id)), ctx)

        ctx = context(request, me)
        decided = await shell.run(plan)
        return with_position(Response(DeletedOut(message_id, True, decided.position)), decided.position)

    @put("/messages/{message_id:str}/reactions/{emoji:str}", operation_id="addReaction")
    async def add_reaction(
        self,
        request: Request,
        message_id: FromPath[str],
        emoji: FromPath[str],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[ReactionOut]:
        return await react(request, shell, principal, message_id, m.React(user_id=principal.user_id, emoji=emoji))

    @delete("/messages/{message_id:str}/reactions/{emoji:str}", status_code=200, operation_id="removeReaction")
    async def remove_reaction(
        self,
        request: Request,
        message_id: FromPath[str],
        emoji: FromPath[str],
        principal: NamedDependency[Principal],
        shell: NamedDependency[CommandShell],
    ) -> Response[ReactionOut]:
        return await react(request, shell, principal, message_id, m.Unreact(user_id=principal.user_id, emoji=emoji))


async def react(
    request: Request, shell: CommandShell, principal: Principal, message_id: str, command: m.React | m.Unreact
) -> Response[ReactionOut]:
    me = principal.user_id

    def checked(found: tuple[m.Message, Access]) -> m.React | m.Unreact:
        where = found[1]
        writable(where.channel, me, where.role)
        match command:
            case m.React():
                must_be_member(where, me, "react in it")
            case m.Unreact():
                pass  # taking one's reaction back needs no membership
            case _:
                assert_never(command)
        return command

    decided = await dispatch(shell, context(request, me), type(command), message_id, checked)
    body = ReactionOut(message_id, check_emoji(command.emoji), isinstance(command, m.React), decided.position)
    return with_position(Response(body), decided.position)


async def accept_post(services: Services, header: HeaderGet, channel_id: str, data: PostBody) -> PostedOut:
    """``POST /channels/{ch}/messages``: decided, appended and answered with the seq the
    ``messages`` projection gave it. ``header`` looks up a request header by lower-case name.

    The first attempt decides on what this process holds of the session, channel and workspace,
    without reading them. The append expects their versions, so if one moved meanwhile (revoked,
    removed, archived...) nothing is written, and a refusal is only answered once decided on a
    read: the shell's next attempt makes the plan again, reading them."""
    shell, limited, message_id = services.shell, False, ""
    authorization = header("authorization")

    async def plan(trust_cache: bool) -> Plan:
        nonlocal limited, message_id
        principal, found, expect = await caller_and_channel(shell, authorization, channel_id, trust_cache=trust_cache)
        user = principal.user_id
        writable(found.channel, user, found.role)
        must_be_member(found, user, "post in it")
        if not limited:
            await check_post(services.limiter, services.settings, user)
            limited = True
        message_id, key = post_key(header, user, channel_id, data)
        online = await here_online(services.presence, data.text, found.channel.members & found.members, user)
        command = m.Post(
            message_id=message_id,
            channel_id=channel_id,
            workspace_id=found.channel.workspace_id or "",
            author_id=user,
            text=data.text,
            workspace_members=found.members,
            thread_root_id=data.thread_root_id,
            root=await thread_root(shell, data.thread_root_id),
            file_ids=tuple(data.file_ids),
            client_msg_id=data.client_msg_id,
            online_ids=online,
        )
        entries = [entry([command], message_id)]
        if data.file_ids:  # the post and a ``file.shared`` on each file's stream, in one append
            m.check_files(command.file_ids)
            entries += await share_entries(
                services, list(command.file_ids), user, command.workspace_id, channel_id, message_id
            )
        return Plan(entries, context_of(user, header, key), expect, new=key is None)

    position = (await shell.run(plan, cached_first=not data.file_ids)).position
    seq = await seq_of(services.seqs, services.consistency, message_id, position)
    return PostedOut(message_id, seq, position)


def post_key(header: HeaderGet, user_id: str, channel_id: str, data: PostBody) -> tuple[str, Key | None]:
    """The message id, and the post's idempotency key: its ``client_msg_id`` (recorded by the
    message it names), else its Idempotency-Key (recorded on the caller's key stream)."""
    client = m.check_client_msg_id(data.client_msg_id)
    given = client or header("idempotency-key")
    if given is None:
        return new_id(), None
    message_id = m.client_message_id(channel_id, user_id, given)
    params = {"channel_id": channel_id}
    if client is None:
        return message_id, keyed(user_id, given, POST, params, data)
    return message_id, Key(
        m.message_stream(message_id), fingerprint(POST, params, data), POST, "client_msg_id", "client_msg_id"
    )


async def seq_of(seqs: SeqLookup, consistency: ReadConsistency, message_id: str, position: int) -> int | None:
    """The seq the ``messages`` projection gave the post at ``position``: as it notified it with
    the batch (``projections/consistency.py``), or read from its table when this process missed that."""
    watcher = consistency.watcher
    if not await watcher.wait((READ_MODEL,), position, consistency.timeout_s):
        return None
    seq = watcher.seqs.get(position)
    return seq if seq is not None else await seqs.seq(message_id)
