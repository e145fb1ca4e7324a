"""Fill the event log with real message events, as the command side writes them (one
``message-{id}`` stream per message: ``message.posted`` then its ``reaction.added``), through
``PostgresEventStore.append_many``; the server's projectors then build the read models from the
log, as a rebuild would. Nothing is inserted into read-model tables here."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from bench._common import progress
from domain.events import EventMeta, NewEvent
from domain.message import MessagePosted, ReactionAdded, message_stream
from infra.db import open_pool
from infra.eventstore.port import NO_STREAM, StreamAppend
from infra.eventstore.postgres import PostgresEventStore
from infra.ids import new_id

TAIL = 200
EMOJI = (":thumbsup:", ":tada:", ":eyes:", ":heart:", ":rocket:", ":joy:")
WORDS = (
    "deploy",
    "review",
    "lunch",
    "ticket",
    "merge",
    "standup",
    "latency",
    "release",
    "coffee",
    "build",
    "rollback",
    "schema",
    "index",
    "queue",
    "cache",
    "retro",
)


@dataclass(frozen=True)
class Shape:
    """How the filled messages look: the share in the history channel, and there how many are
    thread roots (with 1-4 replies) and how many carry 1-3 reactions."""

    history_share: float = 0.5
    thread_root_share: float = 0.10
    reaction_share: float = 0.30
    other_reaction_share: float = 0.05


@dataclass
class Counts:
    messages: int = 0
    replies: int = 0
    roots: int = 0
    reactions: int = 0
    events: int = 0


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))


class Generator:
    def __init__(
        self, workspace_id: str, history: str, others: list[str], authors: list[str], shape: Shape, seed: int = 7
    ) -> None:
        self.ws, self.history, self.others, self.authors, self.shape = workspace_id, history, others, authors, shape
        self.rng = random.Random(seed)
        self.counts = Counts()
        self.now = dt.datetime.now(dt.UTC)

    def _message(self, channel: str, reactions: float, root: str | None = None) -> tuple[str, StreamAppend]:
        rng, author = self.rng, self.rng.choice(self.authors)
        message_id = new_id()
        meta = EventMeta(actor_id=author, occurred_at=self.now)
        events = [
            NewEvent(
                event=MessagePosted(
                    message_id=message_id,
                    channel_id=channel,
                    workspace_id=self.ws,
                    author_id=author,
                    text=_text(rng),
                    thread_root_id=root,
                ),
                event_id=uuid.uuid4(),
                meta=meta,
            )
        ]
        if rng.random() < reactions:
            users = rng.sample(self.authors, rng.randint(1, 3))
            for user in users:
                emoji = rng.choice(EMOJI)
                events.append(
                    NewEvent(
                        event=ReactionAdded(message_id=message_id, channel_id=channel, user_id=user, emoji=emoji),
                        event_id=uuid.uuid4(),
                        meta=EventMeta(actor_id=user, occurred_at=self.now),
                    )
                )
            self.counts.reactions += len(users)
        self.counts.messages += 1
        self.counts.events += len(events)
        return message_id, StreamAppend(message_stream(message_id), events, NO_STREAM)

    def chunk(self, channel: str, messages: int) -> list[StreamAppend]:
        """About ``messages`` messages for ``channel``; each thread root comes before its replies."""
        in_history = channel == self.history
        reactions = self.shape.reaction_share if in_history else self.shape.other_reaction_share
        out: list[StreamAppend] = []
        while len(out) < messages:
            root_id, append = self._message(channel, reactions)
            out.append(append)
            if in_history and self.rng.random() < self.shape.thread_root_share:
                self.counts.roots += 1
                for _ in range(self.rng.randint(1, 4)):
                    out.append(self._message(channel, reactions / 2, root=root_id)[1])
                    self.counts.replies += 1
        return out

    def chunks(self, total: int, size: int) -> Iterator[list[StreamAppend]]:
        history_total = int(total * self.shape.history_share)
        made_history = made_other = 0
        other_total = total - history_total
        turn = 0
        while made_history < history_total or made_other < other_total:
            turn += 1
            # Interleaved, so the history channel's newest page is not written last by itself.
            if made_history < history_total and (turn % 2 == 0 or made_other >= other_total):
                chunk = self.chunk(self.history, min(size, history_total - made_history))
                made_history += len(chunk)
            else:
                channel = self.others[turn % len(self.others)]
                chunk = self.chunk(channel, min(size, other_total - made_other))
                made_other += len(chunk)
            yield chunk


async def fill(url: str, gen: Generator, total: int, *, chunk: int = 200, writers: int = 8) -> dict:
    """Append ``total`` messages (with reactions) in chunks of ``chunk`` streams per append_many."""
    pool = await open_pool(url, 1, 4)
    store = PostgresEventStore(pool, url)
    chunks = gen.chunks(total, chunk)
    began, last_note = time.monotonic(), time.monotonic()

    async def writer() -> None:
        nonlocal last_note
        for appends in chunks:  # one shared generator: each chunk goes to exactly one writer
            await store.append_many(appends)
            if time.monotonic() - last_note > 5:
                last_note = time.monotonic()
                progress(f"  appended {gen.counts.messages:,} messages, {gen.counts.events:,} events")

    try:
        await asyncio.gather(*(writer() for _ in range(writers)))
        # The history channel's newest messages last, from one writer, so the page the benchmark
        # reads has the generator's mix of threads and reactions whatever order the writers ended in.
        await store.append_many(gen.chunk(gen.history, TAIL))
    finally:
        await store.close()
        await pool.close()
    seconds = time.monotonic() - began
    return {**gen.counts.__dict__, "seconds": round(seconds, 2), "events_per_s": gen.counts.events / seconds}


def head_and_checkpoints(url: str) -> tuple[int, dict[str, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        head = int(conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])
        rows = conn.execute("SELECT name, position FROM projection_checkpoints").fetchall()
    return head, {name: int(pos) for name, pos in rows}
