"""The realtime gateway under load: ``python -m bench.realtime [--quick] [--no-deflate] [--python-objects]``.

Measures, in one run, against a real ``hubbub serve --workers 2`` (each worker is a gateway), the
targets of issue 4 ("Performance"):

1. post sent -> ``message.posted`` frame received by the channel's other members, p50 / p99, at
   200 posts/s offered (open loop, paced) with 1,000 connected clients; the posts go to 100
   private channels of 10 connected members (public channels are visible to, and so delivered to,
   every member of the workspace: 200/s into them would be 200,000 deliveries/s, phase 3's subject);
2. fan-out: a message to ``#general`` with every user connected (10,000; ``--quick``: 2,000):
   time until the last member has it, p99 over 20 messages (``--quick``: 5) sent 2 s apart; then
   a burst (20 messages at once) to see how many deliveries/s each gateway process drains, and
   how many per second of its CPU;
3. memory: RSS growth of the worker processes per idle authenticated socket (psutil) over the
   last 9,000 connects (judged), and from before the first socket to all connected (shown: it
   includes what phase 1's posting grew the heap by, not only its 1,000 sockets: 57 MiB of the
   71 MiB phase 1 added in a --quick run, where its sockets took 14 MiB at the marginal rate);
4. presence storm: with every user connected (each socket is a presence device, so all are
   online), 1,000 ``{"op":"presence"}`` frames/s over the sockets (away on the first pass over
   the users, active on the next, ...); the ``presence.changed`` frames each socket gets in any
   1 s, what ``PresenceFanout`` publishes on NATS (observed by a NATS client of the benchmark),
   and how long a change takes to be published there;
5. resume under traffic (issue 16, item 23): 2,000 posts at 1,000/s offered, from 32 connections,
   into 4 of phase 1's private channels; half of their members leave their socket after 125 of
   their channel's messages and resume 0.3 s later from the last position they had, while the
   posts go on: when, after the last post was answered, a resumed client has every message of
   its channel (once, in log order; bench/_ws_resume.py).

Latency is (time a frame arrived) - (time the POST was written to its socket), both from
``time.monotonic()`` (CLOCK_MONOTONIC, one clock for all processes of the machine); frames are
matched to posts by their text ``rt:<key>``. Clients: 4 processes of their own (``websockets``
handshakes, then a lean frame reader, see bench/_ws_clients.py; RLIMIT_NOFILE raised in each),
offering permessage-deflate as browsers do (``--no-deflate`` for none); posts from paced processes with a small keep-alive HTTP client.
All of it, the server, PostgreSQL, NATS and Redis share the machine's 2 cores: the generators'
CPU is reported per phase next to the server's (and what other processes on the machine used). Users are made over HTTP
(``HUBBUB_INSECURE_FAST_PASSWORDS=true``, post rate limit raised; set-up time reported).
``--python-objects`` also reports the workers' Python objects per socket over phase 2's connects
(``tracemalloc``, asked for by signal: ``bench/_pyobjects``); tracing slows the workers and adds
to their RSS, so the other figures of such a run do not count.
Table on stdout, progress on stderr, ``bench/results/realtime[-quick].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench._common import RESULTS_DIR, logs_to_stderr, machine_facts, markdown_table, progress, rate
from bench._server import running_server
from bench._ws_clients import Fleet
from bench._ws_http import raise_nofile
from bench._ws_phases import Ctx, phase_fanout, phase_latency, phase_memory
from bench._ws_presence import phase_presence
from bench._ws_resume import RESUME_TARGET_S, phase_resume
from bench._ws_server import PYOBJECTS_PATH, log_summary, python_objects, settled_memory, workers
from bench._ws_setup import build, wait_projections

WORKERS = 2
SERVER_SETTINGS = {
    "HUBBUB_INSECURE_FAST_PASSWORDS": "true",
    "HUBBUB_RATE_POST_PER_S": "1000000",
    "HUBBUB_RATE_POST_BURST": "1000000",
}
TARGETS = {
    "p50_ms": 15,
    "p99_ms": 50,
    "fanout_all_ms": 1000,
    "deliveries_per_s": 50_000,
    "kib_per_socket": 32,
    "presence_frames_per_s": 1,
    "presence_lag_ms": 2000,
}


@dataclass(frozen=True)
class Plan:
    users: int
    latency_clients: int
    group_size: int
    post_rate: int
    post_warmup_s: float
    post_s: float
    fanout_messages: int
    fanout_gap_s: float
    burst_messages: int
    presence_rate: int
    presence_s: float
    client_processes: int
    resume_channels: int = 4
    resume_posts: int = 2000
    resume_rate: int = 1000
    resume_in_flight: int = 32
    resume_drop_after: int = 125
    resume_gap_s: float = 0.3


FULL = Plan(
    users=10_000,
    latency_clients=1_000,
    group_size=10,
    post_rate=200,
    post_warmup_s=5,
    post_s=20,
    fanout_messages=20,
    fanout_gap_s=2,
    burst_messages=20,
    presence_rate=1000,
    presence_s=15,
    client_processes=4,
)
QUICK = Plan(
    users=2_000,
    latency_clients=1_000,
    group_size=10,
    post_rate=200,
    post_warmup_s=3,
    post_s=8,
    fanout_messages=5,
    fanout_gap_s=2,
    burst_messages=20,
    presence_rate=1000,
    presence_s=5,
    client_processes=4,
)


def run(plan: Plan, deflate: bool, save, probe_dir: Path | None = None) -> dict:
    """``probe_dir``: measure the workers' Python objects per socket too (``--python-objects``)."""
    results: dict = {
        "machine": machine_facts(),
        "plan": asdict(plan),
        "workers": WORKERS,
        "deflate": deflate,
        "server_settings": SERVER_SETTINGS,
        "nofile": raise_nofile(),
        "code": _code(),
    }
    settings = dict(SERVER_SETTINGS)
    if probe_dir is not None:
        settings |= {
            "PYTHONPATH": os.pathsep.join(filter(None, [PYOBJECTS_PATH, os.environ.get("PYTHONPATH")])),
            "BENCH_TRACEMALLOC_DIR": str(probe_dir),
        }
    with running_server(WORKERS, settings) as srv:
        progress(
            f"set-up over HTTP: {plan.users:,} users who accept an invite (and so join #general), "
            f"{plan.latency_clients // plan.group_size} private channels of {plan.group_size}"
        )
        began = time.monotonic()
        world = asyncio.run(build(srv.base_url, plan.users, plan.latency_clients, plan.group_size))
        caught = wait_projections(srv.database_url)
        results["setup"] = world.timings_s | {
            "projections_s": round(caught, 1),
            "total_s": round(time.monotonic() - began, 1),
        }
        progress(f"  set-up took {results['setup']}")
        procs = workers(srv.pids["server"])
        if len(procs) != WORKERS:
            raise SystemExit(f"expected {WORKERS} worker processes under hubbub serve, found {len(procs)}")
        before_any = settled_memory(procs)
        port = urlsplit(srv.base_url).port
        fleet = Fleet(f"ws://127.0.0.1:{port}/api/v1/ws", world.tokens, plan.client_processes, deflate)
        try:
            ctx = Ctx(srv, world, fleet, procs, plan, port)
            results["latency"] = phase_latency(ctx)
            save(results)
            before_rest = settled_memory(procs)
            objects_before = python_objects(procs, probe_dir) if probe_dir is not None else None
            results["memory"] = phase_memory(ctx, before_any, before_rest)
            if objects_before is not None:
                added = results["memory"]["open_sockets"] - results["latency"]["connect"]["ok"]
                grown = python_objects(procs, probe_dir) - objects_before
                results["memory"]["python_objects_kib_per_socket"] = round(grown / added / 1024, 1)
            save(results)
            results["fanout"] = phase_fanout(ctx)
            save(results)
            after = results["fanout"]["rss_after_spaced"]
            results["memory"]["per_socket_kib_after_fanout"] = round(
                (after["rss"] - before_any["rss"]) / results["memory"]["open_sockets"] / 1024, 1
            )
            results["presence"] = phase_presence(ctx)
            save(results)
            results["resume"] = phase_resume(ctx)
            results["clients_end"] = fleet.stats()
            results["close"] = fleet.close()
            progress(f"clients at the end: {results['clients_end']}; closed in {results['close']['seconds']:.1f}s")
        finally:
            fleet.stop()
            results["server_log_warnings"] = log_summary(srv.log_path)
            save(results)
    return results


