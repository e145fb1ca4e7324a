"""Posting and reading over HTTP: ``python -m bench.post [--quick]``.

Measures, in one run, against a real ``hubbub serve --workers 2`` process, the targets of
issue 3 ("Performance"):

1. accepted posts/s, 32 clients (each its own user and token) into ONE channel, closed loop;
2. accept latency at 500 posts/s offered, open loop (paced), p50 / p99;
3. a channel history page (50 messages, reactions and thread summaries on many of them) with
   1,000,000 messages in the database (``--quick``: 100,000);
4. the channel list with unread counts of a user in 500 channels.

Services: durable embedded PostgreSQL (fsync on, checked), NATS and Redis in a temp dir. The
server gets ``HUBBUB_RATE_POST_PER_S`` / ``_BURST`` raised to 1,000,000 (the default 5/s per user
would cap phase 1 at 160 posts/s: this measures the server, not the limiter; the limiter's Redis
call still runs on every post) and ``HUBBUB_INSECURE_FAST_PASSWORDS=true`` (set-up registers 33
people). Users, the workspace and 500 channels are made through the HTTP API. The 1M messages
are appended to the event log as real ``message.posted`` / ``reaction.added`` events (one
``message-{id}`` stream each, ``append_many``), and the server's own projectors build the read
models from the log; how long they take to catch up is reported too.

Load generators: ``wrk`` (Debian package, C) with a Lua script that gives each wrk thread its own
users and rotates their tokens, for the closed-loop phases; a paced open-loop poster in a process of
its own for phase 2 (raw keep-alive HTTP/1.1 on uvloop, requests rendered before the clock starts),
since wrk cannot pace; phase 2 starts once the projectors have applied phase 1's backlog. Their CPU is reported next to the
server's, PostgreSQL's, NATS's and Redis's. Table on stdout, progress on stderr,
``bench/results/post.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench._common import (
    CpuMeter,
    finish,
    logs_to_stderr,
    machine_facts,
    markdown_table,
    progress,
    rate,
    require_durable,
    server_facts,
)
from bench._fill import Generator, Shape, fill, head_and_checkpoints
from bench._load import run_paced_posts, run_wrk, wrk_available
from bench._server import ComponentCpu, Server, running_server
from bench._setup import World, build, owner_channel_count

# Two cores: one uvicorn worker per core. PostgreSQL, NATS, Redis and the load generator share
# those cores, so more Python workers only add context switches and connections (each worker
# also runs its own projector tasks and pool); fewer leaves a core idle while a worker waits.
WORKERS = 2
POSTERS = 32
CHANNELS = 500
SERVER_SETTINGS = {
    "HUBBUB_INSECURE_FAST_PASSWORDS": "true",
    "HUBBUB_RATE_POST_PER_S": "1000000",
    "HUBBUB_RATE_POST_BURST": "1000000",
}
TARGETS = {"posts_per_s": 2000, "accept_p99_ms": 50, "history_p99_ms": 20, "channels_p99_ms": 30}


@dataclass(frozen=True)
class Plan:
    post_s: float
    warmup_s: float
    paced_s: float
    paced_rate: int
    messages: int
    catch_up_timeout_s: float
    read_s: float
    read_connections: int
    cutoff_s: float
    """Phase 2 cancels what is unanswered this long after the last post was due (an overloaded server)."""
    read_warmup_s: float


FULL = Plan(
    post_s=20,
    warmup_s=3,
    paced_s=15,
    paced_rate=500,
    messages=1_000_000,
    catch_up_timeout_s=900,
    read_s=10,
    read_connections=4,
    cutoff_s=20,
    read_warmup_s=2,
)
QUICK = Plan(
    post_s=5,
    warmup_s=2,
    paced_s=5,
    paced_rate=500,
    messages=100_000,
    catch_up_timeout_s=40,
    read_s=3,
    read_connections=4,
    cutoff_s=5,
    read_warmup_s=1,
)


def measured(srv: Server, phase):
    """Run ``phase`` with machine and per-component CPU recorded around it."""
    comp, machine = ComponentCpu(srv.pids), CpuMeter()
    comp.start()
    machine.start()
    out = phase()
    return out | {"machine_cpu_pct": machine.stop(), "component_cpu_pct_of_one_core": comp.stop()}


def phase_posts(srv: Server, world: World, plan: Plan, workdir: Path) -> dict:
    path = f"/api/v1/channels/{world.history_id}/messages"
    body = '{"text":"hello from wrk, closed loop"}'

    def go(seconds: float) -> dict:
        return run_wrk(
            srv.base_url,
            workdir,
            world.poster_tokens,
            method="POST",
            path=path,
            body=body,
            expected=201,
            connections=POSTERS,
            threads=2,
            seconds=seconds,
        )

    progress(f"phase 1: warm-up, {plan.warmup_s:.0f}s")
    go(plan.warmup_s)
    progress(
        f"phase 1: {POSTERS} clients posting into one channel, closed loop, {plan.post_s:.0f}s (wrk -t2 -c{POSTERS})"
    )
    out = measured(srv, lambda: go(plan.post_s))
    progress(
        f"  {rate(out['ok_per_s'])} accepted posts/s, p50 {out['latency_ms']['p50']:.1f} ms, "
        f"p99 {out['latency_ms']['p99']:.1f} ms; CPU {out['component_cpu_pct_of_one_core']}, "
        f"wrk {out['generator_cpu_pct_of_one_core']}%"
    )
    return out


def catch_up(srv: Server, timeout_s: float) -> float | None:
    """Seconds until every projection has reached the log's head (None: not within ``timeout_s``).
    Phase 1 offers more than the projectors apply, so they finish its backlog after it; phase 2
    measures a steady 500 posts/s, not that backlog."""
    began = time.monotonic()
    head, _ = head_and_checkpoints(srv.database_url)
    while time.monotonic() - began < timeout_s:
        _, cps = head_and_checkpoints(srv.database_url)
        if cps and min(cps.values()) >= head:
            return round(time.monotonic() - began, 2)
        time.sleep(0.2)
    return None


def phase_paced(srv: Server, world: World, plan: Plan) -> dict:
    waited = catch_up(srv, plan.catch_up_timeout_s)
    progress(
        f"phase 2: projections caught up on phase 1 after {waited}s more; {plan.paced_rate} posts/s offered, "
        f"open loop, {plan.paced_s:.0f}s (one generator process)"
    )
    path = f"/api/v1/channels/{world.history_id}/messages"
    out = measured(
        srv,
        lambda: run_paced_posts(
            srv.base_url, path, world.poster_tokens, plan.paced_rate, plan.paced_s, cutoff_s=plan.cutoff_s
        ),
    )
    out["projections_caught_up_before_s"] = waited
    progress(
        f"  p50 {out['latency_ms']['p50']:.1f} ms, p99 {out['latency_ms']['p99']:.1f} ms, statuses "
        f"{out['statuses']}, generator CPU {out['generator_cpu_pct_of_one_core']}%"
    )
    return out


def phase_fill(srv: Server, world: World, plan: Plan) -> dict:
    authors = [world.owner_id, *world.poster_ids]
    gen = Generator(world.workspace_id, world.history_id, world.other_channels, authors, Shape())
    head0, _ = head_and_checkpoints(srv.database_url)
    progress(f"phase 3a: appending {plan.messages:,} messages to the log (append_many, 200 messages per call)")
    timeline: list[tuple[float, int, dict[str, int]]] = []
    stop = threading.Event()
    began = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            head, cps = head_and_checkpoints(srv.database_url)
            timeline.append((time.monotonic() - began, head, cps))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    machine = CpuMeter()
    machine.start()
    comp = ComponentCpu(srv.pids)
    comp.start()
    appended = asyncio.run(fill(srv.database_url, gen, plan.messages))
    fill_end = time.monotonic() - began
    progress(
        f"  {appended['events']:,} events ({appended['messages']:,} messages, {appended['reactions']:,} "
        f"reactions) in {appended['seconds']:.1f}s = {rate(appended['events_per_s'])} events/s; "
        "waiting for the projections"
    )
    head, caught = head_and_checkpoints(srv.database_url)[0], None
    deadline = time.monotonic() + plan.catch_up_timeout_s
    while time.monotonic() < deadline:
        _, cps = head_and_checkpoints(srv.database_url)
        if cps and min(cps.values()) >= head:
            caught = time.monotonic() - began
            break
        time.sleep(0.2)
    stop.set()
    sampler.join()
    machine_cpu, comp_cpu = machine.stop(), comp.stop()
    events = head - head0
    at_fill_end = next((cps for t, _, cps in timeline if t >= fill_end), timeline[-1][2])
    per_projection = {name: _caught_at(timeline, name, head) for name in timeline[-1][2]}
    out = {
        "append": appended,
        "head": head,
        "events_in_log": head,
        "projected_events": events,
        "fill_end_s": round(fill_end, 2),
        "caught_up_s": None if caught is None else round(caught, 2),
        "projection_events_per_s": None if caught is None else events / caught,
        "checkpoints_at_fill_end": at_fill_end,
        "projection_caught_up_s": per_projection,
        "machine_cpu_pct": machine_cpu,
        "component_cpu_pct_of_one_core": comp_cpu,
    }
    if caught is None:
        progress(
            f"  NOT caught up after {plan.catch_up_timeout_s:.0f}s more: {head_and_checkpoints(srv.database_url)[1]} "
            f"vs head {head}"
        )
    else:
        progress(
            f"  projections caught up {caught:.1f}s after the fill began ({rate(out['projection_events_per_s'])} "
            f"events/s); per projection: {per_projection}"
        )
    return out


def _caught_at(timeline: list[tuple[float, int, dict[str, int]]], name: str, head: int) -> float | None:
    return next((round(t, 1) for t, _, cps in timeline if cps.get(name, 0) >= head), None)


def phase_reads(srv: Server, world: World, plan: Plan, workdir: Path, last_seq: int) -> dict:
    hist = f"/api/v1/channels/{world.history_id}/messages?limit=50"
    chans = f"/api/v1/workspaces/{world.workspace_id}/channels"
    c = plan.read_connections

    def get(path: str, tokens: list[str], before_max: int = 0) -> dict:
        return measured(
            srv,
            lambda: run_wrk(
                srv.base_url,
                workdir,
                tokens,
                method="GET",
                path=path,
                expected=200,
                connections=c,
                threads=2,
                seconds=plan.read_s,
                before_max=before_max,
            ),
        )

    out = {}
    for name, path, tokens, before_max in (
        ("history_newest", hist, world.poster_tokens, 0),
        ("history_random_before", hist, world.poster_tokens, last_seq),
        ("channels_limit_200", chans + "?limit=200", [world.owner_token], 0),
        ("channels_default_50", chans, [world.owner_token], 0),
    ):
        run_wrk(
            srv.base_url,
            workdir,
            tokens,
            method="GET",
            path=path,
            expected=200,
            connections=c,
            threads=2,
            seconds=plan.read_warmup_s,
            before_max=before_max,
        )  # warm-up
        progress(f"reads: {name}, {c} connections closed loop, {plan.read_s:.0f}s")
        out[name] = get(path, tokens, before_max)
        r = out[name]
        progress(
            f"  {rate(r['requests_per_s'])} req/s, p50 {r['latency_ms']['p50']:.2f} ms, "
            f"p99 {r['latency_ms']['p99']:.2f} ms, unexpected statuses {r['unexpected_status']}"
        )
    return out


def history_shape(srv: Server, world: World) -> dict:
    """What the newest history page holds, to show the page is the demanding kind."""
    import psycopg

    with psycopg.connect(srv.database_url, autocommit=True) as conn:
        last_seq = conn.execute(
            "SELECT last_seq FROM channel_seqs WHERE channel_id = %s", (world.history_id,)
        ).fetchone()[0]
        row = conn.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE reply_count > 0),
                   count(*) FILTER (WHERE EXISTS (SELECT 1 FROM reactions r WHERE r.message_id = m.message_id))
            FROM (SELECT * FROM messages WHERE channel_id = %s AND thread_root_id IS NULL
                  ORDER BY seq DESC LIMIT 50) m""",
            (world.history_id,),
        ).fetchone()
        total = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        in_channel = conn.execute(
            "SELECT count(*) FROM messages WHERE channel_id = %s", (world.history_id,)
        ).fetchone()[0]
        reactions = conn.execute("SELECT count(*) FROM reactions").fetchone()[0]
        analyzed = conn.execute("""SELECT relname, last_autoanalyze IS NOT NULL OR last_analyze IS NOT NULL
                                   FROM pg_stat_user_tables WHERE relname IN ('messages', 'reactions',
                                   'channel_members', 'channels', 'channel_seqs')""").fetchall()
    return {
        "messages_in_database": total,
        "messages_in_history_channel": in_channel,
        "reactions": reactions,
        "history_last_seq": int(last_seq),
        "newest_page": {"messages": row[0], "with_thread": row[1], "with_reactions": row[2]},
        "analyzed": dict(analyzed),
    }


