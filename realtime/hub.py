"""The gateway's per-process fan-out: one NATS subscription per subject that any local socket
listens to (reference counted), each message parsed once and its frames handed to every local
socket that listens to the subject.

Order matters for privacy: a removal from a channel (on the user's subject) must take effect
before the channel's next message (on the channel's subject). nats-py runs one task per
subscription, so messages of different subscriptions can be handled out of order. The callbacks
therefore only collect; one dispatcher task takes what has been collected, in position order,
and hands it out. Every callback of one read from the NATS socket has run before the dispatcher
wakes (it is woken by the first of them, and asyncio runs ready tasks first in, first out), and
positions grow along the wire (one publisher), so sorting each take restores log order.

Ephemeral events (never in the log, no position) ride on companion subjects: every channel
subject ``hubbub.ch.{ch}`` a socket hears brings ``hubbub.ch.{ch}.typing``, and every workspace
subject ``hubbub.ws.{ws}`` brings ``hubbub.ws.{ws}.presence`` (a guest, who hears no workspace
subject, hears ``hubbub.ws.{ws}.presence.{guest}`` instead). They skip the ordering and the
position bookkeeping: a typing frame goes straight to the listeners (not to the typer's own
sockets); presence frames of a workspace are merged and handed out at most once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence

import msgspec
import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from psycopg_pool import AsyncConnectionPool

from infra.aio import cancel_and_wait
from infra.eventstore.port import EventStore
from infra.nats_connect import connect_options
from realtime import presence_batch, subjects
from realtime.connection import Connection
from realtime.presence_batch import WorkspacePresence
from realtime.subjects import Envelope
from realtime.wire import text_frame

log = structlog.get_logger(__name__)

SESSION_ENDED = 4001
TYPING_EVERY_S = 3.0
"""A user's typing in one channel is passed on at most this often (clients send it per keystroke)."""
TYPING_EXPIRES_S = 5
PRESENCE_EVERY_S = 1.25
"""A workspace's presence flushes are this far apart, from the end of one to the start of the
next, so that frames reach a socket at least this far apart: a quarter of a second more than
"at most one a second", since a frame reaches its client later than it is written (a busy loop,
a busy client) and the next may not (bench/realtime.py saw gaps of 0.73 s at 1.0)."""


def _with_companions(names: Collection[str]) -> list[str]:
    out = []
    for subject in names:
        out.append(subject)
        companion = subjects.ephemeral_companion(subject)
        if companion is not None:
            out.append(companion)
    return out


