"""The one place that picks the event log backend from the settings."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from infra.eventstore.port import EventStore
from infra.settings import Settings


def open_event_store(settings: Settings, pool: AsyncConnectionPool, database_url: str) -> EventStore:
    if settings.event_store == "kurrentdb":
        assert settings.kurrentdb_url is not None  # load_settings refuses kurrentdb without a URL
        from infra.eventstore.kurrent import KurrentEventStore  # kurrentdbclient is an optional dependency

        return KurrentEventStore(settings.kurrentdb_url)
    from infra.eventstore.postgres import PostgresEventStore

    return PostgresEventStore(pool, database_url)
