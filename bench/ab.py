"""Posting, this checkout against another commit, in one run: ``python -m bench.ab [--base REF]``.

This machine's speed moves by a third or more between runs minutes apart, so two ``bench.post``
runs one after the other compare the machine as much as the code. Here both servers run at once
(``hubbub serve --workers 2`` each, with their own embedded durable services): the base from a
git worktree of ``--base`` (default ``HEAD``, i.e. what the working tree changes), this checkout
as it is. They are measured in alternating rounds (A B, B A, A B...) of phase 1 of
``bench/post.py``: 32 wrk clients posting into one channel, closed loop, after a short warm-up.
Each round's figures are posts/s and CPU per accepted post (server, PostgreSQL); the report gives
each side's median and B's ratio to A, and how many paired rounds B won.
Table on stdout, progress on stderr, ``bench/results/ab.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench._common import RESULTS_DIR, logs_to_stderr, machine_facts, markdown_table, progress
from bench._load import run_wrk, wrk_available
from bench._server import Server, running_server
from bench._setup import World, build
from bench.post import POSTERS, SERVER_SETTINGS, WORKERS, measured

REPO = Path(__file__).resolve().parent.parent
WARMUP_S = 1.5
BODY = '{"text":"hello from wrk, closed loop"}'


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[tuple[Path, str]]:
    """A detached git worktree of ``ref`` (removed afterwards) and the commit it names."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    path = Path(tempfile.mkdtemp(prefix="hubbub-ab-base-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-f", str(path), commit], cwd=REPO, check=True, capture_output=True
    )
    try:
        yield path, commit
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True)


def one_round(srv: Server, world: World, workdir: Path, seconds: float) -> dict:
    path = f"/api/v1/channels/{world.history_id}/messages"

    def go(s: float) -> dict:
        return run_wrk(
            srv.base_url,
            workdir,
            world.poster_tokens,
            method="POST",
            path=path,
            body=BODY,
            expected=201,
            connections=POSTERS,
            threads=2,
            seconds=s,
        )

    go(WARMUP_S)
    out = measured(srv, lambda: go(seconds))
    cpu, posts = out["component_cpu_pct_of_one_core"], out["ok_per_s"]
    return {
        "posts_per_s": posts,
        "server_ms": 10 * cpu["server"] / posts,
        "postgres_ms": 10 * cpu["postgres"] / posts,
        "p50_ms": out["latency_ms"]["p50"],
        "p99_ms": out["latency_ms"]["p99"],
        "machine_cpu_pct": out["machine_cpu_pct"],
        "unexpected_status": out["unexpected_status"],
    }


def run(base: str, rounds: int, seconds: float) -> dict:
    with (
        tempfile.TemporaryDirectory(prefix="hubbub-ab-") as tmp,
        worktree(base) as (tree, commit),
        running_server(WORKERS, SERVER_SETTINGS | {"PYTHONPATH": str(tree)}) as a,
        running_server(WORKERS, SERVER_SETTINGS) as b,
    ):
        progress(f"A = {commit} (worktree {tree}), B = this checkout; setting up both")
        worlds = [asyncio.run(build(srv.base_url, POSTERS, 2)) for srv in (a, b)]
        results: dict[str, list[dict]] = {"A": [], "B": []}
        for r in range(rounds):
            for side in "AB" if r % 2 == 0 else "BA":
                i = "AB".index(side)
                got = one_round((a, b)[i], worlds[i], Path(tmp), seconds)
                results[side].append(got)
                progress(
                    f"round {r + 1}/{rounds} {side}: {got['posts_per_s']:,.0f} posts/s, CPU per post server "
                    f"{got['server_ms']:.2f} / PostgreSQL {got['postgres_ms']:.2f} ms, p50 {got['p50_ms']:.1f} ms"
                )
        return {
            "base": base,
            "base_commit": commit,
            "rounds": rounds,
            "seconds": seconds,
            "machine": machine_facts(),
            "results": results,
        }


def report(out: dict) -> str:
    a, b = out["results"]["A"], out["results"]["B"]
    rows = []
    for key, label, better in [
        ("posts_per_s", "accepted posts/s", max),
        ("server_ms", "server CPU per post, ms", min),
        ("postgres_ms", "PostgreSQL CPU per post, ms", min),
        ("p50_ms", "latency p50, ms", min),
        ("p99_ms", "latency p99, ms", min),
    ]:
        ma, mb = statistics.median(x[key] for x in a), statistics.median(x[key] for x in b)
        wins = sum(better(x[key], y[key]) == y[key] != x[key] for x, y in zip(a, b, strict=True))
        rows.append([label, f"{ma:,.2f}", f"{mb:,.2f}", f"{mb / ma:.3f}", f"{wins} of {len(a)}"])
    table = markdown_table(
        ["median of the rounds", f"A ({out['base_commit']})", "B (this checkout)", "B / A", "rounds B did better"], rows
    )
    return table + (
        f"\n\n{out['rounds']} alternating rounds of {out['seconds']:.0f} s each side (32 wrk clients, one "
        f"channel, closed loop, `serve --workers {WORKERS}` each); posts/s per round, A: "
        f"{[round(x['posts_per_s']) for x in a]}, B: {[round(x['posts_per_s']) for x in b]}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the commit to compare with (default HEAD)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per side (default 6)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of posting per round (default 6)")
    args = parser.parse_args(argv)
    if not wrk_available():
        raise SystemExit("bench.ab needs wrk: apt-get install -y wrk")
    logs_to_stderr()
    out = run(args.base, args.rounds, args.seconds)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "ab.json").write_text(json.dumps(out, indent=2, default=str))
    print(report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
