"""The composition root: settings -> services -> Litestar app.

Everything long-lived (pool, event store, NATS, Redis, checkpoint watcher, projectors) is opened
in the lifespan, in dependency order, and closed in reverse by one ``AsyncExitStack``; nothing is
created at import time, so several apps (tests, workers) never share a connection. Each close
is bounded (``infra.aio.close_within``): a dependency that stopped answering cannot hold up the
shutdown, which logs ``shutdown.gave_up`` with what it left behind.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import nats
import structlog
from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import BlockingConnectionPool, Redis

from commands import accounts as accounts_commands
from commands import channels as channels_commands
from commands import edge as command_edge
from commands import files as files_commands
from commands import messages as messages_commands
from commands import notifications as notifications_commands
from commands import notify_email
from commands import workspaces as workspaces_commands
from commands.auth import authenticate
from commands.file_purge import BlobJanitor
from commands.lane import PostLane
from commands.shell import CommandShell
from commands.snapshots import PostgresSnapshots
from commands.uploads import Reservations
from hubbub import deps, health, problems
from hubbub.request_rules import CompleteAllow, JsonRequest
from infra.aio import CLOSE_TIMEOUT_S, close_within
from infra.blob_sweep import LeftoverSweeper
from infra.blobs import open_blob_store
from infra.client_address import parse_trusted_proxies
from infra.db import open_pool
from infra.eventstore.factory import open_event_store
from infra.eventstore.port import EventStore
from infra.images import Thumbnailer
from infra.logging import RequestContext, configure_logging
from infra.mail import SmtpMailer
from infra.migrations import migrate
from infra.nats_connect import connect_options
from infra.passwords import Passwords
from infra.presence import RedisPresence
from infra.ratelimit import RedisRateLimiter
from infra.search.factory import open_search_index
from infra.search.port import SearchIndex
from infra.settings import Settings, SettingsError, blob_url, load_settings
from projections import consistency
from projections.seqs import SeqLookup
from readapi import accounts as accounts_queries
from readapi import channels as channels_queries
from readapi import edge as query_edge
from readapi import files as files_queries
from readapi import messages as messages_queries
from readapi import notifications as notifications_queries
from readapi import search as search_queries
from readapi import workspaces as workspaces_queries
from realtime import edge as realtime_edge
from realtime import gateway as realtime_gateway
from realtime import presence as presence_routes
from realtime import service as realtime_service
from realtime.presence import PresenceFanout

log = structlog.get_logger(__name__)

API_PREFIX = "/api/v1"
PROJECTORS_STOP_S = 10.0 + CLOSE_TIMEOUT_S  # their own grace for a batch in flight, then ours
WORKSPACE_ROUTES = [
    workspaces_commands.WorkspaceCommands,
    workspaces_commands.InviteCommands,
    workspaces_queries.WorkspaceQueries,
    channels_commands.WorkspaceChannelCommands,
    channels_commands.ChannelCommands,
    channels_queries.WorkspaceChannelQueries,
    channels_queries.ChannelQueries,
]


def api_routes() -> list[Any]:
    """Hubbub's controllers, mounted under ``/api/v1`` (commands, queries, realtime add theirs here)."""
    return [
        accounts_commands.AuthController,
        accounts_commands.revoke_session,
        accounts_queries.me,
        accounts_queries.sessions,
        messages_commands.MessagesController,
        presence_routes.PresenceController,
        messages_queries.MessageQueries,
        search_queries.SearchQueries,
        realtime_gateway.ws_endpoint,
        files_commands.FileCommands,
        files_queries.FileQueries,
        notifications_commands.NotificationCommands,
        notifications_queries.NotificationQueries,
        *WORKSPACE_ROUTES,
    ]