class Hub:
    def __init__(
        self, *, nats_url: str | list[str], store: EventStore, pool: AsyncConnectionPool, read_models: Sequence[str]
    ) -> None:
        self.nats_url, self.store, self.pool, self.read_models = nats_url, store, pool, tuple(read_models)
        self.nc: NATS | None = None
        self.connections: set[Connection] = set()
        self.listeners: defaultdict[str, set[Connection]] = defaultdict(set)
        self._refs: Counter[str] = Counter()
        self._subs: dict[str, Subscription] = {}
        self._lock = asyncio.Lock()
        self._collected: list[Envelope] = []
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._presence: dict[str, WorkspacePresence] = {}  # by workspace presence subject
        self._presence_flush: asyncio.TimerHandle | None = None
        self._typed: dict[tuple[str, str], float] = {}

    async def start(self) -> None:
        self.nc = await nats.connect(
            **connect_options(self.nats_url),
            name="hubbub-gateway",
            connect_timeout=2,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        # Every user's subject through one subscription: a socket listens to its user's subject, and
        # a NATS subscription each (with nats-py's queue and task) cost several KiB per socket.
        # What arrives for a user without a socket here is dropped before it is parsed.
        self._subs[subjects.ALL_USERS] = await self.nc.subscribe(subjects.ALL_USERS, cb=self._collect)
        await self.nc.flush(timeout=5)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="realtime-dispatcher")

    async def stop(self) -> None:
        if self._dispatcher is not None:
            await cancel_and_wait([self._dispatcher])
        if self.nc is not None:
            await self.nc.close()

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)

    async def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        await self.unwatch(conn, conn.subjects)
        conn.subjects = set()

    async def watch(self, conn: Connection, wanted: Collection[str]) -> None:
        """``conn`` hears ``wanted`` from now on; returns once NATS has every subscription."""
        assert self.nc is not None
        async with self._lock:
            for subject in _with_companions(wanted):
                if subject not in self._subs and not subjects.is_user(subject):
                    callback = self._ephemeral if subjects.is_ephemeral(subject) else self._collect
                    self._subs[subject] = await self.nc.subscribe(subject, cb=callback)
                self._refs[subject] += 1
                self.listeners[subject].add(conn)
        # A PING answered means the server has every SUB sent before it, ours or a racing caller's.
        # Our 5 s bound is kept outside nats-py's flush: when its own timeout cancels the PING's
        # future, the late PONG then fails its read loop (InvalidStateError) and it reconnects,
        # re-syncing every socket (nats.py #624-like; seen under load). Shielded, the flush just
        # finishes later.
        flush = asyncio.ensure_future(self.nc.flush(timeout=60))
        async with asyncio.timeout(5):
            await asyncio.shield(flush)

    async def unwatch(self, conn: Connection, unwanted: Collection[str]) -> None:
        async with self._lock:
            for subject in _with_companions(unwanted):
                if conn not in self.listeners.get(subject, ()):
                    continue  # never got that far (a watch that failed half way)
                self.listeners[subject].discard(conn)
                self._refs[subject] -= 1
                if self._refs[subject] <= 0:
                    del self._refs[subject]
                    self.listeners.pop(subject, None)
                    sub = self._subs.pop(subject, None)
                    if sub is not None:
                        with contextlib.suppress(Exception):  # a closed connection has no subscriptions left
                            await sub.unsubscribe()

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    async def _collect(self, msg: Msg) -> None:
        if msg.subject not in self.listeners:  # a user subject nobody here listens to (ALL_USERS)
            return
        envelope = subjects.parse(msg.subject, msg.headers, msg.data)
        if envelope is None:
            log.warning("realtime.foreign_message", subject=msg.subject)
            return
        self._collected.append(envelope)
        self._wake.set()

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(0)  # let the callbacks of the same read run first (see module doc)
            self._wake.clear()
            taken, self._collected = self._collected, []
            taken.sort(key=lambda e: e.position)  # stable: one event's subjects keep their order
            touched: dict[Connection, None] = {}
            for envelope in taken:
                try:
                    self._deliver(envelope, touched)
                except Exception:
                    log.exception("realtime.dispatch_failed", position=envelope.position, subject=envelope.subject)
            for conn in touched:
                conn.flush()

    def _deliver(self, envelope: Envelope, touched: dict[Connection, None]) -> None:
        listeners = self.listeners.get(envelope.subject, ())
        touched.update(dict.fromkeys(listeners))
        for conn in list(listeners):
            if envelope.session_ended is not None:
                if conn.session_id == envelope.session_ended:
                    conn.close_soon(SESSION_ENDED, "session ended (logged out or revoked); log in again")
                continue
            conn.offer(envelope)
            if envelope.resync:
                conn.request_sync(envelope.position)

    # -- ephemeral: typing and presence --------------------------------------------------------

    async def typing(self, conn: Connection, channel_id: str) -> bool:
        """Tell the channel's other sockets that ``conn``'s user is typing; False if throttled."""
        assert self.nc is not None
        loop = asyncio.get_running_loop()
        key = (conn.user_id, channel_id)
        if loop.time() - self._typed.get(key, -TYPING_EVERY_S) < TYPING_EVERY_S:
            return False
        self._typed[key] = loop.time()
        if len(self._typed) > 10_000:  # forget old entries rather than grow forever
            self._typed = {k: t for k, t in self._typed.items() if loop.time() - t < TYPING_EVERY_S}
        frame = {
            "op": "event",
            "type": "typing",
            "channel_id": channel_id,
            "data": {"user_id": conn.user_id, "expires_in_s": TYPING_EXPIRES_S},
        }
        await self.nc.publish(
            subjects.typing(channel_id), json.dumps(frame).encode(), headers={subjects.TYPIST: conn.user_id}
        )
        return True

    async def _ephemeral(self, msg: Msg) -> None:
        if msg.subject.endswith(subjects.TYPING_SUFFIX):
            typist = (msg.headers or {}).get(subjects.TYPIST)
            wire = text_frame(msg.data.decode())
            for conn in list(self.listeners.get(msg.subject, ())):
                if conn.user_id != typist and conn.live:
                    conn.write(wire)
            return
        try:
            event = presence_batch.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("realtime.foreign_message", subject=msg.subject)
            return
        batch = self._presence.get(msg.subject)
        if batch is None:
            batch = self._presence[msg.subject] = WorkspacePresence(event.workspace_id)
        batch.add(event.data)
        self._schedule_presence()

    def _schedule_presence(self) -> None:
        if self._presence_flush is not None:
            return
        busy = [batch.sent_at for batch in self._presence.values() if batch.busy]
        if busy:
            loop = asyncio.get_running_loop()
            self._presence_flush = loop.call_at(max(min(busy) + PRESENCE_EVERY_S, loop.time()), self._flush_presence)

    def _flush_presence(self) -> None:
        self._presence_flush = None
        now = asyncio.get_running_loop().time()
        for subject, batch in list(self._presence.items()):
            if batch.busy and now >= batch.sent_at + PRESENCE_EVERY_S:
                batch.flush(set(self.listeners.get(subject, ())), now)
                # From the end: a flush to thousands of sockets takes a while, and the next one
                # reaches a socket early in it; spaced from the start, a socket late in one and
                # early in the next got two frames well within a second (bench/realtime.py).
                batch.sent_at = asyncio.get_running_loop().time()
            if not batch.busy and subject not in self.listeners:
                del self._presence[subject]
        self._schedule_presence()

    async def _on_error(self, exc: Exception) -> None:
        log.warning("realtime.nats_error", error=str(exc))

    async def _on_disconnected(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            log.warning("realtime.nats_disconnected", sockets=len(self.connections))

    async def _on_reconnected(self) -> None:
        # Whatever was published while we were away is in the log: every socket catches up from
        # where it was, as a resuming client would.
        log.info("realtime.nats_reconnected", sockets=len(self.connections))
        for conn in list(self.connections):
            conn.request_sync(conn.position)
