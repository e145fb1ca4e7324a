"""The realtime publisher: a follower of the log that sends client frames to NATS.

Reads: every event (``realtime.frames.route`` picks the ones clients hear about).
Writes: NATS messages on ``hubbub.ch.{channel}``, ``hubbub.user.{user}``, ``hubbub.ws.{workspace}``
(see ``realtime/subjects.py``), and its checkpoint row ``realtime`` in ``projection_checkpoints``.

Like a projection it is active in one process at a time (``infra/leader.py``'s advisory lock,
under the name ``realtime``, so ``hubbub projections status`` shows its lag and leader).
Unlike one, its effect is not in PostgreSQL, so it is at-least-once: batches are published, NATS
confirms them (flush), and only then is the checkpoint moved past them; a leader that dies in
between has them published again by the next one, and gateways drop what they delivered already
(by position). The flush and the checkpoint are a task of their own, every ``CHECKPOINT_EVERY_S``
at most, not a step of every batch: at 200 posts/s a batch is one post, and two round trips
after each held up the next one's frames.

A batch is published only once every read model has passed its last position, so a client that
gets an event can fetch what it names, and the message objects in the frames come from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import psycopg
import structlog
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from domain.events import RecordedEvent
from infra.aio import cancel_and_wait
from infra.eventstore.port import EventStore
from infra.leader import Backoff, lead
from projections import checkpoints
from projections.consistency import CheckpointWatcher
from realtime.frames import route, shape
from realtime.notifications import ask_pushed, notification_envelopes, pushed

log = structlog.get_logger(__name__)

NAME = "realtime"
READ_MODEL_WAIT_S = 5.0
CHECKPOINT_EVERY_S = 0.2
"""How often, at most, the published position is confirmed by NATS and saved: a new leader
publishes up to this much again."""


class Publisher:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        conninfo: str,
        store: EventStore,
        nats: NATS,
        watcher: CheckpointWatcher,
        read_models: Sequence[str],
        batch_size: int = 500,
        lock_retry_s: float = 1.0,
    ) -> None:
        self.pool, self.conninfo, self.store, self.nats = pool, conninfo, store, nats
        self.watcher, self.read_models = watcher, tuple(read_models)
        self.batch_size, self.lock_retry_s = batch_size, lock_retry_s
        self.leading = False
        self.position: int | None = None
        """The checkpoint: published and confirmed by NATS."""
        self.published: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="realtime-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    # A checkpoint lost in a crash only means its batch is published again, which
                    # gateways drop: the next batch need not wait for this one's fsync.
                    await conn.execute("SET synchronous_commit = off")
                    await self._lead(conn)
                    await self._follow(conn, backoff)
            except Exception as exc:  # noqa: BLE001 - connection, NATS or read model trouble: start over from the checkpoint
                delay = backoff.next()
                log.warning("realtime.publisher_failed", error=repr(exc), position=self.position, retry_in_s=delay)
                await asyncio.sleep(delay)
            finally:
                self.leading = False

    async def _lead(self, conn: psycopg.AsyncConnection) -> None:
        await lead(conn, NAME, self.lock_retry_s)
        self.leading = True
        log.info("realtime.publisher_leading")

    async def _follow(self, conn: psycopg.AsyncConnection, backoff: Backoff) -> None:
        position = self.position = await self._checkpoint(conn)
        log.info("realtime.publisher_following", position=position)
        published = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:  # either failing ends both: start over from the checkpoint
            saver = tasks.create_task(self._save(conn, published), name="realtime-checkpoint")
            async with contextlib.aclosing(self.store.subscribe(after=position, batch_size=self.batch_size)) as batches:  # type: ignore[type-var]
                async for batch in batches:
                    await self._publish(batch)
                    self.published = batch[-1].position
                    published.set()
                    backoff.reset()
            saver.cancel()

    async def _save(self, conn: psycopg.AsyncConnection, published: asyncio.Event) -> None:
        """Move the checkpoint to what NATS has confirmed, whenever something was published, at
        most every ``CHECKPOINT_EVERY_S``. On the leader's connection: it holds the lock."""
        while True:
            await published.wait()
            published.clear()
            position = self.published
            await self.nats.flush(timeout=5)  # everything published before it is on the server
            await checkpoints.move(conn, NAME, position)
            self.position = position
            await asyncio.sleep(CHECKPOINT_EVERY_S)

    async def _checkpoint(self, conn: psycopg.AsyncConnection) -> int:
        # First run: start at the head. Nobody can be waiting for older events live (a client
        # resumes them from the log), and replaying all history to NATS would help nobody.
        position = await checkpoints.position_of(conn, NAME)
        if position is not None:
            return position
        await checkpoints.start_at(conn, NAME, await self.store.head())
        return await self._checkpoint(conn)

    async def _publish(self, batch: Sequence[RecordedEvent]) -> None:
        routed = [(event, where) for event in batch if (where := route(event)) is not None]
        if not routed:
            return
        last = batch[-1].position
        while not await self.watcher.wait(self.read_models, last, READ_MODEL_WAIT_S):
            log.warning("realtime.read_models_behind", position=last, waited_s=READ_MODEL_WAIT_S)
        async with self.pool.connection() as conn, conn.pipeline():  # every lookup of the batch: one round trip
            asked = await ask_pushed(conn, routed, None)
            shaped = await shape(conn, routed)
            personal = notification_envelopes(shaped, await pushed(asked))
        for item in shaped:
            # A notified person's envelope first: their sockets keep it and drop the channel's.
            for envelope in [*personal.get(item.position, ()), *item.envelopes()]:
                await self.nats.publish(envelope.subject, envelope.payload(), headers=envelope.headers())
        log.debug("realtime.published", position=last, events=len(shaped))
