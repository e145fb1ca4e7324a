"""Search benchmark (issue 6): ``python -m bench.search [--quick] [--messages N]``.

What it does, in a fresh database on a durable PostgreSQL (``HUBBUB_DATABASE_URL``, else an
embedded one of its own):

1. Who sees what: one workspace, 1,000 channels (100 public, 900 private); the searcher belongs
   to 100 of the private ones, so sees 200 channels (a fifth of all messages). These rows are
   loaded straight into the ``workspaces`` read model's tables: they are what the query reads,
   not what is measured.
2. Messages: N (default 1,000,000) real ``message.posted`` events appended to the log in bulk (one
   ``message-{id}`` stream each, as posting writes them), texts of 4-20 words drawn from a
   30,000-word vocabulary with a Zipf distribution, times spread over a year. Then the production
   ``messages`` and ``search`` projections index them from the log through the projector runtime,
   exactly as a live server or a rebuild would (events/s reported).
3. Query latency: a two-word query (words drawn from four frequency bands, so some match
   thousands of messages and some a handful) for the searcher, newest first, one page of 50,
   through ``readapi.search.search_workspace``: membership check, visible channels, the index
   query, highlights and the message objects: everything the route does but HTTP and the token
   check. Sequential, one connection, after a warm-up; p50/p95/p99.
4. Index lag: with the runner live, 500 posts/s (one ``message.posted`` per append, as a post
   appends it) for a while; lag = from the append being acknowledged to the ``search`` checkpoint
   passing it (its row commits with the checkpoint, so that is when it can be found), seen
   through the checkpoints' NOTIFY; a sample is also searched for to check it is found.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator

import psycopg
import structlog

from bench._common import (
    RESULTS_DIR,
    durable_server,
    fresh_database,
    logs_to_stderr,
    machine_facts,
    markdown_table,
    percentile,
    progress,
    rate,
    server_facts,
)
from domain.events import EventMeta, NewEvent
from domain.message import MessagePosted, message_stream
from domain.searchquery import parse
from infra.db import open_pool
from infra.eventstore.port import NO_STREAM, StreamAppend
from infra.eventstore.postgres import PostgresEventStore
from infra.ids import new_id
from infra.migrations import migrate
from infra.search.postgres import PostgresSearchIndex
from projections.messages import Messages
from projections.registry import all_projections
from projections.runtime import ProjectorRunner
from projections.search import Search
from readapi.search import search_workspace

CHANNELS, PUBLIC, JOINED_PRIVATE, AUTHORS, VOCABULARY = 1000, 100, 100, 50, 30_000
BANDS = ((5, 50), (50, 500), (500, 5000), (5000, 30_000))
SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["qu" + v for v in "aei"]


class World:
    def __init__(self, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.ws, self.searcher = new_id(), new_id()
        self.authors = [new_id() for _ in range(AUTHORS)]
        self.channels = [new_id() for _ in range(CHANNELS)]
        self.visible = self.channels[: PUBLIC + JOINED_PRIVATE]
        words: dict[str, None] = {}
        while len(words) < VOCABULARY:
            words["".join(self.rng.choice(SYLLABLES) for _ in range(self.rng.randint(2, 4)))] = None
        self.words = list(words)  # by rank: the first is the most frequent
        weights = [1 / (rank**1.07) for rank in range(1, VOCABULARY + 1)]
        self.cum = _cumulative(weights)

    def text(self) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.cum, k=self.rng.randint(4, 20)))

    def query(self) -> str:
        low, high = self.rng.choice(BANDS)
        return " ".join(self.words[self.rng.randrange(low, high)] for _ in range(2))


def _cumulative(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


async def load_visibility(url: str, world: World) -> None:
    now = dt.datetime.now(dt.UTC)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for projection in all_projections():  # empty tables for what the query joins but this does not fill
            await conn.execute(projection.schema())
        await conn.execute("INSERT INTO workspaces VALUES (%s, 'Bench', %s, %s)", (world.ws, world.searcher, now))
        people = [(world.ws, u, "member", now) for u in [world.searcher, *world.authors]]
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO workspace_members VALUES (%s, %s, %s, %s)", people)
            await cur.executemany(
                "INSERT INTO channels (channel_id, workspace_id, name, kind, private, topic, created_by, created_at)"
                " VALUES (%s, %s, %s, 'channel', %s, '', %s, %s)",
                [(c, world.ws, f"ch-{i}", i >= PUBLIC, world.searcher, now) for i, c in enumerate(world.channels)],
            )
            await cur.executemany(
                "INSERT INTO channel_members (channel_id, user_id, joined_at) VALUES (%s, %s, %s)",
                [(c, world.searcher, now) for c in world.channels[PUBLIC : PUBLIC + JOINED_PRIVATE]],
            )


def posts(world: World, total: int, chunk: int) -> Iterator[list[StreamAppend]]:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=365)
    step = dt.timedelta(days=365) / max(total, 1)
    made = 0
    while made < total:
        out = []
        for _ in range(min(chunk, total - made)):
            out.append(post(world, world.rng.choice(world.channels), world.text(), start + step * made))
            made += 1
        yield out


def post(world: World, channel: str, text: str, at: dt.datetime) -> StreamAppend:
    message_id, author = new_id(), world.rng.choice(world.authors)
    event = MessagePosted(message_id=message_id, channel_id=channel, workspace_id=world.ws, author_id=author, text=text)
    return StreamAppend(
        message_stream(message_id),
        [NewEvent(event=event, event_id=uuid.uuid4(), meta=EventMeta(actor_id=author, occurred_at=at))],
        NO_STREAM,
    )


async def fill(store: PostgresEventStore, world: World, total: int, writers: int = 4) -> float:
    chunks, began, done = posts(world, total, 500), time.monotonic(), 0

    async def writer() -> None:
        nonlocal done
        for appends in chunks:
            await store.append_many(appends)
            done += len(appends)
            if done % 100_000 < 500:
                progress(f"  appended {done:,} posts")

    await asyncio.gather(*(writer() for _ in range(writers)))
    return time.monotonic() - began


async def catch_up(runner: ProjectorRunner, store: PostgresEventStore) -> float:
    head, began, noted = await store.head(), time.monotonic(), time.monotonic()
    while True:
        positions = await runner.positions()
        if min(positions.get(n, 0) for n in ("messages", "search")) >= head:
            return time.monotonic() - began
        if time.monotonic() - noted > 15:
            noted = time.monotonic()
            progress(f"  indexing: {positions.get('search', 0):,} of {head:,} positions")
        await asyncio.sleep(0.2)


async def query_latency(pool, world: World, queries: int, sort: str = "newest") -> dict:
    index, timings, counts = PostgresSearchIndex(), [], []
    for i in range(queries + 20):
        parsed = parse(world.query())
        async with pool.connection() as conn:
            began = time.perf_counter()
            page = await search_workspace(conn, index, world.ws, world.searcher, parsed, sort, 50, None)  # type: ignore[arg-type]
            elapsed = (time.perf_counter() - began) * 1000
        if i >= 20:  # warm-up first
            timings.append(elapsed)
            counts.append(len(page.items))
    timings.sort()
    return {
        "queries": queries,
        "p50_ms": round(percentile(timings, 50), 1),
        "p95_ms": round(percentile(timings, 95), 1),
        "p99_ms": round(percentile(timings, 99), 1),
        "max_ms": round(timings[-1], 1),
        "full_pages": sum(c == 50 for c in counts),
        "empty": sum(c == 0 for c in counts),
    }


async def index_lag(url: str, pool, store: PostgresEventStore, world: World, per_s: int, seconds: float) -> dict:
    acked: dict[int, float] = {}
    lags: list[float] = []
    seen = 0  # the search checkpoint, as last notified
    tokens: dict[int, str] = {}
    done = asyncio.Event()

    async def watch() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("LISTEN hubbub_checkpoints")
            listening.set()
            async for note in conn.notifies():
                name, _, position = note.payload.rpartition(" ")
                if name != "search":
                    continue
                nonlocal seen
                seen, now = max(seen, int(position)), time.monotonic()
                for p in [p for p in acked if p <= int(position)]:
                    lags.append((now - acked.pop(p)) * 1000)
                if done.is_set() and not acked:
                    return

    async def one(i: int) -> None:
        token = f"lagtoken{i}"
        append = post(world, world.rng.choice(world.visible), f"{world.text()} {token}", dt.datetime.now(dt.UTC))
        result = (await store.append_many([append]))[0]
        if result.position <= seen:  # searchable before its append was acknowledged
            lags.append(0.0)
        else:
            acked[result.position] = time.monotonic()
        if i % 100 == 0:
            tokens[result.position] = token

    listening = asyncio.Event()
    watcher = asyncio.create_task(watch())
    await listening.wait()
    began, tasks = time.monotonic(), []
    for i in range(int(per_s * seconds)):
        await asyncio.sleep(max(0.0, began + i / per_s - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    offered = len(tasks) / (time.monotonic() - began)
    done.set()
    await asyncio.wait_for(watcher, timeout=30)
    found = 0
    for token in tokens.values():
        async with pool.connection() as conn:
            page = await search_workspace(
                conn, PostgresSearchIndex(), world.ws, world.searcher, parse(token), "newest", 5, None
            )
        found += len(page.items) == 1
    lags.sort()
    return {
        "posts": len(tasks),
        "offered_per_s": round(offered),
        "p50_ms": round(percentile(lags, 50), 1),
        "p99_ms": round(percentile(lags, 99), 1),
        "max_ms": round(lags[-1], 1),
        "sampled_found": f"{found}/{len(tokens)}",
    }


async def sizes(url: str) -> dict:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("ANALYZE search_messages")
        cur = await conn.execute("""SELECT count(*), pg_size_pretty(pg_table_size('search_messages')),
                                           pg_size_pretty(pg_relation_size('search_messages_tsv_idx'))
                                    FROM search_messages""")
        rows, table, gin = await cur.fetchone()
    return {"rows": rows, "table": table, "gin_index": gin}


async def run(args: argparse.Namespace) -> dict:
    world = World()
    with durable_server() as (admin, how), fresh_database(admin) as url:
        progress(f"PostgreSQL: {how}")
        await migrate(url)
        await load_visibility(url, world)
        pool = await open_pool(url, 2, 8)
        store = PostgresEventStore(pool, url)
        try:
            progress(f"appending {args.messages:,} posts")
            fill_s = await fill(store, world, args.messages)
            runner = ProjectorRunner(pool=pool, conninfo=url, store=store, projections=[Messages(), Search()])
            await runner.start()
            try:
                progress("indexing from the log (messages + search projections)")
                index_s = await catch_up(runner, store)
                table = await sizes(url)
                progress(f"querying ({args.queries} two-word queries, newest first, then by relevance)")
                newest = await query_latency(pool, world, args.queries)
                relevance = await query_latency(pool, world, args.queries // 2, "relevance")
                progress(f"index lag at {args.rate} posts/s for {args.lag_s:.0f} s")
                lag = await index_lag(url, pool, store, world, args.rate, args.lag_s)
            finally:
                await runner.stop()
            facts = server_facts(url)
        finally:
            await store.close()
            await pool.close()
    return {
        "messages": args.messages,
        "fill_s": round(fill_s, 1),
        "fill_posts_per_s": round(args.messages / fill_s),
        "index_s": round(index_s, 1),
        "indexed_events_per_s": round(args.messages / index_s),
        "table": table,
        "query_newest": newest,
        "query_relevance": relevance,
        "lag": lag,
        "server": facts,
        "machine": machine_facts(),
        "postgres": how,
    }


def report(r: dict) -> str:
    q, rel, lag = r["query_newest"], r["query_relevance"], r["lag"]
    rows = [
        [
            f"two-word query, user in 200 of 1,000 channels, {r['messages']:,} messages, newest first: p50 / p95 / p99",
            f"{q['p50_ms']} / {q['p95_ms']} / {q['p99_ms']} ms",
            "p95 < 100 ms",
            _verdict(q["p95_ms"] < 100),
        ],
        [
            "the same, sort=relevance: p50 / p95 / p99",
            f"{rel['p50_ms']} / {rel['p95_ms']} / {rel['p99_ms']} ms",
            "",
            "",
        ],
        [
            f"index lag, post appended -> searchable, at {lag['offered_per_s']} posts/s: p50 / p99 (max)",
            f"{lag['p50_ms']} / {lag['p99_ms']} ms ({lag['max_ms']})",
            "p99 < 1 s",
            _verdict(lag["p99_ms"] < 1000),
        ],
        ["indexing from the log (messages + search projections)", f"{rate(r['indexed_events_per_s'])} posts/s", "", ""],
    ]
    extra = (
        f"{r['table']['rows']:,} rows, table {r['table']['table']}, GIN index {r['table']['gin_index']}; "
        f"{q['full_pages']} of {q['queries']} queries filled a page of 50, {q['empty']} found nothing; "
        f"lag samples searched and found: {lag['sampled_found']}"
    )
    return markdown_table(["what (issue 6 target)", "measured", "target", ""], rows) + "\n\n" + extra


def _verdict(ok: bool) -> str:
    return "passes" if ok else "**fails**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 messages, fewer queries, 10 s of lag")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--queries", type=int)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--lag-s", type=float)
    args = parser.parse_args()
    args.messages = args.messages or (100_000 if args.quick else 1_000_000)
    args.queries = args.queries or (100 if args.quick else 400)
    args.lag_s = args.lag_s or (10.0 if args.quick else 30.0)
    logs_to_stderr()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    result = asyncio.run(run(args))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"search{'-quick' if args.quick else ''}.json").write_text(json.dumps(result, indent=2, default=str))
    print(report(result))
    m = result["machine"]
    print(
        f"\n{m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, PostgreSQL "
        f"{result['server']['server_version']}; load average at the end {m['loadavg_1m']}"
    )


if __name__ == "__main__":
    main()
