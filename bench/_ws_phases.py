"""The realtime benchmark's phases (see bench/realtime.py): latency, connecting and memory,
fan-out (the presence storm is bench/_ws_presence.py). Each returns plain numbers for the report
and realtime.json."""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from bench._common import CpuMeter, percentile, progress
from bench._server import ComponentCpu, Server
from bench._ws_clients import Fleet
from bench._ws_http import Job, Pacers
from bench._ws_server import cpu_seconds, settled_memory, socket_owner
from bench._ws_setup import RtWorld

API = "/api/v1"
CORES = os.cpu_count() or 1


@dataclass
class Ctx:
    srv: Server
    world: RtWorld
    fleet: Fleet
    workers: list  # psutil.Process of each gateway (uvicorn worker)
    plan: Any
    port: int


def stats_ms(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {
        "n": len(v),
        "p50": round(percentile(v, 50), 2),
        "p90": round(percentile(v, 90), 2),
        "p99": round(percentile(v, 99), 2),
        "max": round(v[-1], 2) if v else float("nan"),
    }


class Meter:
    """CPU of the server, PostgreSQL, NATS, Redis, the client processes and pacers (% of one core),
    the whole machine (% of all cores), and what other processes on this shared machine used."""

    def __init__(self, ctx: Ctx) -> None:
        self.comp, self.machine = ComponentCpu(ctx.srv.pids | ctx.fleet.pids), CpuMeter()

    def start(self) -> Meter:
        self.comp.start()
        self.machine.start()
        return self

    def stop(self, pacers: float = 0.0) -> dict:
        """``pacers``: their CPU, % of one core, as they measured it (they have exited by now)."""
        comp, machine = self.comp.stop(), self.machine.stop()
        out = {k: v for k, v in comp.items() if not k.startswith("clients-")}
        out["ws_clients"] = round(sum(v for k, v in comp.items() if k.startswith("clients-")), 1)
        out["pacers"] = round(pacers, 1)
        out["other_processes"] = round(max(0.0, machine * CORES - sum(comp.values()) - pacers), 1)
        return {"cpu_pct_of_one_core": out, "machine_cpu_pct": machine}


def _paced_measured(
    ctx: Ctx, jobs: list[Job], rate: float, processes: int, cutoff_s: float = 10, in_flight: int = 64
) -> dict:
    pacers = Pacers(ctx.srv.base_url, jobs, rate, processes, in_flight=in_flight, cutoff_s=cutoff_s)
    time.sleep(max(0.0, pacers.start - time.monotonic()))
    meter = Meter(ctx).start()
    out = pacers.wait()
    return out | meter.stop(sum(out["generator_cpu_pct_of_one_core"]))


def _wait_records(ctx: Ctx, expected: int, stall_s: float = 5.0, limit_s: float = 120) -> int:
    """Until the clients have recorded ``expected`` frames, or none came for ``stall_s``."""
    began, last, last_change = time.monotonic(), -1, time.monotonic()
    while time.monotonic() - began < limit_s:
        got = ctx.fleet.count()
        if got >= expected:
            return got
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change >= stall_s:
            return got
        time.sleep(0.05)
    return last


def _statuses(done: list) -> dict[str, int]:
    return dict(Counter(str(d.status) for d in done))


def connect(ctx: Ctx, indices: range, what: str) -> dict:
    progress(f"{what}: connecting {len(indices):,} sockets ({ctx.fleet.n} client processes)")
    meter = Meter(ctx).start()
    out = ctx.fleet.connect(indices)
    out |= meter.stop()
    took = out.pop("connect_s_sorted")
    out["per_socket_s"] = {"p50": round(percentile(took, 50), 3), "p99": round(percentile(took, 99), 3)}
    out["per_s"] = round(out["ok"] / out["seconds"], 1)
    progress(
        f"  {out['ok']:,} connected in {out['seconds']:.1f}s ({out['per_s']:,.0f}/s), failed {out['failed']}; "
        f"CPU {out['cpu_pct_of_one_core']}"
    )
    return out


def phase_latency(ctx: Ctx) -> dict:
    p, w = ctx.plan, ctx.world
    out: dict[str, Any] = {"connect": connect(ctx, range(p.latency_clients), "phase 1")}
    out["presence_after_connect"] = _presence_drained(ctx)
    count, warm = int(p.post_rate * (p.post_warmup_s + p.post_s)), int(p.post_rate * p.post_warmup_s)
    jobs, poster = [], {}
    for i in range(count):
        ch, members = w.groups[i % len(w.groups)]
        m = members[(i // len(w.groups)) % len(members)]
        poster[str(i)] = m
        jobs.append(
            Job(i, "POST", f"{API}/channels/{ch}/messages", w.tokens[m], json.dumps({"text": f"rt:{i}"}).encode())
        )
    progress(
        f"phase 1: {p.post_rate} posts/s offered for {p.post_warmup_s + p.post_s:.0f}s (first {p.post_warmup_s:.0f}s "
        f"warm-up) into {len(w.groups)} private channels of {len(w.groups[0][1])} connected members"
    )
    ctx.fleet.record(True)
    paced = _paced_measured(ctx, jobs, p.post_rate, processes=1)
    _wait_records(ctx, sum(d.status == 201 for d in paced["done"]) * len(w.groups[0][1]), stall_s=3)
    records, _ = ctx.fleet.record(False)
    sent = {str(d.index): d for d in paced.pop("done")}
    lat, lat_due, lat_acc, per_key = [], [], [], Counter()
    by_second: defaultdict[int, list[float]] = defaultdict(list)
    for key, idx, t in records:
        d = sent.get(key)
        if d is None or idx == poster.get(key) or d.index < warm:
            continue
        lat.append((t - d.sent) * 1000)
        by_second[int(d.index / p.post_rate)].append(lat[-1])
        lat_due.append((t - d.due) * 1000)
        lat_acc.append((t - d.done) * 1000)
        per_key[key] += 1
    measured = [d for d in sent.values() if d.index >= warm]
    accepted = [d for d in measured if d.status == 201]
    expected = len(accepted) * (len(w.groups[0][1]) - 1)
    out |= {
        "offered_per_s": p.post_rate,
        "posts": len(measured),
        "statuses": _statuses(measured),
        "accept_ms": stats_ms([(d.done - d.sent) * 1000 for d in accepted]),
        "send_lag_ms": stats_ms([(d.sent - d.due) * 1000 for d in measured]),
        "latency_ms": stats_ms(lat),
        "latency_from_due_ms": stats_ms(lat_due),
        "latency_from_201_ms": stats_ms(lat_acc),
        "latency_by_second": {
            sec: {k: v for k, v in stats_ms(v).items() if k in ("p50", "p99")} for sec, v in sorted(by_second.items())
        },
        "deliveries_expected": expected,
        "deliveries_received": len(lat),
        "unanswered": paced["unanswered"],
        "pacer_cpu_pct_of_one_core": paced["generator_cpu_pct_of_one_core"],
        "cpu_pct_of_one_core": paced["cpu_pct_of_one_core"],
        "machine_cpu_pct": paced["machine_cpu_pct"],
    }
    progress(f"  frame after the 201 came back: {out['latency_from_201_ms']}")
    progress(
        f"  post sent -> frame received: {out['latency_ms']}; accept {out['accept_ms']}; "
        f"{len(lat):,}/{expected:,} deliveries; statuses {out['statuses']}; CPU {out['cpu_pct_of_one_core']}, "
        f"pacer {out['pacer_cpu_pct_of_one_core']}"
    )
    return out


def _presence_drained(ctx: Ctx, quiet_s: float = 3.0, limit_s: float = 600) -> dict:
    """Wait until no presence.changed frame reached any client for ``quiet_s``: each connect is a
    status change, and every connected member of the workspace hears of it."""
    began = time.monotonic()
    last, last_change = ctx.fleet.stats(), time.monotonic()
    while time.monotonic() - began < limit_s:
        time.sleep(0.5)
        now = ctx.fleet.stats()
        if now["presence_frames"] != last["presence_frames"]:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            break
    return {
        "drain_s": round(last_change - began, 1),
        "presence_frames": last["presence_frames"],
        "presence_mib": round(last["presence_bytes"] / 2**20, 1),
    }


def phase_memory(ctx: Ctx, before_any: dict, before_rest: dict) -> dict:
    p = ctx.plan
    before = ctx.fleet.stats()
    out: dict[str, Any] = {"connect": connect(ctx, range(p.latency_clients, p.users), "phase 2")}
    meter = Meter(ctx).start()
    out["presence_after_connect"] = drained = _presence_drained(ctx) | meter.stop()
    drained["presence_frames"] -= before["presence_frames"]
    drained["presence_mib"] = round(drained["presence_mib"] - before["presence_bytes"] / 2**20, 1)
    progress(
        f"  presence.changed frames of the connects still arriving {drained['drain_s']}s after the last connect; "
        f"{drained['presence_frames']:,} frames, {drained['presence_mib']:,} MiB (as the clients read them) during "
        f"phase 2; CPU while draining {drained['cpu_pct_of_one_core']}"
    )
    after = settled_memory(ctx.workers)
    owner = socket_owner(ctx.workers, ctx.port)
    split = Counter(owner.get(port) for port in ctx.fleet.ports.values())
    n_all, n_rest = ctx.fleet.stats()["open"], p.users - p.latency_clients
    out |= {
        "rss_before_any_socket": before_any,
        "rss_before_rest": before_rest,
        "rss_idle_all": after,
        "open_sockets": n_all,
        "sockets_per_worker": {str(k): v for k, v in split.items()},
        "per_socket_kib_from_zero": round((after["rss"] - before_any["rss"]) / n_all / 1024, 1),
        "per_socket_kib_marginal": round((after["rss"] - before_rest["rss"]) / n_rest / 1024, 1),
        "uss_per_socket_kib_from_zero": round((after["uss"] - before_any["uss"]) / n_all / 1024, 1),
    }
    progress(
        f"  {n_all:,} sockets open {dict(split)}; RSS of the workers {before_any['rss'] / 2**20:.0f} MiB "
        f"-> {after['rss'] / 2**20:.0f} MiB: {out['per_socket_kib_from_zero']} KiB per socket (from none), "
        f"{out['per_socket_kib_marginal']} KiB (the last {n_rest:,}, idle)"
    )
    return out


def _settle(ctx: Ctx, members: int, within_s: float = 2.0, limit_s: float = 600) -> dict:
    """Probe messages to #general until one reaches every member within ``within_s``: after a
    connect storm the gateways work off what they queued (presence) before they are responsive."""
    import asyncio

    from bench._ws_http import Http

    async def post(k: int) -> float:
        http = Http(ctx.srv.base_url, 1)
        body = json.dumps({"text": f"rt:probe{k}"}).encode()
        _, _, sent = await http.timed(
            "POST", f"{API}/channels/{ctx.world.general_id}/messages", ctx.world.owner_token, body
        )
        await http.close()
        return sent

    began, probes = time.monotonic(), []
    while time.monotonic() - began < limit_s:
        ctx.fleet.record(True)
        sent = asyncio.run(post(len(probes)))
        got = _wait_records(ctx, members, stall_s=within_s + 1, limit_s=30)
        records, _ = ctx.fleet.record(False)
        took = max((t for *_, t in records), default=sent) - sent
        probes.append((round(time.monotonic() - began, 1), got, round(took * 1000)))
        if got >= members and took <= within_s:
            break
    out = {"settle_s": round(time.monotonic() - began, 1), "probes": probes}
    progress(
        f"  responsive again (a probe reached all {members:,} within {within_s:g} s) after {out['settle_s']}s; "
        f"probes (s, reached, ms): {probes[-5:]}"
    )
    return out


def phase_fanout(ctx: Ctx) -> dict:
    p, w = ctx.plan, ctx.world
    members = ctx.fleet.stats()["open"]
    settle = _settle(ctx, members)
    path = f"{API}/channels/{w.general_id}/messages"
    jobs = [
        Job(i, "POST", path, w.owner_token, json.dumps({"text": f"rt:f{i}"}).encode()) for i in range(p.fanout_messages)
    ]
    progress(
        f"phase 3a: {p.fanout_messages} messages to #general ({members:,} connected members), one every "
        f"{p.fanout_gap_s:g}s"
    )
    ctx.fleet.record(True)
    paced = _paced_measured(ctx, jobs, 1 / p.fanout_gap_s, processes=1, cutoff_s=60)
    _wait_records(ctx, len(jobs) * members)
    records, _ = ctx.fleet.record(False)
    sent = {f"f{d.index}": d for d in paced.pop("done")}
    arrivals: defaultdict[str, list[float]] = defaultdict(list)
    for key, _, t in records:
        arrivals[key].append(t)
    all_lat, to_all, reached = [], [], []
    for key, d in sent.items():
        ts = arrivals.get(key, [])
        all_lat += [(t - d.sent) * 1000 for t in ts]
        reached.append(len(ts))
        to_all.append((max(ts) - d.sent) * 1000 if len(ts) >= members else float("inf"))
    spaced = {
        "messages": len(sent),
        "members": members,
        "statuses": _statuses(list(sent.values())),
        "reached_min": min(reached, default=0),
        "time_to_all_ms": stats_ms(to_all),
        "time_to_all_each_ms": [round(x, 1) for x in to_all],
        "delivery_ms": stats_ms(all_lat),
        "cpu_pct_of_one_core": paced["cpu_pct_of_one_core"],
        "machine_cpu_pct": paced["machine_cpu_pct"],
    }
    progress(
        f"  time to reach all {members:,}: {spaced['time_to_all_ms']}; each delivery {spaced['delivery_ms']}; "
        f"fewest reached {spaced['reached_min']:,}; CPU {spaced['cpu_pct_of_one_core']}"
    )
    after_spaced = settled_memory(ctx.workers, wait_s=1)
    return {"settle": settle, "spaced": spaced, "burst": _burst(ctx, members), "rss_after_spaced": after_spaced}


def _burst(ctx: Ctx, members: int) -> dict:
    p, w = ctx.plan, ctx.world
    path = f"{API}/channels/{w.general_id}/messages"
    jobs = [
        Job(i, "POST", path, w.owner_token, json.dumps({"text": f"rt:b{i}"}).encode()) for i in range(p.burst_messages)
    ]
    progress(
        f"phase 3b: a burst of {p.burst_messages} messages to #general at once = "
        f"{p.burst_messages * members:,} deliveries; how fast do the gateways drain it"
    )
    owner = socket_owner(ctx.workers, ctx.port)
    worker_of = {idx: owner.get(port) for idx, port in ctx.fleet.ports.items()}
    ctx.fleet.record(True)
    pacers = Pacers(ctx.srv.base_url, jobs, 1000.0, 1, in_flight=p.burst_messages, cutoff_s=60)
    time.sleep(max(0.0, pacers.start - time.monotonic()))
    meter, cpu0 = Meter(ctx).start(), cpu_seconds(ctx.workers)
    paced = pacers.wait()
    done = paced["done"]
    _wait_records(ctx, len(done) * members)
    cpu1, used = cpu_seconds(ctx.workers), meter.stop(sum(paced["generator_cpu_pct_of_one_core"]))
    records, _ = ctx.fleet.record(False)
    first_sent = min(d.sent for d in done)
    by_worker: defaultdict[int | None, list[float]] = defaultdict(list)
    for _, idx, t in records:
        by_worker[worker_of.get(idx)].append(t)
    per_worker = {}
    for pid, ts in by_worker.items():
        span = max(ts) - min(ts)
        cpu = cpu1.get(pid, 0) - cpu0.get(pid, 0) if pid else 0
        per_worker[str(pid)] = {
            "deliveries": len(ts),
            "first_to_last_s": round(span, 3),
            "per_s": round(len(ts) / span) if span else None,
            "from_first_post_s": round(max(ts) - first_sent, 3),
            "worker_cpu_s": round(cpu, 2),
            "per_worker_cpu_s": round(len(ts) / cpu) if cpu else None,
        }
    last = max((t for _, _, t in records), default=first_sent)
    out = {
        "messages": len(done),
        "statuses": _statuses(done),
        "members": members,
        "deliveries": len(records),
        "expected": len(done) * members,
        "per_s_from_first_post": round(len(records) / (last - first_sent)) if last > first_sent else None,
        "per_worker": per_worker,
    } | used
    progress(
        f"  {out['deliveries']:,}/{out['expected']:,} deliveries, {out['per_s_from_first_post'] or 0:,}/s overall; "
        f"per worker {per_worker}; CPU {used['cpu_pct_of_one_core']}"
    )
    return out
