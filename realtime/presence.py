"""Presence over HTTP (``PUT /presence``, ``GET /workspaces/{ws}/presence``) and its fan-out.

A device is a session: the WebSocket gateway reports its sockets' heartbeats and closes, and a
client without a socket can ``PUT /presence``, which keeps that session's device alive for one
heartbeat timeout. ``PresenceFanout`` runs in every app process: it collects status changes,
sweeps devices whose time is up (any process may; each change is reported once), and once a
second publishes one ``presence.changed`` frame per workspace to ``hubbub.ws.{ws}.presence``
for everyone whose status changed, so a 10,000-member workspace gets one frame a second, not one
per change. Guests, who see only some people (``projections/visibility.guest_sees``), get a frame
of their own on ``hubbub.ws.{ws}.presence.{guest}`` with those of the changes they may see.
Presence is ephemeral: never in the log, no position.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Literal

import msgspec
import structlog
from litestar import Controller, Request, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from domain.access import looks_like_id
from domain.errors import DomainError, NotFound
from domain.session import Principal
from infra.aio import cancel_and_wait
from infra.presence import Change, Presence
from projections.members import member_ids, members_among, workspaces_of
from projections.visibility import guests_seeing, workspace_role
from realtime import subjects
from realtime.edge import services_of
from realtime.presence_batch import Offline, PresenceChanged, grouped

log = structlog.get_logger(__name__)

TIMEOUT_HEARTBEATS = 2.5
"""A device is gone this many heartbeat intervals after its last sign of life (as the gateway's 4009)."""
MAX_USER_IDS = 200

_ENCODER = msgspec.json.Encoder()


class PresenceBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: Literal["active", "away"]


class PresenceOut(msgspec.Struct, frozen=True):
    user_id: str
    status: str
    last_seen_at: dt.datetime | None


class PresenceListOut(msgspec.Struct, frozen=True):
    items: list[PresenceOut]
    next_after: str | None = None


class PresenceController(Controller):
    path = "/"
    tags = ["presence"]

    @put("/presence", operation_id="setPresence")
    async def set_presence(
        self, request: Request, data: JSONBody[PresenceBody], principal: NamedDependency[Principal]
    ) -> PresenceOut:
        services = services_of(request)
        ttl = services.settings.ws_heartbeat_s * TIMEOUT_HEARTBEATS
        change = await services.presence.seen(principal.user_id, principal.session_id, data.status, ttl)
        if change is not None:
            services.presence_fanout.report(change)
        seen = (await services.presence.statuses([principal.user_id]))[principal.user_id]
        return PresenceOut(principal.user_id, seen.status, seen.last_seen_at)

    @get("/workspaces/{workspace_id:str}/presence", operation_id="listPresence")
    async def list_presence(
        self,
        request: Request,
        workspace_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        after: FromQuery[str] = "",
        user_ids: FromQuery[str | None] = None,
    ) -> PresenceListOut:
        """Members' status: ``?user_ids=a,b`` for those (members only, up to 200), else a page.
        A guest gets only the people they see (``projections/visibility.guest_sees``)."""
        asked = _asked(user_ids)
        if not looks_like_id(workspace_id):
            raise NotFound("no such workspace")
        async with pool.connection() as conn:
            role = await workspace_role(conn, workspace_id, principal.user_id)
            if role is None:
                raise NotFound("no such workspace")
            guest = principal.user_id if role == "guest" else None
            members = await (
                members_among(conn, workspace_id, asked, guest)
                if asked is not None
                else member_ids(conn, workspace_id, after, limit, guest)
            )
        seen = await services_of(request).presence.statuses(members)
        items = [PresenceOut(u, seen[u].status, seen[u].last_seen_at) for u in members]
        return PresenceListOut(items, members[-1] if asked is None and len(members) == limit else None)


def _asked(user_ids: str | None) -> list[str] | None:
    if user_ids is None:
        return None
    asked = sorted({u for u in user_ids.split(",") if u})
    if not asked or len(asked) > MAX_USER_IDS:
        raise DomainError(f"user_ids takes 1 to {MAX_USER_IDS} comma-separated ids", field="user_ids")
    return asked


class PresenceFanout:
    """Collects changes, sweeps timed-out devices, publishes one frame per workspace a second."""

    def __init__(self, presence: Presence, pool: AsyncConnectionPool, nats: NATS, interval_s: float = 1.0) -> None:
        self._presence, self._pool, self._nats, self._interval_s = presence, pool, nats, interval_s
        self._pending: dict[str, Change] = {}
        self._task: asyncio.Task[None] | None = None

    def report(self, change: Change) -> None:
        self._pending[change.user_id] = change  # the latest wins: subscribers want the status now

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence-fanout")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        await self.flush()  # a clean shutdown still tells the others who went offline

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                for change in await self._presence.expire():
                    self.report(change)
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - Redis, PostgreSQL or NATS away: try next second
                log.warning("presence.fanout_failed", error=str(exc), pending=len(self._pending))

    async def flush(self) -> None:
        if not self._pending:
            return
        changes, self._pending = self._pending, {}
        async with self._pool.connection() as conn:
            rows = await workspaces_of(conn, list(changes))
            seen_by_guests = await guests_seeing(conn, list(changes))
        by_workspace: dict[str, list[Change]] = {}
        for workspace_id, user_id in rows:
            by_workspace.setdefault(workspace_id, []).append(changes[user_id])
        for workspace_id, items in by_workspace.items():
            await self._nats.publish(subjects.presence(workspace_id), frame(workspace_id, items))
        await self._publish_to_guests(seen_by_guests, changes)
        log.debug("presence.published", changes=len(changes), workspaces=len(by_workspace))

    async def _publish_to_guests(self, seen: list[tuple[str, str, str]], changes: dict[str, Change]) -> None:
        """Guests hear no workspace subject: each gets a frame of its own, of the people it sees."""
        by_guest: dict[tuple[str, str], list[Change]] = {}
        for workspace_id, guest_id, user_id in seen:
            by_guest.setdefault((workspace_id, guest_id), []).append(changes[user_id])
        for (workspace_id, guest_id), items in by_guest.items():
            await self._nats.publish(subjects.guest_presence(workspace_id, guest_id), frame(workspace_id, items))


def frame(workspace_id: str, changes: list[Change]) -> bytes:
    """The ``presence.changed`` frame as sockets get it (ephemeral: no position): the people
    grouped by status, only the offline ones with their ``last_seen_at``
    (``realtime/presence_batch.py``'s ``PresenceChanged``; ``changes`` has each person once)."""
    latest = ((c.user_id, Offline(c.user_id, c.last_seen_at) if c.status == "offline" else c.status) for c in changes)
    return _ENCODER.encode(PresenceChanged(workspace_id=workspace_id, data=grouped(latest)))
