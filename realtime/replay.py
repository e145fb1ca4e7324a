"""Replay from the log: the frames of the events in ``(after, upto]`` that go to any of ``wanted``
subjects, shaped exactly as the publisher shapes them, page by page in log order, with the
``notification.created`` frames of the socket's user (``realtime/notifications.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Set

from psycopg_pool import AsyncConnectionPool

from domain.events import RecordedEvent
from infra.eventstore.port import EventStore
from realtime.frames import Route, Shaped, route, shape
from realtime.notifications import with_notifications

PAGE = 500


async def replay(store: EventStore, pool: AsyncConnectionPool, after: int, upto: int,
                 wanted: Set[str]) -> AsyncIterator[list[Shaped]]:
    while after < upto:
        page = [event async for event in store.read_all(after=after, limit=PAGE)]
        if not page:
            return
        relevant = [(e, r) for e in page if e.position <= upto and (r := _wanted(e, wanted)) is not None]
        if relevant:
            async with pool.connection() as conn:
                yield await with_notifications(conn, await shape(conn, relevant), relevant, wanted)
        after = page[-1].position


def _wanted(event: RecordedEvent, wanted: Set[str]) -> Route | None:
    where = route(event)
    if where is None or where.session_ended is not None or wanted.isdisjoint(where.subjects):
        return None
    return where
