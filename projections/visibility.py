"""Who may see which channel, as SQL over the ``workspaces`` read model: the same rule as
``domain.access.can_see_channel``, for queries (channel lists, history, search, files) and for
what a socket listens to (``realtime/access.py``). And which people a guest sees (``GUEST_SEES``).

A user sees a channel when they are a member of its workspace and either belong to the channel,
or it is public and they are not a guest. Everything else answers 404 (never 403), so nothing
here distinguishes "missing" from "not yours".

Use ``VISIBLE_CHANNELS`` as a sub-select (``channel_id IN (...)``) with parameters
``%(workspace_id)s`` and ``%(user_id)s``, or ``channel_visible_to(conn, channel_id, user_id)``
for one channel. A file is visible to its uploader while they are in its workspace, and to whoever
may see a channel it is shared in (``FILE_VISIBLE``). The membership lists are
``projections/members.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from domain.access import looks_like_id

VISIBLE_FROM = """
channels c
JOIN workspace_members wm ON wm.workspace_id = c.workspace_id AND wm.user_id = %(user_id)s
LEFT JOIN channel_members cm ON cm.channel_id = c.channel_id AND cm.user_id = %(user_id)s
"""
"""Channels joined with the user's workspace role (``wm``) and channel membership (``cm``, NULL
when not a member). Combine with ``VISIBLE_WHERE``; queries may add their own joins after it."""

VISIBLE_WHERE = "(cm.user_id IS NOT NULL OR (NOT c.private AND wm.role <> 'guest'))"
"""The rule itself, over ``VISIBLE_FROM``'s aliases."""

VISIBLE_CHANNELS = (
    f"SELECT c.channel_id FROM {VISIBLE_FROM} WHERE c.workspace_id = %(workspace_id)s AND {VISIBLE_WHERE}"
)
"""Ids of the channels of ``%(workspace_id)s`` that ``%(user_id)s`` may see."""

VISIBLE_CHANNEL = f"""
SELECT c.channel_id, c.workspace_id, wm.role, cm.user_id IS NOT NULL AS member, c.archived
FROM {VISIBLE_FROM} WHERE c.channel_id = %(channel_id)s AND {VISIBLE_WHERE}
"""

# What a user's sockets hear: each workspace they are in ('guest' where they are a guest: only the
# presence of the people they see; 'ws' elsewhere), and every channel they may see.
_VISIBLE_PLACES = f"""
SELECT CASE WHEN role = 'guest' THEN 'guest' ELSE 'ws' END, workspace_id FROM workspace_members
WHERE user_id = %(user_id)s
UNION ALL
SELECT 'ch', c.channel_id FROM {VISIBLE_FROM} WHERE {VISIBLE_WHERE}
"""

SHARED_VISIBLY = f"""EXISTS (SELECT 1 FROM {VISIBLE_FROM} JOIN file_shares s ON s.channel_id = c.channel_id
                            WHERE s.file_id = f.file_id AND {VISIBLE_WHERE})"""
"""Whether the file ``f`` (of ``files``) is shared in a channel ``%(user_id)s`` may see."""
_UPLOADER = """(f.uploader_id = %(user_id)s AND EXISTS (
    SELECT 1 FROM workspace_members w WHERE w.workspace_id = f.workspace_id AND w.user_id = %(user_id)s))"""
FILE_VISIBLE = f"({_UPLOADER} OR {SHARED_VISIBLY})"
"""Whether ``%(user_id)s`` may see the file ``f`` (of ``files``; deleted or not)."""
_SHARED_WITH = f"SELECT {SHARED_VISIBLY} FROM files f WHERE f.file_id = %(file_id)s"


def guest_sees(person: str, guest: str) -> str:
    """The rule for people (docs/design/messaging-core.md, *Who may see and do what*): a guest sees
    themselves, the workspace's owners and admins, and the members they share a channel with (any
    kind: public, private, DM or group), nobody else in it; members, admins and owners see
    everyone. As an SQL condition on ``person``, the alias of the person's ``workspace_members``
    row, for the guest ``guest`` (a parameter or a column). Apply it only when the viewer is a guest."""
    return f"""({person}.user_id = {guest} OR {person}.role IN ('owner', 'admin') OR EXISTS (
    SELECT 1 FROM channel_members mine
    JOIN channels shared ON shared.channel_id = mine.channel_id AND shared.workspace_id = {person}.workspace_id
    JOIN channel_members theirs ON theirs.channel_id = mine.channel_id AND theirs.user_id = {person}.user_id
    WHERE mine.user_id = {guest}))"""