def explain(srv: Server, world: World) -> dict:
    """EXPLAIN ANALYZE of the two read queries as the routes send them (their SQL, imported)."""
    import psycopg

    from readapi import channels as rc
    from readapi import messages as rm

    queries = {
        "history_newest": (rm._NEWEST, {"channel": world.history_id, "after": 0, "before": rm._NO_END, "limit": 51}),
        "channels_limit_200": (
            rc._LIST,
            {"workspace_id": world.workspace_id, "user_id": world.owner_id, "after": "", "limit": 200},
        ),
    }
    out: dict = {}
    with psycopg.connect(srv.database_url, autocommit=True) as conn:
        for name, (sql, params) in queries.items():
            conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)  # warm, like the measured runs
            rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params).fetchall()
            out[name] = [r[0] for r in rows]
    return out


def run(plan: Plan, workdir: Path) -> dict:
    results: dict = {
        "machine": machine_facts(),
        "plan": plan.__dict__,
        "workers": WORKERS,
        "server_settings": SERVER_SETTINGS,
    }
    with running_server(WORKERS, SERVER_SETTINGS) as srv:
        results["server"] = server_facts(srv.database_url)
        require_durable(results["server"])
        progress(f"setup through the API: {POSTERS + 1} people, a workspace, {CHANNELS} channels for the owner")
        began = time.monotonic()
        world = asyncio.run(build(srv.base_url, POSTERS, CHANNELS))
        owned = asyncio.run(owner_channel_count(srv.base_url, world))
        if owned != CHANNELS:
            raise SystemExit(f"set-up gave the owner {owned} channels, not {CHANNELS}")
        results["setup_s"] = round(time.monotonic() - began, 1)
        progress(f"  done in {results['setup_s']}s")
        results["posts"] = phase_posts(srv, world, plan, workdir)
        results["paced"] = phase_paced(srv, world, plan)
        results["fill"] = phase_fill(srv, world, plan)
        results["history_shape"] = shape = history_shape(srv, world)
        progress(f"  database: {shape}")
        results["reads"] = phase_reads(srv, world, plan, workdir, shape["history_last_seq"])
        try:
            results["explain"] = explain(srv, world)
        except Exception as exc:  # noqa: BLE001 - evidence only: never lose a run's numbers to it
            results["explain"] = {"error": f"{type(exc).__name__}: {exc}"}
            progress(f"  EXPLAIN failed: {results['explain']['error']}")
        for name, plan_lines in results["explain"].items():
            if name != "error":
                progress(f"  EXPLAIN ANALYZE {name}: {plan_lines[-1].strip()}")
    return results