def _code() -> dict[str, object]:
    """The commit measured, and files changed but not committed (the server runs from this tree)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=root).stdout.strip()

    return {
        "head": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--short", "--", "realtime", "hubbub", "infra").splitlines(),
    }


# -- the report ---------------------------------------------------------------------------------


def _v(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _cpu(phase: dict) -> str:
    c = phase["cpu_pct_of_one_core"]
    return (
        f"server {c.get('server')}%, PostgreSQL {c.get('postgres')}%, NATS {c.get('nats')}%, Redis {c.get('redis')}%, "
        f"WebSocket clients {c.get('ws_clients')}%, pacers {c.get('pacers')}%, other processes on the machine "
        f"{c.get('other_processes')}% (machine {phase['machine_cpu_pct']}% of 2 cores)"
    )


def report(r: dict) -> str:
    lat, mem, fan, pres, plan = r["latency"], r["memory"], r["fanout"], r["presence"], r["plan"]
    res = r["resume"]
    sp, burst, pd = fan["spaced"], fan["burst"], mem["presence_after_connect"]
    n = mem["open_sockets"]
    best_rate = max((w["per_s"] or 0 for w in burst["per_worker"].values()), default=0)
    best_cpu = max((w["per_worker_cpu_s"] or 0 for w in burst["per_worker"].values()), default=0)
    rate_ok = (
        True
        if best_rate >= TARGETS["deliveries_per_s"]
        else (None if best_cpu >= TARGETS["deliveries_per_s"] else False)
    )
    no_presence = pres["sockets_with_presence_frames"] == 0
    why = (
        f"not measurable yet: no socket got a presence.changed frame ({pres['nats_frames']} were published on NATS "
        f"hubbub.ws.{{ws}}.presence)"
    )
    lag = pres["publish_lag_ms"]
    vacuous = pres["changes_published"] < 0.9 * pres["sent"]  # few frames: "at most one a second" proves nothing
    rows = [
        [
            f"post -> frame at other clients, p50 ({lat['offered_per_s']} posts/s, {lat['connect']['ok']:,} clients)",
            f"{lat['latency_ms']['p50']:.1f} ms",
            "< 15 ms",
            _v(lat["latency_ms"]["p50"] < TARGETS["p50_ms"]),
        ],
        [
            "the same, p99",
            f"{lat['latency_ms']['p99']:.1f} ms (max {lat['latency_ms']['max']:.0f})",
            "< 50 ms",
            _v(lat["latency_ms"]["p99"] < TARGETS["p99_ms"]),
        ],
        [
            f"fan-out: all {sp['members']:,} members have it, p99 over {sp['messages']} messages",
            f"{sp['time_to_all_ms']['p99']:.0f} ms (p50 {sp['time_to_all_ms']['p50']:.0f})",
            "< 1 s at 10,000",
            _v(sp["time_to_all_ms"]["p99"] < TARGETS["fanout_all_ms"]),
        ],
        [
            "deliveries/s one gateway process drains (burst; per CPU-second of it)",
            f"{rate(best_rate)}/s ({rate(best_cpu)} per CPU-s)",
            ">= 50,000/s",
            _v(rate_ok),
        ],
        [
            f"RSS per idle authenticated socket at {n:,}: growth over the last {n - lat['connect']['ok']:,} connects "
            "(from none, phase 1's posting included)",
            f"{mem['per_socket_kib_marginal']} KiB ({mem['per_socket_kib_from_zero']} KiB)",
            "<= 32 KiB",
            _v(mem["per_socket_kib_marginal"] <= TARGETS["kib_per_socket"]),
        ],
        [
            f"presence storm: most presence frames any socket got in 1 s ({pres['users_online']:,} online, "
            f"{pres['offered_per_s']:,}/s changes)",
            why
            if no_presence
            else ("vacuous: " if vacuous else "")
            + f"{pres['socket_max_frames_in_1s']} ({pres['sockets_with_2_in_1s']:,} of "
            f"{pres['sockets_with_presence_frames']:,} sockets got 2; shortest gap {pres['socket_gap_ms']['min']:.0f} ms)",
            "<= 1",
            "n/a"
            if no_presence or vacuous
            else _v(pres["socket_max_frames_in_1s"] <= TARGETS["presence_frames_per_s"]),
        ],
        [
            "presence storm: changes sent/s; published on NATS within, p99",
            f"{pres['sent_per_s']:,.0f}/s; {lag['p99']:.0f} ms ({pres['changes_published']:,}/{pres['sent']:,} published; "
            f"max {pres['nats_max_frames_in_1s']} frames/s on NATS)",
            "1,000/s; ~1-2 s",
            _v(pres["sent_per_s"] >= 0.95 * pres["offered_per_s"] and lag["p99"] <= TARGETS["presence_lag_ms"]),
        ],
        [
            (
                f"resume under traffic: a resumed client has every message (once, in order), after the last post was "
                f"answered ({res['resumers']} of {res['listeners']} listeners resume at once; {res['accepted_per_s']} posts/s)"
            ),
            (
                f"{'vacuous: ' if res['back_after_the_posts'] else ''}max {res['resumed']['after_last_accept_s']['max']} s "
                f"(p50 {res['resumed']['after_last_accept_s']['p50']}; {res['resumed']['complete_once_in_order']}/"
                f"{res['resumers']} complete; those that stayed: max {res['stayed']['after_last_accept_s']['max']} s)"
            ),
            f"< {RESUME_TARGET_S:g} s",
            "n/a" if res["back_after_the_posts"] else _v(res["ok"]),
        ],
    ]
    table = markdown_table(["what (issue 4 target)", "measured", "target", ""], rows)
    m, s = r["machine"], r["setup"]
    notes = [
        f"- Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, load average at "
        f"start {m['loadavg_1m']}. `hubbub serve --workers {r['workers']}` (each worker a gateway) with durable embedded "
        "PostgreSQL, NATS and Redis; the WebSocket clients (4 processes) and pacers run on the SAME 2 cores and compete "
        "with the server: their CPU is shown per phase. Clients "
        + (
            "offer permessage-deflate (as browsers do; uvicorn accepts it)."
            if r["deflate"]
            else "offer no compression."
        ),
        f"- Code: {r['code']['head']}, uncommitted in realtime/ hubbub/ infra/: {r['code']['uncommitted'] or 'none'}. "
        f"Set-up over HTTP ({plan['users']:,} users): {s}.",
        f"- Phase 1: posts {lat['statuses']} ({lat['unanswered']} unanswered at the cut-off), accepted in p50 "
        f"{lat['accept_ms']['p50']:.1f} / p99 {lat['accept_ms']['p99']:.1f} ms after being written (the pacer's wait for one "
        f"of its 64 connections: p99 {lat['send_lag_ms']['p99']:.0f} ms); deliveries {lat['deliveries_received']:,}/{lat['deliveries_expected']:,}; from "
        f"when each post was due: p50 {lat['latency_from_due_ms']['p50']:.1f} / p99 {lat['latency_from_due_ms']['p99']:.1f} ms. "
        f"From the 201 to the frame: p50 {lat['latency_from_201_ms']['p50']:.1f} / p99 "
        f"{lat['latency_from_201_ms']['p99']:.1f} ms. CPU: {_cpu(lat)}. Connecting: {lat['connect']['per_s']:,.0f} sockets/s.",
        f"- Phase 2 (connect the rest): {mem['connect']['ok']:,} in {mem['connect']['seconds']:.0f}s "
        f"({mem['connect']['per_s']:,.0f}/s, failed {mem['connect']['failed']}), sockets per worker "
        f"{mem['sockets_per_worker']}. CPU: {_cpu(mem['connect'])}. RSS {mem['rss_before_any_socket']['rss'] / 2**20:.0f} -> "
        f"{mem['rss_idle_all']['rss'] / 2**20:.0f} MiB (USS {mem['uss_per_socket_kib_from_zero']} KiB per socket); after "
        f"the fan-out frames: {mem['per_socket_kib_after_fanout']} KiB per socket. Every connect is a presence change that "
        f"every connected member hears: the clients read {pd['presence_frames']:,} presence.changed frames "
        f"({pd['presence_mib']:,} MiB) during this phase, the last {pd['drain_s']} s after the last connect (phase 3 "
        f"waits for that); CPU meanwhile: {_cpu(pd)}.",
        f"- Phase 3a, after the gateways were responsive again ({fan['settle']['settle_s']} s of probes after phase 2's "
        f"presence frames stopped; probes: (s, reached, ms to all) {fan['settle']['probes'][-6:]}): each delivery p50 {sp['delivery_ms']['p50']:.0f} / p99 {sp['delivery_ms']['p99']:.0f} ms; time to all "
        f"per message {sp['time_to_all_each_ms']} ms. CPU: {_cpu(sp)}.",
        f"- Phase 3b: {burst['deliveries']:,}/{burst['expected']:,} delivered, {rate(burst['per_s_from_first_post'] or 0)}/s "
        f"from the first post to the last frame; per worker {burst['per_worker']}. CPU: {_cpu(burst)}.",
        f"- Phase 4: {pres['sent']:,} presence frames sent by the clients (send lag p99 {pres['send_lag_ms']['p99']:.0f} ms); "
        f"NATS: {pres['nats_frames']} presence.changed frames carrying {pres['nats_changes']:,} changes; publish lag p50 "
        f"{lag['p50']:.0f} / p99 {lag['p99']:.0f} / max {lag['max']:.0f} ms; sockets: {pres['socket_frames']:,} frames to "
        f"{pres['sockets_with_presence_frames']:,} sockets, the last {pres['socket_frames_last_s']} s after the storm "
        f"began ({pres['seconds']:.0f} s long); {pres['sockets_with_2_in_1s']:,} sockets got two within 1 s (shortest gap "
        f"{pres['socket_gap_ms']['min']} ms, p50 {pres['socket_gap_ms']['p50']} ms); {pres['socket_kib_per_s']} KiB/s of "
        f"presence per socket. CPU: {_cpu(pres)}; per worker {pres['worker_cpu_pct']}%.",
        (
            f"- Phase 5: posts {res['statuses']} at {res['accepted_per_s']}/s of {res['offered_per_s']:,}/s offered, accepted "
            f"in p50 {res['accept_ms']['p50']:.0f} / p99 {res['accept_ms']['p99']:.0f} ms; the resumers left after "
            f"{plan['resume_drop_after']} messages (a close frame, not waited for) and were back (ready) p50 "
            f"{res['resumed_at_s_after_first_post']['p50']} s after the first post ({res['back_after_the_posts']} after the "
            f"last post was answered: these test nothing), hello -> ready p50 "
            f"{res['hello_to_ready_ms']['p50']:.0f} / max {res['hello_to_ready_ms']['max']:.0f} ms; those that stayed: "
            f"{res['stayed']['complete_once_in_order']}/{res['stayed']['clients']} complete; never left (too few messages): "
            f"{res['not_dropped'] or 'none'}; failed resumes: {res['resume_errors'] or 'none'}. CPU: {_cpu(res)}."
        ),
        *(
            [
                f"- Python objects (`--python-objects`: tracemalloc in the workers, which slows them and adds to their "
                f"RSS, so no other figure of this run counts): {mem['python_objects_kib_per_socket']} KiB per socket over "
                f"phase 2's connects, after a full collection."
            ]
            if "python_objects_kib_per_socket" in mem
            else []
        ),
        f"- Sockets closed by the server during the run: {r['clients_end']['closed'] or 'none'}. Warnings and errors in "
        f"the server's log: {r.get('server_log_warnings') or 'none'}.",
    ]
    return table + "\n\n" + "\n".join(notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.realtime", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 users, shorter phases (a few minutes)")
    parser.add_argument("--no-deflate", action="store_true", help="clients offer no permessage-deflate")
    parser.add_argument(
        "--python-objects",
        action="store_true",
        help="also measure the workers' Python objects per socket (tracemalloc; slows the server, "
        "so the run's other figures do not count)",
    )
    args = parser.parse_args(argv)
    logs_to_stderr()
    began = time.monotonic()
    RESULTS_DIR.mkdir(exist_ok=True)
    name = (
        "realtime"
        + ("-quick" if args.quick else "")
        + ("-no-deflate" if args.no_deflate else "")
        + ("-python-objects" if args.python_objects else "")
        + ".json"
    )

    def save(results: dict) -> None:  # after every phase: a failure later keeps what was measured
        (RESULTS_DIR / name).write_text(json.dumps(results, indent=2, default=str))

    with tempfile.TemporaryDirectory(prefix="hubbub-bench-pyobjects-") as probe:
        results = run(
            QUICK if args.quick else FULL,
            deflate=not args.no_deflate,
            save=save,
            probe_dir=Path(probe) if args.python_objects else None,
        )
    results["total_s"] = round(time.monotonic() - began, 1)
    save(results)
    print(report(results))
    progress(f"done in {results['total_s']:.0f}s; raw numbers in {RESULTS_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
