"""What a user's sockets listen to: the subjects of everything the user may see now.

The rule is ``projections/visibility.py``'s (``visible_places``), applied to every workspace at
once: the user's own subject, the workspace subject of each workspace where they are more than a
guest (guests see only the channels they were added to; in its place a guest hears the presence
of the people they see, ``subjects.guest_presence``), and the subject of every channel they may
see. Read from the read models, which must have passed the positions that matter.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool

from projections.checkpoints import read_checkpoints
from projections.visibility import visible_places
from realtime import subjects

_SUBJECT_OF = {"ws": subjects.workspace, "ch": subjects.channel}


async def subjects_for(conn: psycopg.AsyncConnection, user_id: str) -> set[str]:
    found = {sys.intern(subjects.user(user_id))}
    for kind, ident in await visible_places(conn, user_id):
        # Interned: thousands of sockets listening to the same channels share one string each.
        found.add(sys.intern(subjects.guest_presence(ident, user_id) if kind == "guest" else _SUBJECT_OF[kind](ident)))
    return found


async def read_models_position(pool: AsyncConnectionPool, read_models: Sequence[str]) -> int:
    """The position every read model has passed, read now from the database (not a cached copy:
    whatever was published before this call is at or below it)."""
    checkpoints = await read_checkpoints(pool, read_models)
    return min((checkpoints.get(name, 0) for name in read_models), default=0)