# -- the report ---------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(results: dict) -> str:
    posts, paced, reads, fill_ = results["posts"], results["paced"], results["reads"], results["fill"]
    shape = results["history_shape"]
    h, hc = reads["history_newest"]["latency_ms"], reads["channels_limit_200"]["latency_ms"]
    p = paced["latency_ms"]
    catch = fill_["projection_events_per_s"]
    rows = [
        [
            f"accepted posts/s, {POSTERS} clients (own user + token each), one channel, closed loop",
            rate(posts["ok_per_s"]),
            f">= {TARGETS['posts_per_s']:,}",
            _verdict(posts["ok_per_s"] >= TARGETS["posts_per_s"]),
        ],
        [
            f"accept latency at {paced['offered_per_s']} posts/s offered (open loop), p50 / p99 ms",
            f"{p['p50']:.1f} / {p['p99']:.1f}",
            f"p99 < {TARGETS['accept_p99_ms']}",
            _verdict(p["p99"] < TARGETS["accept_p99_ms"] and set(paced["statuses"]) == {"201"}),
        ],
        [
            f"history page (limit=50, newest) with {shape['messages_in_database']:,} messages in the database, p50 / p99 ms",
            f"{h['p50']:.2f} / {h['p99']:.2f}",
            f"p99 < {TARGETS['history_p99_ms']}",
            _verdict(h["p99"] < TARGETS["history_p99_ms"]),
        ],
        [
            f"channel list with unread counts, user in {CHANNELS} channels (limit=200), p50 / p99 ms",
            f"{hc['p50']:.2f} / {hc['p99']:.2f}",
            f"p99 < {TARGETS['channels_p99_ms']}",
            _verdict(hc["p99"] < TARGETS["channels_p99_ms"]),
        ],
        [
            f"projections catching up on {fill_['projected_events']:,} appended events, events/s",
            "not caught up" if catch is None else rate(catch),
            "-",
            "-",
        ],
    ]
    return "\n\n".join([markdown_table(["metric", "measured", "target", "pass/fail"], rows), details(results)])


