"""Realtime in one process: the publisher (active in one process at a time) and the gateway
(in every process). ``running`` is entered by the app's lifespan and left before the pool, the
event store and NATS close."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from infra.aio import close_within
from infra.eventstore.port import EventStore
from infra.presence import Change, Presence
from infra.settings import Settings
from projections.consistency import CheckpointWatcher
from realtime.gateway import Authenticate, Gateway
from realtime.hub import Hub
from realtime.publisher import Publisher


@contextlib.asynccontextmanager
async def running(
    *,
    settings: Settings,
    pool: AsyncConnectionPool,
    store: EventStore,
    nats: NATS,
    watcher: CheckpointWatcher,
    read_models: Sequence[str],
    authenticate: Authenticate,
    presence: Presence,
    report: Callable[[Change], None],
) -> AsyncIterator[Gateway]:
    assert settings.database_url and settings.nats_url
    publisher = Publisher(
        pool=pool, conninfo=settings.database_url, store=store, nats=nats, watcher=watcher, read_models=read_models
    )
    hub = Hub(nats_url=settings.nats_url, store=store, pool=pool, read_models=read_models)
    gateway = Gateway(hub, authenticate, settings, presence, report)
    async with contextlib.AsyncExitStack() as stack:
        await hub.start()
        stack.push_async_callback(close_within, "realtime hub", hub.stop)
        gateway.start()
        stack.push_async_callback(close_within, "realtime gateway", gateway.stop)
        await publisher.start()
        stack.push_async_callback(close_within, "realtime publisher", publisher.stop)
        yield gateway
