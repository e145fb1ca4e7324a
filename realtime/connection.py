"""One authenticated socket: what it listens to, how far it got, and how far its client is behind.

Delivery is exactly-once and in log order per socket:
- ``position`` is the last event written; anything at or below it is dropped, which
  covers an event that comes both from a replay and live, or on two subjects.
- While the socket is being *synced* (first connect, resume, a membership change, a NATS
  reconnect) live events are buffered, not sent. A sync (1) subscribes to every subject the user
  may see now, then reads the read models' position ``upto`` (anything published after that
  arrives live, since the subscriptions came first); (2) replays ``(after, upto]`` from the log
  for those subjects; (3) sends the buffered events above that, and goes live again with no await
  between the last buffered event and the switch, so nothing can slip between the two.
- What the user may no longer see is dropped from the buffer (it was filtered by the subjects as
  they are after the sync), and the hub dispatches in log order, so an event after a removal
  never reaches the removed user.
The hub calls ``offer``, ``request_sync``, ``write`` and ``close_soon`` from its dispatcher: they
never await. Frames go to the socket's ``Sink`` (``realtime/wire.py``) as bytes built once per
node; no task runs per socket while it is idle: a sync runs in a task made when one is asked for.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Coroutine
from typing import Any, Literal, Protocol

import structlog
from psycopg_pool import AsyncConnectionPool

from infra.eventstore.port import EventStore
from realtime.access import read_models_position, subjects_for
from realtime.replay import replay
from realtime.subjects import Envelope
from realtime.wire import Sink, text_frame, text_frames

log = structlog.get_logger(__name__)

TOO_SLOW = 4008
SERVER_ERROR = 1011


class Hub(Protocol):
    """What a socket uses of the process's hub (``realtime/hub.py``, which hands sockets their
    events): where to read from, and how to start and stop hearing subjects."""

    pool: AsyncConnectionPool
    store: EventStore
    read_models: tuple[str, ...]

    async def watch(self, conn: Connection, wanted: Collection[str]) -> None: ...

    async def unwatch(self, conn: Connection, unwanted: Collection[str]) -> None: ...


class Connection:
    __slots__ = (
        "__weakref__",
        "_out",
        "_out_after",
        "_out_frames",
        "_sync_from",
        "backlog",
        "buffer",
        "buffer_limit",
        "close_code",
        "close_reason",
        "device_id",
        "done",
        "heard_at",
        "hub",
        "live",
        "position",
        "queue_size",
        "session_id",
        "sink",
        "status",
        "subjects",
        "syncer",
        "user_id",
    )

    def __init__(self, hub: Hub, user_id: str, session_id: str, queue_size: int, sink: Sink | None = None) -> None:
        self.hub, self.user_id, self.session_id = hub, user_id, session_id
        self.subjects: set[str] = set()
        self.position = 0
        self.sink = sink
        self.queue_size = queue_size
        self.backlog = 0
        """Frames written while the sink was paused (the client not reading): over ``queue_size``, 4008."""
        self.buffer: list[Envelope] | None = []  # buffering until the first sync is done
        self.buffer_limit = 4 * queue_size
        self.close_code: int | None = None
        self.close_reason = ""
        self.done = asyncio.Event()
        self.heard_at = 0.0
        """When the client's last heartbeat came (loop time; 0 before the first)."""
        self.live = False
        """Whether ``ready`` has been written: ephemeral frames (typing, presence) wait for it."""
        self.device_id = uuid.uuid4().hex
        """This socket as a presence device (one session may hold several sockets)."""
        self.status: Literal["active", "away"] = "active"
        self.syncer: asyncio.Task[None] | None = None
        """The task replaying and re-subscribing, while there is a sync to do (``follow``)."""
        self._sync_from: int | None = None
        self._out: list[bytes] = []
        """What ``offer`` took in the hub's current dispatch pass: written at its end, by ``flush``."""
        self._out_frames = 0
        self._out_after = 0
        """``position`` before the first of ``_out``: what the client has if they are not written."""

    # -- from the hub's dispatcher (no awaits) -------------------------------------------------

    def offer(self, envelope: Envelope) -> None:
        if self.done.is_set() or envelope.position <= self.position:
            return
        if self.buffer is None:
            if not self._out:
                self._out_after = self.position
            self._out.append(envelope.wire)
            self._out_frames += len(envelope.frames)
            self.position = envelope.position
        elif len(self.buffer) < self.buffer_limit:
            self.buffer.append(envelope)
        else:
            self.close_soon(TOO_SLOW, f"too slow; reconnect with resume_from {self.position}")

    def flush(self) -> None:
        """Write what ``offer`` took since the last flush, in one write (the hub calls it after
        each dispatch pass: a burst of events costs each socket one system call, not one each)."""
        if self._out:
            out, frames, self._out, self._out_frames = self._out, self._out_frames, [], 0
            self.write(out[0] if len(out) == 1 else b"".join(out), frames, self._out_after)

    def request_sync(self, after: int) -> None:
        """What this user may see has changed at ``after`` (or the events since may be lost)."""
        if self.buffer is None:
            self.buffer = []
        self._sync_from = after if self._sync_from is None else min(self._sync_from, after)
        if self.syncer is None and self.live and not self.done.is_set():
            self._start_syncer(self._resync())

    def close_soon(self, code: int | None, reason: str = "") -> None:
        """Ask the gateway to close the socket with ``code`` (None: it is gone already)."""
        if not self.done.is_set():
            self.close_code, self.close_reason = code, reason
            self.done.set()

    def write(self, wire: bytes, frames: int = 1, written: int | None = None) -> None:
        """``frames`` frames, already on-the-wire bytes; 4008 once too many wait for the client
        (``written``: the position the client has without these, if not ``position``)."""
        if self.done.is_set():
            return
        assert self.sink is not None
        if self.sink.paused():
            self.backlog += frames
            if self.backlog > self.queue_size:
                resume_from = self.position if written is None else written
                self.close_soon(TOO_SLOW, f"too slow; reconnect with resume_from {resume_from}")
                return
        else:
            self.backlog = 0
        self.sink.write(wire)

    def send(self, frame: str) -> None:
        self.write(text_frame(frame))

    # -- the socket's own tasks ----------------------------------------------------------------

    async def settle(self) -> int:
        """Subscribe to what the user may see now; the position above which all of it comes live."""
        pool = self.hub.pool
        while True:
            async with pool.connection() as conn:
                wanted = await subjects_for(conn, self.user_id)
            added, self.subjects = (
                wanted - self.subjects,
                self.subjects | wanted,
            )  # first: a failed watch is undone by remove
            await self.hub.watch(self, added)
            upto = await read_models_position(pool, self.hub.read_models)
            async with pool.connection() as conn:
                now = await subjects_for(conn, self.user_id)  # as of upto or later
            if now <= self.subjects:
                await self.hub.unwatch(self, self.subjects - now)
                self.subjects = now
                return upto

    def follow(self, after: int, upto: int) -> None:
        """Catch up on ``(after, upto]``, then live; a sync asked for meanwhile follows it."""
        self._start_syncer(self._first(after, upto))

    def _start_syncer(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(coro))
        self.syncer = task

    async def guard(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run one of this socket's tasks: a failure is logged and closes the socket (1011), so
        the client reconnects and resumes; it never goes unnoticed in a task nobody awaits."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("realtime.socket_task_failed", user_id=self.user_id, position=self.position)
            self.close_soon(SERVER_ERROR, "server error; reconnect and resume")

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await self.guard(coro)
        finally:
            self.syncer = None  # no await between the last look at _sync_from and this

    async def _first(self, after: int, upto: int) -> None:
        await self._catch_up(after, upto)
        await self._resync()

    async def _resync(self) -> None:
        while self._sync_from is not None:
            # A change at or below ``position`` is in what was sent already: a replay that went
            # past it filtered by what the user may see as of after it.
            after, self._sync_from = max(self._sync_from, self.position), None
            upto = await self.settle()
            log.debug("realtime.socket_synced", user_id=self.user_id, after=after, upto=upto)
            await self._catch_up(after, upto)

    async def _catch_up(self, after: int, upto: int) -> None:
        async for page in replay(self.hub.store, self.hub.pool, after, upto, self.subjects):
            for item in page:
                await self._put(item.position, item.route.subjects, item.frames)
        self.position = max(self.position, upto)
        while self._sync_from is None:
            items, self.buffer = self.buffer or [], []
            if not items:
                self.buffer = None  # live from here: nothing awaited since the buffer was seen empty
                return
            for envelope in items:
                await self._put(envelope.position, (envelope.subject,), envelope.frames)

    async def _put(self, position: int, where: Collection[str], frames: Collection[str]) -> None:
        if position <= self.position or self.subjects.isdisjoint(where):
            return
        assert self.sink is not None
        while self.sink.paused() and not self.done.is_set():
            await self.sink.drained()  # a replay waits for a slow socket; live events buffer meanwhile
        self.write(text_frames(frames), len(frames))
        self.position = position