def _per(entry: dict, component: str) -> str:
    return f"{10 * entry['component_cpu_pct_of_one_core'][component] / entry['ok_per_s']:.2f}"


def _cpu(entry: dict) -> str:
    c = entry["component_cpu_pct_of_one_core"]
    gen = entry.get("generator_cpu_pct_of_one_core", 0)
    gen = sum(gen) if isinstance(gen, list) else gen
    cores = os.cpu_count() or 2
    # The machine is shared: whatever is busy beyond our components and generator is someone else's.
    others = max(0.0, entry["machine_cpu_pct"] * cores - sum(c.values()) - gen)
    return (
        ", ".join(f"{k} {v:.0f}%" for k, v in c.items()) + f", load generator {gen:.0f}%, other processes "
        f"{others:.0f}%; machine {entry['machine_cpu_pct']:.0f}% busy of {cores} cores"
    )


def details(results: dict) -> str:
    posts, paced, reads, fill_, shape = (
        results["posts"],
        results["paced"],
        results["reads"],
        results["fill"],
        results["history_shape"],
    )
    m, s = results["machine"], results["server"]
    a = fill_["append"]
    lines = [
        f"- Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}, "
        f"load average at start {m['loadavg_1m']}. PostgreSQL {s['server_version']} embedded, fsync={s['fsync']}, "
        f"synchronous_commit={s['synchronous_commit']}, shared_buffers={s['shared_buffers']}, data on "
        f"{s['data_directory_fs']}. NATS and Redis embedded. Everything, load generators included, on these 2 cores.",
        f"- Server: `hubbub serve --workers {results['workers']}` (one uvicorn worker per core; PostgreSQL and the "
        f"generators need the same cores). Settings changed for the bench: {results['server_settings']} "
        "(the post rate limit raised so it does not cap the run; its Redis check still runs on every post).",
        f"- Phase 1: wrk -t2 -c{posts['connections']} for {posts['seconds']:.0f}s (after a warm-up), each wrk thread "
        f"rotating its own 16 users' tokens: {posts['requests']:,} requests, {posts['unexpected_status']} not 201, "
        f"{posts['seq_null']} answered seq null (projection later than the wait); latency p50 / p90 / p99 / max "
        f"{posts['latency_ms']['p50']:.1f} / {posts['latency_ms']['p90']:.1f} / {posts['latency_ms']['p99']:.1f} / "
        f"{posts['latency_ms']['max']:.1f} ms. CPU (% of one core): wrk {posts['generator_cpu_pct_of_one_core']}%; "
        f"{_cpu(posts)}. CPU per accepted post (the figure a shared machine disturbs least): server "
        f"{_per(posts, 'server')} ms, PostgreSQL {_per(posts, 'postgres')} ms.",
        f"- Phase 2 (started once the projectors had applied phase 1's backlog, "
        f"{paced.get('projections_caught_up_before_s')} s after it ended): {paced['requests']:,} posts due at fixed "
        f"times ({paced['offered_per_s']}/s) from one generator process (raw HTTP/1.1 keep-alive on uvloop, requests "
        f"rendered beforehand, 64 connections); latency counted from when each was "
        f"due (no coordinated omission; unanswered {paced['cutoff_s']:.0f} s after the last was due: cancelled, counted "
        f"with their wait so far); statuses {paced['statuses']}; service time p50 / p99 {paced['service_time_ms']['p50']:.1f} / "
        f"{paced['service_time_ms']['p99']:.1f} ms; max send lag {paced['max_send_lag_ms']:.1f} ms. CPU: generator "
        f"{paced['generator_cpu_pct_of_one_core']}% of a core; {_cpu(paced)}.",
        f"- Fill: {a['messages']:,} messages ({a['replies']:,} thread replies under {a['roots']:,} roots) and "
        f"{a['reactions']:,} reactions = {a['events']:,} events appended through `PostgresEventStore.append_many` "
        f"in {a['seconds']:.1f}s ({rate(a['events_per_s'])} events/s) while the server's projectors ran; they "
        + (
            "did not catch up in time"
            if fill_["caught_up_s"] is None
            else f"caught up {fill_['caught_up_s']:.1f}s after the fill began ({rate(fill_['projection_events_per_s'])} "
            f"events/s through every projection; each caught up at, s: {fill_['projection_caught_up_s']})"
        )
        + f". CPU: {_cpu(fill_)}.",
        f"- Database for the reads: {shape['messages_in_database']:,} messages, {shape['messages_in_history_channel']:,} "
        f"of them in the history channel, {shape['reactions']:,} reactions; the newest page's 50 messages: "
        f"{shape['newest_page']['with_thread']} thread roots, {shape['newest_page']['with_reactions']} with reactions. "
        f"Tables analyzed by autovacuum yet: {shape['analyzed']}.",
    ]
    rows = []
    for name, r in reads.items():
        lat = r["latency_ms"]
        rows.append(
            [
                name,
                r["connections"],
                rate(r["requests_per_s"]),
                f"{lat['p50']:.2f}",
                f"{lat['p90']:.2f}",
                f"{lat['p99']:.2f}",
                f"{lat['max']:.1f}",
                r["unexpected_status"],
                f"{r['generator_cpu_pct_of_one_core']}%",
                _cpu(r),
            ]
        )
    table = markdown_table(
        [
            "read (wrk, closed loop)",
            "connections",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "non-200",
            "wrk CPU",
            "CPU, % of one core",
        ],
        rows,
    )
    return "\n".join(lines) + "\n\n" + table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.post", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases and 100k messages (a smoke run)")
    args = parser.parse_args(argv)
    if not wrk_available():
        raise SystemExit("bench.post needs wrk: apt-get install -y wrk")
    plan = QUICK if args.quick else FULL
    logs_to_stderr()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hubbub-bench-work-") as tmp:
        results = run(plan, Path(tmp))
    return finish("post", args.quick, results, report(results), began)


if __name__ == "__main__":
    sys.exit(main())
