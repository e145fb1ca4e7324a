"""The realtime benchmark's presence storm (phase 4 of bench/realtime.py)."""

from __future__ import annotations

import time
from collections import defaultdict

from bench._common import progress
from bench._ws_phases import Ctx, Meter, stats_ms
from bench._ws_server import PresenceObserver, cpu_seconds, max_in_window


def phase_presence(ctx: Ctx) -> dict:
    p, w = ctx.plan, ctx.world
    n = ctx.fleet.stats()["open"]
    with PresenceObserver(ctx.srv.env["HUBBUB_NATS_URL"], w.workspace_id) as obs:
        progress(
            f'phase 4: presence storm, {p.presence_rate}/s {{"op":"presence"}} frames (away, then active, '
            f"...) over the sockets for {p.presence_s:.0f}s; {n:,} users online, each socket listening"
        )
        time.sleep(2)  # presence of the connects is out of the way
        ctx.fleet.record(True)
        began = time.monotonic()
        meter, cpu0 = Meter(ctx).start(), cpu_seconds(ctx.workers)
        sent, gen_cpu = ctx.fleet.storm(p.presence_rate, p.presence_s)
        used, cpu1 = meter.stop(), cpu_seconds(ctx.workers)
        time.sleep(3)  # the last changes: up to 1 s in the fan-out, 1 s in the hub
        _, per_socket = ctx.fleet.record(False)
        frames = [(t, items) for t, items in obs.frames if t >= began]
    idx_of = {u: i for i, u in enumerate(w.user_ids)}
    changes: defaultdict[int, list[tuple[float, str, int]]] = defaultdict(list)
    for k, (idx, status, t, _) in enumerate(sorted(sent, key=lambda x: x[2])):
        changes[idx].append((t, "away" if status == "away" else "online", k))
    lags, seen = [], set()
    for t, items in frames:
        for user_id, status in items:
            mine = [c for c in changes.get(idx_of.get(user_id, -1), []) if c[0] <= t and c[1] == status]
            if mine and mine[-1][2] not in seen:
                seen.add(mine[-1][2])
                lags.append((t - mine[-1][0]) * 1000)
    socket_max = {i: max_in_window(sorted(t for t, _ in got)) for i, got in per_socket.items()}
    gaps = [b[0] - a[0] for got in per_socket.values() for a, b in zip(sorted(got), sorted(got)[1:])]
    span = max(x[2] for x in sent) - min(x[2] for x in sent) if sent else 0
    frame_times = sorted(t for got in per_socket.values() for t, _ in got)
    wall = (max(x[2] for x in sent) - began) if sent else 1.0
    out = {
        "users_online": n,
        "offered_per_s": p.presence_rate,
        "seconds": p.presence_s,
        "sent": len(sent),
        "sent_per_s": round(len(sent) / span, 1) if span else 0,
        "send_lag_ms": stats_ms([(t - due) * 1000 for _, _, t, due in sent]),
        "nats_frames": len(frames),
        "nats_max_frames_in_1s": max_in_window([t for t, _ in frames]),
        "nats_changes": sum(len(i) for _, i in frames),
        "changes_published": len(seen),
        "publish_lag_ms": stats_ms(lags),
        "sockets_with_presence_frames": len(per_socket),
        "socket_frames": len(frame_times),
        "socket_max_frames_in_1s": max(socket_max.values(), default=0),
        "sockets_with_2_in_1s": sum(v > 1 for v in socket_max.values()),
        "socket_gap_ms": stats_ms([g * 1000 for g in gaps]) | {"min": round(min(gaps, default=0) * 1000, 1)},
        "socket_kib_per_s": round(
            sum(b for got in per_socket.values() for _, b in got) / max(1, len(per_socket)) / (p.presence_s + 3) / 1024,
            1,
        ),
        "worker_cpu_pct": {str(k): round(100 * (cpu1[k] - cpu0.get(k, 0)) / wall, 1) for k in cpu1},
        "socket_frames_last_s": round(frame_times[-1] - began, 2) if frame_times else None,
        "nats_timeline": [(round(t - began, 3), len(items)) for t, items in frames],
        "storm_cpu_pct_of_client_process": [round(100 * c / p.presence_s, 1) for c in gen_cpu],
    } | used
    progress(
        f"  sent {len(sent):,} ({out['sent_per_s']:,}/s); NATS: {len(frames)} frames (max {out['nats_max_frames_in_1s']} in "
        f"1 s), {len(seen):,}/{len(sent):,} changes published, lag {out['publish_lag_ms']}; {len(per_socket):,} sockets "
        f"got {len(frame_times):,} presence frames, at most {out['socket_max_frames_in_1s']} in 1 s "
        f"({out['sockets_with_2_in_1s']:,} sockets had 2; gaps {out['socket_gap_ms']}), "
        f"{out['socket_kib_per_s']} KiB/s each; CPU {used['cpu_pct_of_one_core']}, workers {out['worker_cpu_pct']}"
    )
    return out