GUEST_SEES = guest_sees("m", "%(viewer)s")
"""``guest_sees`` for a ``workspace_members m`` row and the guest ``%(viewer)s``."""

_GUESTS_SEEING = f"""
SELECT g.workspace_id, g.user_id, m.user_id FROM workspace_members m
JOIN workspace_members g ON g.workspace_id = m.workspace_id AND g.role = 'guest'
WHERE m.user_id = ANY(%(people)s) AND {guest_sees("m", "g.user_id")}
"""


async def guests_seeing(conn: psycopg.AsyncConnection, people: list[str]) -> list[tuple[str, str, str]]:
    """``(workspace_id, guest_id, person_id)`` for each of ``people`` and each guest of a
    workspace of theirs who sees them (themselves included)."""
    cur = await conn.execute(_GUESTS_SEEING, {"people": people})
    return [(workspace_id, guest_id, person_id) for workspace_id, guest_id, person_id in await cur.fetchall()]


_HIDDEN_FROM_GUEST = f"""
SELECT p FROM unnest(%(people)s::text[]) AS p WHERE NOT EXISTS (
    SELECT 1 FROM workspace_members m WHERE m.workspace_id = %(workspace_id)s AND m.user_id = p AND {GUEST_SEES})
"""


async def hidden_from_guest(
    conn: psycopg.AsyncConnection, workspace_id: str, guest_id: str, people: list[str]
) -> set[str]:
    """Those of ``people`` the guest does not see (strangers to the workspace included)."""
    cur = await conn.execute(_HIDDEN_FROM_GUEST, {"workspace_id": workspace_id, "viewer": guest_id, "people": people})
    return {row[0] for row in await cur.fetchall()}


@dataclass(frozen=True)
class Visible:
    """A channel the user may see, with what the caller usually needs next."""

    channel_id: str
    workspace_id: str
    role: str
    """The user's role in the channel's workspace."""
    member: bool
    archived: bool


async def channel_visible_to(conn: psycopg.AsyncConnection, channel_id: str, user_id: str) -> Visible | None:
    """The channel if ``user_id`` may see it, else None (answer 404)."""
    if not looks_like_id(channel_id):
        return None  # could not exist, and would not reach the database intact (NUL, say)
    cur = await conn.execute(VISIBLE_CHANNEL, {"channel_id": channel_id, "user_id": user_id})
    row = await cur.fetchone()
    return Visible(*row) if row else None


async def visible_channel_ids(conn: psycopg.AsyncConnection, workspace_id: str, user_id: str) -> list[str]:
    if not looks_like_id(workspace_id):
        return []
    cur = await conn.execute(VISIBLE_CHANNELS, {"workspace_id": workspace_id, "user_id": user_id})
    return [row[0] for row in await cur.fetchall()]


async def workspace_role(conn: psycopg.AsyncConnection, workspace_id: str, user_id: str) -> str | None:
    """The user's role in the workspace, None when not a member (answer 404)."""
    if not looks_like_id(workspace_id):
        return None
    cur = await conn.execute(
        "SELECT role FROM workspace_members WHERE workspace_id = %s AND user_id = %s", (workspace_id, user_id)
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def visible_places(conn: psycopg.AsyncConnection, user_id: str) -> list[tuple[str, str]]:
    """``("ws", workspace_id)`` where the user is more than a guest, ``("guest", workspace_id)``
    where they are a guest, ``("ch", channel_id)`` for every channel they may see."""
    cur = await conn.execute(_VISIBLE_PLACES, {"user_id": user_id})
    return await cur.fetchall()


async def shared_with(conn: psycopg.AsyncConnection, file_id: str, user_id: str) -> bool:
    """Whether the file is shared in a channel ``user_id`` may see (its uploader aside)."""
    cur = await conn.execute(_SHARED_WITH, {"file_id": file_id, "user_id": user_id})
    row = await cur.fetchone()
    return bool(row and row[0])
