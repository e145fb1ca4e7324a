"""Who an ``@here`` reaches: the channel's members who are online (an active device) when the
message is posted. Presence lives in Redis, not in the log, so the post route reads it and the
``message.posted`` event records the ids (``here_user_ids``): notifications are rebuilt from the
log alone. Read only when the text says ``@here``; if Redis does not answer, the post still goes
through and its ``@here`` reaches nobody (a chat message matters more than its ping).
"""

from __future__ import annotations

from collections.abc import Collection

import redis.exceptions
import structlog

from domain.mentions import says_here
from infra.presence import Presence

log = structlog.get_logger(__name__)


async def here_online(presence: Presence, text: str, members: Collection[str], author_id: str) -> frozenset[str]:
    """The ``members`` (channel members who are in the workspace) online now, if ``text`` says @here."""
    if not says_here(text):
        return frozenset()
    people = sorted(set(members) - {author_id})
    if not people:
        return frozenset()
    try:
        statuses = await presence.statuses(people)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("notify.here_presence_unavailable", error=str(exc), members=len(people))
        return frozenset()
    return frozenset(user for user, seen in statuses.items() if seen.status == "online")
