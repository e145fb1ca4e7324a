"""What the app shares with its handlers, made once in the lifespan and handed out by Litestar
dependency injection (``services``, ``pool``, ``store``, ``nats``, ``redis``, ``settings``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from commands.shell import CommandShell
from commands.uploads import Reservations
from hubbub.auth import provide_principal
from hubbub.presence import PresenceFanout
from infra.blobs import BlobStore
from infra.eventstore.port import EventStore
from infra.images import Thumbnailer
from infra.passwords import Passwords
from infra.presence import Presence
from infra.search.port import SearchIndex
from infra.ratelimit import RateLimiter
from infra.settings import Settings
from infra.consistency import ReadConsistency
from readapi.seqs import SeqLookup

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


def provide_services(state: State) -> Services:
    return state[STATE_KEY]


def services_of(request: Request) -> Services:
    """The services without dependency injection, for the hottest routes: Litestar resolves two
    or more dependencies of a route in an anyio task group, a task each (about 5% of a post)."""
    return request.app.state[STATE_KEY]


def _field(name: str) -> Provide:
    def provide(state: State) -> Any:
        return getattr(state[STATE_KEY], name)

    return Provide(provide, sync_to_thread=False)


def dependencies() -> dict[str, Provide]:
    return {
        "services": Provide(provide_services, sync_to_thread=False),
        **{name: _field(name) for name in ("settings", "pool", "store", "nats", "redis", "consistency", "shell", "passwords", "limiter", "search")},
        "principal": provide_principal(),
    }