def create_app(settings: Settings, api_handlers: Sequence[Any] = ()) -> Litestar:
    """The Hubbub app. ``settings`` must name every service (``hubbub.services.resolved`` fills
    them in for ``hubbub dev``). ``api_handlers`` are mounted under ``/api/v1`` next to ``api_routes()``."""
    for field in ("database_url", "nats_url", "redis_url"):
        if getattr(settings, field) is None:
            raise SettingsError(f"create_app needs settings.{field}; use hubbub.services.resolved for embedded ones")
    api = Router(API_PREFIX, route_handlers=[*api_routes(), *api_handlers])
    app = Litestar(
        route_handlers=[*health.ROUTES, api],
        lifespan=[_lifespan],
        dependencies=deps.dependencies(),
        exception_handlers=problems.exception_handlers(),
        middleware=[consistency.ReadYourWritesMiddleware(API_PREFIX)],
        request_max_body_size=settings.max_request_bytes,
        request_class=JsonRequest,  # the rules of JSON bodies (hubbub/request_rules.py)
        openapi_config=OpenAPIConfig(title="Hubbub", version=_version(), path="/schema"),
        logging_config=None,  # ours (infra/logging.py) is configured by the process, not the app
        state=State({"settings": settings}),
    )
    # Litestar runs its middleware list only for matched routes; a 404 needs a request id too. The
    # post lane answers well-formed posts past Litestar's per-request machinery (commands/lane.py),
    # its failures as the app answers them; OPTIONS answers get every method of their path in
    # Allow (hubbub/request_rules.py).
    litestar = CompleteAllow(app.asgi_handler, app)
    lane = PostLane(litestar, app, API_PREFIX, settings.max_request_bytes, problems.exception_handlers())
    app.asgi_handler = RequestContext(lane, parse_trusted_proxies(settings.trusted_proxies))
    return app


def app_from_env() -> Litestar:
    """Factory for ``uvicorn hubbub.app:app_from_env --factory`` (``hubbub serve --workers N``)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    tune_gc()
    return app


GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """A server process's cycle collector: what was built to serve (modules, the app) is frozen,
    never scanned again, and the youngest generation is collected every 10,000 allocations
    instead of 700. With the default, what a batch or request keeps alive for a few milliseconds
    outlived the young collections, piled up in the oldest generation and set off a full
    collection about once a second, each stopping the event loop (and every request in it) for
    50-75 ms on this machine while posting (measured with gc.callbacks: none while posting now).
    50,000 did no better there and lets more garbage wait between collections."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _version() -> str:
    try:
        return version("hubbub")
    except PackageNotFoundError:
        return "0.0.0"


@contextlib.asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with contextlib.AsyncExitStack() as stack:
        services = await _open_services(settings, stack)
        for key in {deps.STATE_KEY, command_edge.STATE_KEY, query_edge.STATE_KEY, realtime_edge.STATE_KEY}:
            app.state[key] = services  # what each room's edge module reads (the same key today)
        app.state[consistency.STATE_KEY] = services.consistency
        app.state[realtime_gateway.STATE_KEY] = await stack.enter_async_context(
            realtime_service.running(
                settings=settings,
                pool=services.pool,
                store=services.store,
                nats=services.nats,
                watcher=services.consistency.watcher,
                read_models=services.consistency.read_models,
                authenticate=lambda token: authenticate(services.shell, f"Bearer {token}"),
                presence=services.presence,
                report=services.presence_fanout.report,
            )
        )
        if settings.smtp_url and settings.database_url:  # email for unread mentions and DMs; off without it
            await stack.enter_async_context(
                notify_email.running(
                    notify_email.EmailNotifier(
                        pool=services.pool,
                        conninfo=settings.database_url,
                        shell=services.shell,
                        mailer=SmtpMailer.from_url(settings.smtp_url),
                    )
                )
            )
        log.info("app.started", read_models=list(services.consistency.read_models))
        yield
        log.info("app.stopping")


