"""What the app shares with its handlers, made once in the lifespan and handed out by Litestar
dependency injection (``services``, ``pool``, ``store``, ``nats``, ``redis``, ``settings``, ...,
and ``principal``, the caller).

``Services`` is the one object in ``app.state[STATE_KEY]``: the rooms' edge modules
(``commands/edge.py``, ``readapi/edge.py``, ``realtime/edge.py``) each declare what they read of
it, and read it there with ``services_of(request)`` on their hottest routes."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from commands.auth import authenticate
from commands.shell import CommandShell
from commands.uploads import Reservations
from domain.session import Principal
from infra.blobs import BlobStore
from infra.eventstore.port import EventStore
from infra.images import Thumbnailer
from infra.passwords import Passwords
from infra.presence import Presence
from infra.ratelimit import RateLimiter
from infra.search.port import SearchIndex
from infra.settings import Settings
from projections.consistency import ReadConsistency
from projections.seqs import SeqLookup
from realtime.presence import PresenceFanout

if TYPE_CHECKING:
    from commands import edge as command_edge
    from readapi import edge as query_edge
    from realtime import edge as realtime_edge

STATE_KEY = "services"


@dataclass(frozen=True)
class Services:
    settings: Settings
    pool: AsyncConnectionPool
    store: EventStore
    nats: NATS
    redis: Redis
    consistency: ReadConsistency
    shell: CommandShell
    passwords: Passwords
    limiter: RateLimiter
    seqs: SeqLookup
    presence: Presence
    presence_fanout: PresenceFanout
    search: SearchIndex
    blobs: BlobStore
    thumbnailer: Thumbnailer
    uploads: Reservations

    def authenticate(self, authorization: str | None) -> Awaitable[Principal]:
        """The caller an ``Authorization`` header names (``commands/auth.py``), for the query side."""
        return authenticate(self.shell, authorization)


if TYPE_CHECKING:

    def _serves_every_room(
        services: Services,
    ) -> tuple[command_edge.Services, query_edge.Services, realtime_edge.Services]:
        return services, services, services  # mypy checks: Services has what each room's edge declares


def provide_services(state: State) -> Services:
    return state[STATE_KEY]


def provide_principal() -> Provide:
    async def principal(request: Request, state: State) -> Principal:
        return await authenticate(state[STATE_KEY].shell, request.headers.get("authorization"))

    return Provide(principal)


def _field(name: str) -> Provide:
    def provide(state: State) -> Any:
        return getattr(state[STATE_KEY], name)

    return Provide(provide, sync_to_thread=False)


def dependencies() -> dict[str, Provide]:
    return {
        "services": Provide(provide_services, sync_to_thread=False),
        **{
            name: _field(name)
            for name in (
                "settings",
                "pool",
                "store",
                "nats",
                "redis",
                "consistency",
                "shell",
                "passwords",
                "limiter",
                "search",
            )
        },
        "principal": provide_principal(),
    }
