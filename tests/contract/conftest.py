from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from infra.eventstore import EventStore
from infra.eventstore.postgres import PostgresEventStore

BACKENDS = ["postgres", "kurrentdb"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, pool, migrated_url: str) -> AsyncIterator[EventStore]:
    if request.param == "postgres":
        backend: EventStore = PostgresEventStore(pool, migrated_url)
    else:
        url = os.environ.get("HUBBUB_KURRENTDB_URL")
        if not url:
            pytest.skip("KurrentDB contract tests need HUBBUB_KURRENTDB_URL (no KurrentDB server on this machine)")
        from infra.eventstore.kurrent import KurrentEventStore

        backend = KurrentEventStore(url)
    yield backend
    await backend.close()


@pytest.fixture
async def redis(service_urls: dict[str, str]) -> AsyncIterator[Redis]:
    """A client of the session's Redis (embedded, or HUBBUB_REDIS_URL)."""
    client = Redis.from_url(service_urls["redis"])
    yield client
    await client.aclose()
