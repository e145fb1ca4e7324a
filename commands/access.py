"""What the caller may do where a command points: one loader per kind of target, on the deciders'
states (the rules are ``domain/access.py``'s). Each answers 404 for what the caller may not see,
before anything is decided, so a command never says more about it than a query would.

``commands/handlers.py`` names the loader of each command type; the post route loads the channel
with the caller's session in one read instead (``commands/messages.py`` ``caller_and_channel``),
through the same ``access_of``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import msgspec

from commands.shell import CommandShell
from domain import access
from domain import message as m
from domain.channel import CHANNEL, Channel, channel_stream, visible
from domain.errors import Forbidden, NotFound
from domain.workspace import WORKSPACE, Workspace, workspace_stream


class Access(msgspec.Struct, frozen=True):
    channel: Channel
    role: str | None
    """The caller's role in the channel's workspace (None: not a member)."""
    roles: Mapping[str, str]
    """The workspace's members and their roles, as the workspace stream has them."""

    @property
    def members(self) -> Collection[str]:
        """The workspace's members: a view, no copy of every member per post."""
        return self.roles.keys()


def access_of(channel: Channel, workspace: Workspace, user_id: str) -> Access:
    role = access.role_of(workspace.members, user_id)
    visible(channel, user_id, role)
    return Access(channel, role, workspace.members)


def workspace_stream_of(workspace_id: str) -> str:
    """The workspace's stream; an id that cannot exist is 404 like one the caller may not see."""
    if not access.looks_like_id(workspace_id):
        raise NotFound("no such workspace")
    return workspace_stream(workspace_id)


async def workspace_of(shell: CommandShell, workspace_id: str) -> Workspace:
    """The workspace's state; an id that cannot be ours is one that does not exist."""
    if not access.looks_like_id(workspace_id):
        return Workspace()
    return (await shell.load(WORKSPACE, workspace_stream(workspace_id))).state


async def workspace_role(shell: CommandShell, workspace_id: str, user_id: str) -> str | None:
    return access.role_of((await workspace_of(shell, workspace_id)).members, user_id)


async def channel_access(shell: CommandShell, channel_id: str, user_id: str) -> Access:
    """The channel as the caller may see it (404 otherwise), their role and the workspace's members."""
    if not access.looks_like_id(channel_id):
        raise NotFound("no such channel")
    channel = (await shell.load(CHANNEL, channel_stream(channel_id))).state
    if channel.channel_id is None or channel.workspace_id is None:
        raise NotFound("no such channel")
    return access_of(channel, await workspace_of(shell, channel.workspace_id), user_id)


async def message_access(shell: CommandShell, message_id: str, user_id: str) -> tuple[m.Message, Access]:
    """The message and its channel, or 404 if either is missing or the channel is not visible."""
    if not access.looks_like_id(message_id):
        raise NotFound("no such message")
    message = (await shell.load(m.MESSAGE, m.message_stream(message_id))).state
    if not message.exists or message.channel_id is None:
        raise NotFound("no such message")
    try:
        return message, await channel_access(shell, message.channel_id, user_id)
    except NotFound:
        raise NotFound("no such message") from None


def must_be_member(found: Access, user_id: str, doing: str) -> None:
    if not access.is_channel_member(found.role, found.channel, user_id):
        raise Forbidden(f"join this channel to {doing}")
