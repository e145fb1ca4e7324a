"""Who may see and do what: the rules of ``docs/design/messaging-core.md`` on decider state.

Pure functions over roles and a ``Channel``; every decider and route asks here, none re-states a
rule. ``projections/visibility.py`` is the same "who may see" rule written as SQL. A role of ``None``
means "not a member of the workspace": such a caller sees nothing in it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

Role = Literal["owner", "admin", "member", "guest"]
ROLES: tuple[Role, ...] = ("owner", "admin", "member", "guest")
INVITABLE_ROLES: tuple[Role, ...] = ("member", "guest")
RANK: dict[str, int] = {"guest": 0, "member": 1, "admin": 2, "owner": 3}


class Channel(Protocol):
    """What these rules read of a channel (``domain/channel.py``'s state, which imports this module)."""

    @property
    def channel_id(self) -> str | None: ...
    @property
    def private(self) -> bool: ...
    @property
    def members(self) -> Collection[str]: ...
    @property
    def created_by(self) -> str | None: ...


def looks_like_id(value: str) -> bool:
    """Whether ``value`` could be one of our ids (a UUID in canonical form). Anything else is
    answered like an id the caller may not see (404), before it reaches a stream or a query."""
    try:
        return len(value) == 36 and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def role_of(members: Mapping[str, str], user_id: str) -> str | None:
    """The user's role in a workspace whose ``members`` map user id -> role; None if not a member."""
    return members.get(user_id)


def outranks(role: str | None, other: str | None) -> bool:
    return role is not None and RANK[role] > RANK.get(other or "guest", 0)


def is_admin(role: str | None) -> bool:
    """Owners and admins: invite, remove, change roles below their own, manage every channel."""
    return role is not None and RANK[role] >= RANK["admin"]


def can_invite(role: str | None) -> bool:
    return is_admin(role)


def can_create_channel(role: str | None) -> bool:
    return role is not None and role != "guest"


def can_change_role(actor: str | None, target: str, new: str) -> bool:
    """Owners change any role (the last-owner rule is the workspace decider's); admins only move
    someone below admin to another role below admin."""
    if actor == "owner":
        return True
    return is_admin(actor) and RANK[target] < RANK[actor] and RANK[new] < RANK[actor]  # type: ignore[index]


def can_remove_member(actor: str | None, target: str) -> bool:
    """Admins remove people below their rank; owners remove anyone (the last owner stays)."""
    return actor == "owner" or (is_admin(actor) and RANK[target] < RANK[actor])  # type: ignore[index]


def can_see_channel(role: str | None, channel: Channel, user_id: str) -> bool:
    """Workspace members see public channels (guests: only the ones they are in) and the private
    channels, DMs and groups they belong to. Anything else must look missing (404)."""
    if role is None or channel.channel_id is None:
        return False
    if user_id in channel.members:
        return True
    return not channel.private and role != "guest"


def is_channel_member(role: str | None, channel: Channel, user_id: str) -> bool:
    """Posting, reacting and editing need this (public channels: join first)."""
    return role is not None and user_id in channel.members


def can_manage_channel(role: str | None, channel: Channel, user_id: str) -> bool:
    """Rename, archive, remove others: workspace admins, and the channel's creator while a member."""
    return is_admin(role) or (channel.created_by == user_id and user_id in channel.members)


def can_add_to_channel(role: str | None, channel: Channel, user_id: str) -> bool:
    """Members of a channel (public or private) may add people to it; admins may add to public ones."""
    return is_channel_member(role, channel, user_id) or (is_admin(role) and not channel.private)


def can_delete_message(role: str | None, author_id: str, user_id: str) -> bool:
    return author_id == user_id or is_admin(role)


def can_edit_message(author_id: str, user_id: str) -> bool:
    return author_id == user_id


def visible_roles(members: Mapping[str, str], user_ids: Iterable[str]) -> dict[str, str | None]:
    """Each user id -> its role in the workspace (None for strangers)."""
    return {u: members.get(u) for u in user_ids}
