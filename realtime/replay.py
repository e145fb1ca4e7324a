"""Replay from the log: the frames of the events in ``(after, upto]`` that go to any of ``wanted``
subjects, shaped exactly as the publisher shapes them, page by page in log order, with the
``notification.created`` frames of the socket's user (``realtime/notifications.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Set

from psycopg_pool import AsyncConnectionPool

from domain.events import RecordedEvent
from infra.eventstore.port import EventStore
from realtime.frames import Route, Shaped, route, shape
from realtime.notifications import ask_pushed, owner_of, pushed, with_notifications

PAGE = 500


async def replay(
    store: EventStore, pool: AsyncConnectionPool, after: int, upto: int, wanted: Set[str]
) -> AsyncIterator[list[Shaped]]:
    while after < upto:
        page = [event async for event in store.read_all(after=after, limit=PAGE)]
        if not page:
            return
        relevant = [(e, r) for e in page if e.position <= upto and (r := _wanted(e, wanted)) is not None]
        if relevant:
            async with pool.connection() as conn, conn.pipeline():  # the page's lookups: one round trip
                user = owner_of(wanted)
                asked = await ask_pushed(conn, relevant, user) if user is not None else None
                shaped = with_notifications(await shape(conn, relevant), await pushed(asked))
            yield shaped
        after = page[-1].position


def _wanted(event: RecordedEvent, wanted: Set[str]) -> Route | None:
    where = route(event)
    if where is None or where.session_ended is not None or wanted.isdisjoint(where.subjects):
        return None
    return where
