"""The realtime benchmark's resume under traffic (phase 5 of bench/realtime.py, issue 16 item 23).

Posts go at a high rate into a few of phase 1's private channels; half of each channel's
members leave their socket once they have ``resume_drop_after`` of its messages and resume
``resume_gap_s`` later from the last position they had, while the posts go on (as every client
does after a deploy). Each listener's message frames are kept with their positions: a resumed
client must have every message of its channel, once and in log order, and the question is how
long after the last post was answered (the last 201) it has the last one. Leaving is a close frame
not waited for (``_Lean.drop``): a client that waits for the closing handshake first waits for
what its library does (websockets: up to ``close_timeout``, 10 s, see docs/realtime.md).
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from bench._common import percentile, progress
from bench._ws_http import Job
from bench._ws_phases import API, Ctx, _paced_measured, _statuses, stats_ms

RESUME_TARGET_S = 1.0


def phase_resume(ctx: Ctx) -> dict:
    p, w = ctx.plan, ctx.world
    groups = w.groups[: p.resume_channels]
    listeners = [m for _, members in groups for m in members]
    resumers = [m for _, members in groups for m in members[: len(members) // 2]]
    jobs = []
    for i in range(p.resume_posts):
        channel, members = groups[i % len(groups)]
        poster = members[(i // len(groups)) % len(members)]
        jobs.append(
            Job(
                i,
                "POST",
                f"{API}/channels/{channel}/messages",
                w.tokens[poster],
                json.dumps({"text": f"rt:r{i}"}).encode(),
            )
        )
    progress(
        f"phase 5: resume under traffic: {p.resume_posts:,} posts at {p.resume_rate:,}/s offered "
        f"({p.resume_in_flight} connections) into {len(groups)} private channels of {len(groups[0][1])}; "
        f"{len(resumers)} of the {len(listeners)} members leave after {p.resume_drop_after} of their channel's "
        f"messages and resume {p.resume_gap_s:g} s later"
    )
    ctx.fleet.follow(listeners, resumers, p.resume_drop_after, p.resume_gap_s)
    paced = _paced_measured(ctx, jobs, p.resume_rate, processes=1, in_flight=p.resume_in_flight)
    done = paced.pop("done")
    accepted = [d for d in done if d.status == 201]
    expected = {ch: {f"r{d.index}" for d in accepted if d.index % len(groups) == g} for g, (ch, _) in enumerate(groups)}
    channel_of = {m: ch for ch, members in groups for m in members}
    _wait_trails(ctx, sum(len(expected[channel_of[m]]) for m in listeners))
    trails, resumes, not_dropped = ctx.fleet.trails()
    last_accept = max((d.done for d in accepted), default=float("nan"))
    first_sent = min((d.sent for d in accepted), default=float("nan"))
    per = {m: _judge(trails.get(m, []), expected[channel_of[m]], last_accept) for m in listeners}
    out: dict[str, Any] = {
        "offered_per_s": p.resume_rate,
        "posts": len(done),
        "statuses": _statuses(done),
        "accepted_per_s": round(len(accepted) / (last_accept - first_sent), 1) if len(accepted) > 1 else None,
        "accept_ms": stats_ms([(d.done - d.sent) * 1000 for d in accepted]),
        "listeners": len(listeners),
        "resumers": len(resumers),
        "not_dropped": not_dropped,
        "resume_errors": {m: r["error"] for m, r in resumes.items() if "error" in r},
        "resumed": _summary([per[m] for m in resumers]),
        "stayed": _summary([per[m] for m in listeners if m not in resumers]),
        "hello_to_ready_ms": stats_ms(
            [(r["ready_at"] - r["hello_at"]) * 1000 for r in resumes.values() if "ready_at" in r]
        ),
        "resumed_at_s_after_first_post": stats_ms(
            [r["ready_at"] - first_sent for r in resumes.values() if "ready_at" in r]
        ),
        "cpu_pct_of_one_core": paced["cpu_pct_of_one_core"],
        "machine_cpu_pct": paced["machine_cpu_pct"],
    }
    # Resumes that were not under traffic (the posts were over first) test nothing.
    out["back_after_the_posts"] = sum(r["ready_at"] >= last_accept for r in resumes.values() if "ready_at" in r)
    out["ok"] = (
        not not_dropped
        and not out["resume_errors"]
        and out["resumed"]["complete_once_in_order"] == len(resumers)
        and out["resumed"]["after_last_accept_s"]["max"] < RESUME_TARGET_S
    )
    progress(
        f"  {len(accepted):,} accepted ({out['accepted_per_s']}/s); resumed clients: {out['resumed']}; "
        f"staying clients: {out['stayed']}; hello -> ready {out['hello_to_ready_ms']}"
    )
    return out


def _wait_trails(ctx: Ctx, expected: int, stall_s: float = 5.0, limit_s: float = 60) -> None:
    """Until the followed sockets have ``expected`` message frames, or none came for ``stall_s``."""
    began, last, last_change = time.monotonic(), -1, time.monotonic()
    while time.monotonic() - began < limit_s:
        got = ctx.fleet.trailed()
        if got >= expected:
            return
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change >= stall_s:
            return
        time.sleep(0.05)


def _judge(trail: list[tuple[str, int, float]], expected: set[str], last_accept: float) -> dict:
    """One listener: has it every expected message once and in log order; when the last came."""
    keys = [k for k, _, _ in trail]
    positions = [pos for _, pos, _ in trail]
    complete = set(keys) >= expected
    return {
        "complete": complete,
        "once": len(keys) == len(set(keys)),
        "in_order": all(a < b for a, b in itertools.pairwise(positions)),
        "after_last_accept_s": max(t for k, _, t in trail if k in expected) - last_accept if complete else float("inf"),
    }


def _summary(judged: list[dict]) -> dict:
    lags = sorted(j["after_last_accept_s"] for j in judged)
    return {
        "clients": len(judged),
        "complete_once_in_order": sum(j["complete"] and j["once"] and j["in_order"] for j in judged),
        "after_last_accept_s": {"p50": round(percentile(lags, 50), 3), "max": round(lags[-1], 3) if lags else None},
    }
