from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

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
