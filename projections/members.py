"""Who is in which workspace and channel: named queries over the ``workspaces`` read model's
``workspace_members`` and ``channel_members`` (written by ``projections/workspaces.py``), with
people's names from ``users`` (projection ``accounts``).

Every read of ``workspace_members`` outside its projection is here or in
``projections/visibility.py`` (the rule of who may see what): the query routes, presence and the
email sender call these. None of them checks that the caller may ask: callers check first (a
workspace the caller is not in is 404). Pages are ordered by user id and continue ``after`` the
last one seen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import psycopg

from projections.visibility import GUEST_SEES

_OF_USER = """
SELECT w.workspace_id, w.name, m.role, w.created_at FROM workspace_members m
JOIN workspaces w USING (workspace_id) WHERE m.user_id = %s ORDER BY w.workspace_id
"""
_ONE_OF_USER = """
SELECT w.workspace_id, w.name, m.role, w.created_at FROM workspace_members m
JOIN workspaces w USING (workspace_id) WHERE m.user_id = %s AND m.workspace_id = %s
"""
_MEMBERS = """
SELECT m.user_id, coalesce(u.display_name, ''), m.role FROM workspace_members m
LEFT JOIN users u USING (user_id)
WHERE m.workspace_id = %(ws)s AND m.user_id > %(after)s {guest} ORDER BY m.user_id LIMIT %(limit)s
"""
_CHANNEL_MEMBERS = """
SELECT cm.user_id, coalesce(u.display_name, ''), wm.role FROM channel_members cm
JOIN channels c ON c.channel_id = cm.channel_id
JOIN workspace_members wm ON wm.workspace_id = c.workspace_id AND wm.user_id = cm.user_id
LEFT JOIN users u ON u.user_id = cm.user_id
WHERE cm.channel_id = %s AND cm.user_id > %s ORDER BY cm.user_id LIMIT %s
"""
_MEMBER_IDS = """SELECT user_id FROM workspace_members m WHERE workspace_id = %(ws)s AND user_id > %(after)s {guest}
ORDER BY user_id LIMIT %(limit)s"""
_MEMBERS_AMONG = """SELECT user_id FROM workspace_members m WHERE workspace_id = %(ws)s AND user_id = ANY(%(asked)s) {guest}
ORDER BY user_id"""


def _for(sql: str) -> tuple[str, str]:
    """``sql`` for a member viewer (everyone) and for a guest viewer (only whom a guest sees)."""
    return sql.format(guest=""), sql.format(guest=f"AND {GUEST_SEES}")


_MEMBERS_BY, _MEMBER_IDS_BY, _MEMBERS_AMONG_BY = _for(_MEMBERS), _for(_MEMBER_IDS), _for(_MEMBERS_AMONG)
_WORKSPACES_OF = "SELECT workspace_id, user_id FROM workspace_members WHERE user_id = ANY(%s)"
_MEMBERS_NAMED = r"""
SELECT u.user_id FROM users u
JOIN workspace_members wm ON wm.user_id = u.user_id AND wm.workspace_id = %(ws)s
WHERE lower(regexp_replace(u.display_name, '[\s._-]+', '', 'g'))
      = ANY(SELECT lower(regexp_replace(n, '[\s._-]+', '', 'g')) FROM unnest(%(names)s::text[]) AS n)
"""

IN_CHANNEL_NOW = """EXISTS (SELECT 1 FROM workspace_members wm JOIN channel_members cm
                          ON cm.user_id = wm.user_id AND cm.channel_id = {channel}
                          WHERE wm.workspace_id = {workspace} AND wm.user_id = {user})"""
"""SQL: ``{user}`` is a member of the channel ``{channel}`` and of its workspace ``{workspace}``
(columns or parameters, put in with ``str.format``)."""

WorkspaceRow = tuple[str, str, str, dt.datetime]
"""``(workspace_id, name, the user's role, created_at)``."""
MemberRow = tuple[str, str, str]
"""``(user_id, display name or "", role in the workspace)``."""


async def workspaces_of_user(conn: psycopg.AsyncConnection, user_id: str) -> list[WorkspaceRow]:
    cur = await conn.execute(_OF_USER, (user_id,))
    return await cur.fetchall()


async def workspace_of_user(conn: psycopg.AsyncConnection, user_id: str, workspace_id: str) -> WorkspaceRow | None:
    """The workspace if ``user_id`` is in it, else None."""
    cur = await conn.execute(_ONE_OF_USER, (user_id, workspace_id))
    return await cur.fetchone()


async def member_page(
    conn: psycopg.AsyncConnection, workspace_id: str, after: str, limit: int, guest: str | None = None
) -> list[MemberRow]:
    """A page of the workspace's members; with ``guest``, only the people that guest sees
    (``projections/visibility.guest_sees``): pass the viewer's id when the viewer is a guest."""
    cur = await conn.execute(
        _MEMBERS_BY[guest is not None], {"ws": workspace_id, "after": after, "limit": limit, "viewer": guest}
    )
    return await cur.fetchall()


async def channel_member_page(
    conn: psycopg.AsyncConnection, channel_id: str, after: str, limit: int
) -> list[MemberRow]:
    cur = await conn.execute(_CHANNEL_MEMBERS, (channel_id, after, limit))
    return await cur.fetchall()


async def member_ids(
    conn: psycopg.AsyncConnection, workspace_id: str, after: str, limit: int, guest: str | None = None
) -> list[str]:
    """A page of members' ids; ``guest`` as for ``member_page``."""
    cur = await conn.execute(
        _MEMBER_IDS_BY[guest is not None], {"ws": workspace_id, "after": after, "limit": limit, "viewer": guest}
    )
    return [row[0] for row in await cur.fetchall()]


async def members_among(
    conn: psycopg.AsyncConnection, workspace_id: str, user_ids: Sequence[str], guest: str | None = None
) -> list[str]:
    """Those of ``user_ids`` who are in the workspace, in id order; ``guest`` as for ``member_page``."""
    cur = await conn.execute(
        _MEMBERS_AMONG_BY[guest is not None], {"ws": workspace_id, "asked": list(user_ids), "viewer": guest}
    )
    return [row[0] for row in await cur.fetchall()]


async def workspaces_of(conn: psycopg.AsyncConnection, user_ids: Sequence[str]) -> list[tuple[str, str]]:
    """``(workspace_id, user_id)`` for every workspace each of ``user_ids`` is in."""
    cur = await conn.execute(_WORKSPACES_OF, (list(user_ids),))
    return await cur.fetchall()


async def members_named(conn: psycopg.AsyncConnection, workspace_id: str, names: list[str]) -> list[str]:
    """Members whose display name is one of ``names``, ignoring case, spaces, dots, dashes and
    underscores (``from:@ada.lovelace`` finds "Ada Lovelace")."""
    if not names:
        return []
    cur = await conn.execute(_MEMBERS_NAMED, {"ws": workspace_id, "names": names})
    return [row[0] for row in await cur.fetchall()]
