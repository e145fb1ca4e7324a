"""Read-your-writes: a query sent with ``X-Hubbub-Position: N`` waits (bounded) until every read
model has passed N.

Projectors notify ``'{name} {position}'`` when they commit a checkpoint (``projections/checkpoints.py``).
One ``CheckpointWatcher`` per app holds the only LISTEN connection; a NOTIFY updates its copy of
the checkpoints and wakes every waiting request, which then compares in memory. So waiting costs
the database no query at all, however many requests wait (a NOTIFY without a position makes the
watcher read all the checkpoints once). While anyone waits, the
watcher also re-reads every ``SAFETY_RECHECK_S``, which covers a NOTIFY lost in a reconnect.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import psycopg
import structlog
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.exceptions import ClientException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from psycopg_pool import AsyncConnectionPool

from infra.aio import cancel_and_wait, wait_event
from projections.checkpoints import CHANNEL, read_checkpoints

log = structlog.get_logger(__name__)

SEQS_CHANNEL = "hubbub_seqs"
"""The ``messages`` projection's ``"position:seq ..."`` for the posts of each batch, sent before
its checkpoint: a post's answer carries its seq without asking the database for it."""
SAFETY_RECHECK_S = 0.5
SEQS_KEPT = 20_000


def reached(checkpoints: Mapping[str, int], names: Sequence[str], position: int) -> bool:
    """Has every projection in ``names`` passed ``position``? A projection with no row is at 0."""
    return all(checkpoints.get(name, 0) >= position for name in names)


class CheckpointWatcher:
    """The app's one LISTEN on the checkpoints' channel and its latest view of the checkpoints."""

    def __init__(self, pool: AsyncConnectionPool, conninfo: str) -> None:
        self._pool = pool
        self._conninfo = conninfo
        self.checkpoints: dict[str, int] = {}
        self.seqs: dict[int, int] = {}
        """position of a post -> its seq, the latest ``SEQS_KEPT`` (a lost NOTIFY, a seq given
        before this process listened: the caller reads the seq instead)."""
        self._refreshed = asyncio.Event()  # replaced after each refresh; waiters hold the old one
        self._dirty = asyncio.Event()
        self._waiting = 0
        self._notifications = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="checkpoint-listener"),
            asyncio.create_task(self._refresh_loop(), name="checkpoint-refresher"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)

    async def wait(self, names: Sequence[str], position: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # No read of our own: a checkpoint that passed ``position`` was NOTIFYed, and the refresh
        # that follows wakes us; a lost NOTIFY is covered by the safety re-check while we wait.
        self._waiting += 1
        try:
            while True:
                refreshed = self._refreshed  # before comparing: a refresh meanwhile still wakes us
                if reached(self.checkpoints, names, position):
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                await wait_event(refreshed, remaining)
        finally:
            self._waiting -= 1

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {SEQS_CHANNEL}")
                    self._dirty.set()  # whatever committed while we were not listening
                    async for notify in conn.notifies():
                        if notify.channel == SEQS_CHANNEL:
                            self._seqs_notified(notify.payload)
                        else:
                            self._notified(notify.payload)
            except psycopg.OperationalError as exc:
                log.warning("checkpoints.listener_reconnecting", error=str(exc))
                await asyncio.sleep(0.5)

    def _notified(self, payload: str) -> None:
        """``"{name} {position}"`` from a projector: no need to read anything. Anything else (an
        older projector, a hand-made NOTIFY) makes the refresher read every checkpoint."""
        name, _, position = payload.rpartition(" ")
        if not name or not position.isdigit():
            self._dirty.set()
            return
        self.checkpoints = {**self.checkpoints, name: int(position)}  # readers may hold the old dict
        self._notifications += 1
        self._wake()

    def _seqs_notified(self, payload: str) -> None:
        try:
            given = [tuple(map(int, pair.split(":"))) for pair in payload.split()]
        except ValueError:
            log.warning("checkpoints.bad_seqs_payload", payload=payload[:80])
            return
        self.seqs.update(given)
        for position in list(itertools.islice(self.seqs, max(0, len(self.seqs) - SEQS_KEPT))):
            del self.seqs[position]  # the oldest first (insertion order)

    def _wake(self) -> None:
        refreshed, self._refreshed = self._refreshed, asyncio.Event()
        refreshed.set()

    async def _refresh_loop(self) -> None:
        while True:
            await wait_event(self._dirty, SAFETY_RECHECK_S)
            if not self._dirty.is_set() and not self._waiting:
                continue
            self._dirty.clear()  # before reading: a NOTIFY during the read sets it again
            notifications = self._notifications
            try:
                self.checkpoints = await read_checkpoints(self._pool)
                if self._notifications != notifications:  # what we read may be older: read again
                    self._dirty.set()
            except (psycopg.Error, TimeoutError) as exc:
                log.warning("checkpoints.refresh_failed", error=str(exc))
                await asyncio.sleep(SAFETY_RECHECK_S)
                continue
            self._wake()


async def wait_for_position(
    pool: AsyncConnectionPool,
    names: Sequence[str],
    position: int,
    timeout: float,
    watcher: CheckpointWatcher | None = None,
) -> bool:
    """True once every projection in ``names`` has a checkpoint >= ``position``, False after
    ``timeout`` seconds. Pass the app's ``watcher`` to be woken by NOTIFY; without one this can
    only re-read the checkpoints every ``SAFETY_RECHECK_S`` (fine for scripts and tests)."""
    if not names:
        return True
    if watcher is not None:
        return await watcher.wait(names, position, timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not reached(await read_checkpoints(pool, names), names, position):
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(remaining, SAFETY_RECHECK_S))
    return True


# -- HTTP ------------------------------------------------------------------------------------------

POSITION_HEADER = "x-hubbub-position"
STALE_HEADER = "x-hubbub-stale"
STATE_KEY = "read_consistency"
"""``app.state[STATE_KEY]`` holds the app's ``ReadConsistency`` (set in the lifespan)."""


@dataclass(frozen=True)
class ReadConsistency:
    watcher: CheckpointWatcher
    read_models: tuple[str, ...]
    timeout_s: float

    async def wait(self, position: int) -> bool:
        return await self.watcher.wait(self.read_models, position, self.timeout_s)


def parse_position(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ClientException(
            f"X-Hubbub-Position must be a log position (a whole number >= 0, as a command returned it), not {shown!r}"
        )
    return int(value)


class ReadYourWritesMiddleware(ASGIMiddleware):
    """GET/HEAD under ``prefix`` with ``X-Hubbub-Position: N`` waits until the read models have
    passed N, for at most the configured timeout; then it answers anyway, marked ``X-Hubbub-Stale``."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        raw = _header(scope, POSITION_HEADER)
        if raw is None or not self._is_query(cast("HTTPScope", scope)):
            await next_app(scope, receive, send)
            return
        position = parse_position(raw)
        consistency: ReadConsistency = Litestar.from_scope(scope).state[STATE_KEY]
        if await consistency.wait(position):
            await next_app(scope, receive, send)
            return
        log.info("read.position_wait_timed_out", position=position, timeout_s=consistency.timeout_s)
        await next_app(scope, receive, _marked_stale(send))

    def _is_query(self, scope: HTTPScope) -> bool:
        return scope["method"] in ("GET", "HEAD") and scope["path"].startswith(self.prefix)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1").strip()
    return None


def _marked_stale(send: Send) -> Send:
    async def send_marked(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (STALE_HEADER.encode(), b"true")]}
        await send(message)

    return send_marked