async def _open_services(settings: Settings, stack: contextlib.AsyncExitStack) -> deps.Services:
    assert settings.database_url and settings.nats_url and settings.redis_url  # checked by create_app
    database_url = settings.database_url
    await migrate(database_url)
    pool = await open_pool(database_url, settings.db_pool_min, settings.db_pool_max)
    stack.push_async_callback(close_within, "database pool", pool.close)
    store = open_event_store(settings, pool, database_url)
    stack.push_async_callback(close_within, "event store", store.close)
    nc = await _connect_nats(settings.nats_url)
    stack.push_async_callback(close_within, "nats", nc.close)
    # A pool that waits for a free connection (at most 2 s) instead of failing: redis-py's default
    # refuses the 101st concurrent command, which lost presence updates and rate-limit checks
    # under 10,000 sockets' heartbeats (bench/realtime.py).
    redis = Redis(
        connection_pool=BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=200, timeout=2, socket_connect_timeout=2, socket_timeout=5
        )
    )
    stack.push_async_callback(close_within, "redis", redis.aclose)
    watcher = consistency.CheckpointWatcher(pool, database_url)
    await watcher.start()
    stack.push_async_callback(close_within, "checkpoint watcher", watcher.stop)
    search = await stack.enter_async_context(open_search_index(settings))
    names = await _start_projectors(pool, database_url, store, stack, search)
    read = consistency.ReadConsistency(watcher, names, settings.read_wait_timeout_s)
    presence = RedisPresence(redis)
    fanout = PresenceFanout(presence, pool, nc)
    fanout.start()
    stack.push_async_callback(close_within, "presence fanout", fanout.stop)
    blobs = open_blob_store(
        blob_url(settings),
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_access_key_id=settings.s3_access_key_id,
        s3_secret_access_key=settings.s3_secret_access_key,
    )
    stack.push_async_callback(close_within, "blob store", blobs.close)
    thumbnailer = Thumbnailer(settings.thumbnail_workers, settings.max_image_pixels)
    stack.push_async_callback(close_within, "thumbnailer", thumbnailer.close)
    # Long streams' states from their snapshots (commands/snapshots.py); the ones being written
    # are awaited before the pool closes.
    shell = CommandShell(store, snapshots=PostgresSnapshots(pool))
    stack.push_async_callback(close_within, "snapshot writes", shell.drain_snapshots)
    janitor = BlobJanitor(shell, blobs, pool)
    janitor.start()
    stack.push_async_callback(close_within, "blob janitor", janitor.stop)
    # What uploads cut off by a crash left in the blob store.
    sweeper = LeftoverSweeper(blobs, grace_s=settings.blob_sweep_grace_s)
    sweeper.start()
    stack.push_async_callback(close_within, "leftover sweeper", sweeper.stop)
    limiter = RedisRateLimiter(redis)
    # Posts allowed ahead of Redis: told before it closes.
    stack.push_async_callback(close_within, "rate limit takes", limiter.drain)
    return deps.Services(
        settings=settings,
        pool=pool,
        store=store,
        nats=nc,
        redis=redis,
        consistency=read,
        shell=shell,
        passwords=Passwords(cheap=settings.insecure_fast_passwords),
        limiter=limiter,
        seqs=SeqLookup(pool),
        presence=presence,
        presence_fanout=fanout,
        search=search,
        blobs=blobs,
        thumbnailer=thumbnailer,
        uploads=Reservations(),
    )


async def _connect_nats(url: str | list[str]) -> nats.NATS:
    client = nats.NATS()

    async def on_error(exc: Exception) -> None:
        log.warning("nats.error", error=str(exc))

    async def on_disconnected() -> None:
        if not client.is_closed:  # closing on shutdown disconnects too; that is no news
            log.warning("nats.disconnected")

    async def on_reconnected() -> None:
        log.info("nats.reconnected")

    await client.connect(
        **connect_options(url),
        name="hubbub",
        connect_timeout=2,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
    return client


async def _start_projectors(
    pool: AsyncConnectionPool,
    database_url: str,
    store: EventStore,
    stack: contextlib.AsyncExitStack,
    search: SearchIndex,
) -> tuple[str, ...]:
    # Imported when the app starts, not when this module loads, so that a test can put
    # stand-in projections in place first.
    from projections.registry import all_projections
    from projections.runtime import ProjectorRunner
    from projections.search import split_external, with_search_backend

    projections = with_search_backend(all_projections(), search)  # the configured search backend's
    for group in split_external(projections):  # OpenSearch's projection apart: its outage holds up no other
        runner = ProjectorRunner(pool=pool, conninfo=database_url, store=store, projections=group)
        await runner.start()
        stack.push_async_callback(close_within, "projectors", runner.stop, PROJECTORS_STOP_S)
    return tuple(p.name for p in projections)
