"""Cold loads of a big workspace and its #general, from the log and from snapshots:
``python -m bench.coldload [--quick]``.

A process that has not loaded a stream yet (after a start, a deploy, or on another worker) folds
it before its first command on it: a workspace of N members is 2N events (invite, join), its
``#general`` N joins. Both are loaded together, as accepting an invite loads them. In one run,
on the same streams in one fresh database (embedded durable PostgreSQL, or
``HUBBUB_DATABASE_URL``), alternating rounds of: A, a shell with no snapshots (the whole log);
B, a shell with snapshots (``commands/snapshots.py``), the snapshot half an interval behind the
head (``EVERY / 2`` events to fold after it, the middle case). Each round is a new shell, so its
cache is cold, as in a new process. Reports each side's median wall and CPU time per load and B
against A. Table on stdout, progress on stderr, ``bench/results/coldload.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
import uuid

from bench._common import (
    durable_server,
    finish,
    fresh_database,
    logs_to_stderr,
    machine_facts,
    markdown_table,
    progress,
)
from commands import snapshots as snap
from commands.shell import CommandShell
from domain import channel as ch
from domain import workspace as ws
from domain.events import NewEvent
from infra.db import open_pool
from infra.eventstore.postgres import PostgresEventStore
from infra.migrations import migrate

FULL, QUICK = (10_000, 50_000), (2_000, 10_000)
ROUNDS = 5
PER_CALL = 500


async def build(store: PostgresEventStore, members: int) -> tuple[str, str]:
    """A workspace and its #general with ``members`` members who joined by invite."""
    workspace_id, channel_id = str(uuid.uuid4()), str(uuid.uuid4())
    wstream, cstream = ws.workspace_stream(workspace_id), ch.channel_stream(channel_id)
    created = ws.WorkspaceCreated(workspace_id=workspace_id, name="big", owner_id="u0", general_channel_id=channel_id)
    general = ch.ChannelCreated(
        channel_id=channel_id,
        workspace_id=workspace_id,
        name="general",
        kind="channel",
        private=False,
        topic="",
        created_by="u0",
        general=True,
    )
    await store.append(wstream, [NewEvent(event=created, event_id=uuid.uuid4())])
    await store.append(cstream, [NewEvent(event=general, event_id=uuid.uuid4())])
    for start in range(0, members, PER_CALL):
        await join_by_invite(store, (wstream, cstream), range(start, min(members, start + PER_CALL)))
    return wstream, cstream


async def join_by_invite(store: PostgresEventStore, streams: tuple[str, str], people: range) -> None:
    """An invite and its accept in the workspace, and a join of #general, for each of ``people``."""
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
    await store.append(
        streams[0],
        [
            NewEvent(event=e, event_id=uuid.uuid4())
            for i in people
            for e in (
                ws.InviteCreated(code_hash=f"h{i}", role="member", expires_at=expires, created_by="u0"),
                ws.MemberJoined(user_id=f"u{i}", role="member", via="invite", code_hash=f"h{i}"),
            )
        ],
    )
    await store.append(
        streams[1], [NewEvent(event=ch.ChannelMemberJoined(user_id=f"u{i}"), event_id=uuid.uuid4()) for i in people]
    )


async def timed_load(shell: CommandShell, streams: tuple[str, str], members: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    workspace, channel = await shell.load_many([(ws.WORKSPACE, streams[0]), (ch.CHANNEL, streams[1])])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(workspace.state.members) == len(channel.state.members) == members
    return wall * 1000, cpu * 1000


async def measure(url: str, members: int) -> dict:
    pool = await open_pool(url)
    store = PostgresEventStore(pool, url)
    snapshots = snap.PostgresSnapshots(pool)
    try:
        progress(f"{members:,} members: appending {3 * members:,} events")
        streams = await build(store, members)
        # Snapshots at the head, then EVERY / 4 more people join (EVERY / 2 workspace events, EVERY / 4
        # channel ones): a snapshot half its interval behind, the middle of what a cold load finds.
        writer = CommandShell(store, snapshots=snapshots, snapshot_every=1)
        await writer.load_many([(ws.WORKSPACE, streams[0]), (ch.CHANNEL, streams[1])])
        await writer.drain_snapshots()
        joiners = range(members, members + snap.EVERY // 4)
        await join_by_invite(store, streams, joiners)
        total = members + len(joiners)
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT sum(length(body)) FROM aggregate_snapshots WHERE stream_id = ANY(%s)", (list(streams),)
            )
            size = (await cur.fetchone())[0]
        sides: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
        for round_ in range(ROUNDS):
            order = ("A", "B") if round_ % 2 == 0 else ("B", "A")
            for side in order:
                # snapshot_every beyond reach: B reads snapshots but writes none, so every round finds the same one.
                shell = (
                    CommandShell(store)
                    if side == "A"
                    else CommandShell(store, snapshots=snapshots, snapshot_every=10**9)
                )
                sides[side].append(await timed_load(shell, streams, total))
        out = {
            "members": members,
            "events": {"workspace": 1 + 2 * total, "channel": 1 + total},
            "snapshot_bytes": size,
            "tail_events": {"workspace": 2 * len(joiners), "channel": len(joiners)},
            "rounds": sides,
        }
        for side in ("A", "B"):
            out[side] = {
                "wall_ms": statistics.median(w for w, _ in sides[side]),
                "cpu_ms": statistics.median(c for _, c in sides[side]),
            }
        out["b_wins"] = sum(b[0] < a[0] for a, b in zip(sides["A"], sides["B"], strict=True))
        progress(
            f"  A (the log) {out['A']['wall_ms']:.0f} ms, B (snapshots + {3 * len(joiners)} events) "
            f"{out['B']['wall_ms']:.1f} ms"
        )
        return out
    finally:
        await store.close()
        await pool.close()


def report(results: dict) -> str:
    rows = []
    for r in results["sizes"]:
        a, b = r["A"], r["B"]
        rows.append(
            [
                f"{r['members']:,}",
                f"{a['wall_ms']:.0f} / {a['cpu_ms']:.0f} ms",
                f"{b['wall_ms']:.1f} / {b['cpu_ms']:.1f} ms",
                f"{b['wall_ms'] / a['wall_ms']:.3f}",
                f"{r['b_wins']} of {ROUNDS}",
                f"{r['snapshot_bytes'] / 1024:,.0f} KiB",
            ]
        )
    table = markdown_table(
        [
            "members (workspace + #general)",
            "A: from the log, wall / CPU (median)",
            "B: snapshots + the events after them, wall / CPU",
            "B / A (wall)",
            "rounds B was faster",
            "snapshots' size",
        ],
        rows,
    )
    m = results["machine"]
    return (
        f"{table}\n\n- Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
        f"load average at start {m['loadavg_1m']}. PostgreSQL: {results['database']}. {ROUNDS} alternating rounds per size; "
        f"each load is a new shell (a cold cache), the workspace and #general read in one call; B's "
        f"snapshots are {snap.EVERY // 4:,} joins behind (as many workspace events as half the snapshot interval)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldload", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK[0]:,} and {QUICK[1]:,} members")
    args = parser.parse_args(argv)
    logs_to_stderr()
    began = time.monotonic()
    results: dict = {"machine": machine_facts(), "sizes": []}
    with durable_server() as (admin_url, how), fresh_database(admin_url) as url:
        results["database"] = how
        asyncio.run(migrate(url))
        for members in QUICK if args.quick else FULL:
            results["sizes"].append(asyncio.run(measure(url, members)))
    return finish("coldload", args.quick, results, report(results), began)


if __name__ == "__main__":
    sys.exit(main())
