"""The server side of the realtime benchmark: the ``hubbub serve`` worker processes (each one a
gateway), their memory, which sockets each holds, their CPU, and a NATS observer of presence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import msgspec
import psutil


def workers(server_pid: int) -> list[psutil.Process]:
    """uvicorn's worker processes (multiprocessing spawn children of ``hubbub serve``)."""
    found = []
    for child in psutil.Process(server_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
    return sorted(found, key=lambda p: p.pid)


def memory(procs: list[psutil.Process]) -> dict[str, int]:
    """RSS and USS (bytes) per worker pid, and their sums."""
    out: dict[str, int] = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            info = p.memory_full_info()
            out[f"rss_{p.pid}"], out[f"uss_{p.pid}"] = info.rss, info.uss
    out["rss"] = sum(v for k, v in out.items() if k.startswith("rss_"))
    out["uss"] = sum(v for k, v in out.items() if k.startswith("uss_"))
    return out


def settled_memory(procs: list[psutil.Process], wait_s: float = 3.0) -> dict[str, int]:
    """Memory after ``wait_s`` of quiet, the lower of two samples a second apart (a sample taken
    during a heartbeat burst or a GC pass shows transient allocations)."""
    time.sleep(wait_s)
    first = memory(procs)
    time.sleep(1.0)
    second = memory(procs)
    return first if first["rss"] <= second["rss"] else second


def socket_owner(procs: list[psutil.Process], port: int) -> dict[int, int]:
    """client port -> the worker pid that holds the server end of that connection."""
    owner: dict[int, int] = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            for c in p.net_connections(kind="tcp"):
                if c.laddr and c.laddr.port == port and c.raddr and c.status == psutil.CONN_ESTABLISHED:
                    owner[c.raddr.port] = p.pid
    return owner


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


class PresenceObserver:
    """Every message on ``hubbub.ws.{ws}.presence`` (what PresenceFanout publishes), with the
    ``time.monotonic()`` it arrived, read by a NATS client in a thread of the benchmark."""

    def __init__(self, nats_url: str, workspace_id: str) -> None:
        self.url, self.subject = nats_url, f"hubbub.ws.{workspace_id}.presence"
        self.frames: list[tuple[float, list[tuple[str, str]]]] = []
        """(arrival, [(user_id, status), ...]) per message."""
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.error: str | None = None

    def __enter__(self) -> PresenceObserver:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError(f"NATS observer did not start: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        import nats

        try:
            nc = await nats.connect(self.url, name="bench-presence-observer")
        except Exception as exc:  # noqa: BLE001
            self.error = repr(exc)
            return

        async def got(msg) -> None:
            t = time.monotonic()
            with contextlib.suppress(msgspec.DecodeError, KeyError, TypeError):
                self.frames.append((t, _statuses(msgspec.json.decode(msg.data)["data"])))

        await nc.subscribe(self.subject, cb=got)
        await nc.flush()
        self._ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.1)
        await nc.drain()


def _statuses(data: dict) -> list[tuple[str, str]]:
    """(user_id, status) of each person in a presence.changed frame's ``data`` (ids by status)."""
    return (
        [(u, "online") for u in data["online"]]
        + [(u, "away") for u in data["away"]]
        + [(i["user_id"], "offline") for i in data["offline"]]
    )


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """The most of ``times`` (sorted) that fall in any half-open window of ``window_s``."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def log_summary(path: Path) -> dict[str, object]:
    """How often each warning or error event appears in the server's JSON log, with the first
    ``error`` text of each."""
    seen: Counter[str] = Counter()
    example: dict[str, str] = {}
    with contextlib.suppress(OSError), open(path, errors="replace") as lines:
        for line in lines:
            if '"level"' not in line or '"info"' in line:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") not in ("info", "debug"):
                    key = f"{entry.get('level')} {entry.get('event')}"
                    seen[key] += 1
                    example.setdefault(key, str(entry.get("error") or entry.get("exception") or "")[:300])
    return {key: {"count": n, "first_error": example[key]} for key, n in seen.most_common(20)}


PYOBJECTS_PATH = str(Path(__file__).resolve().parent / "_pyobjects")
"""Put on the server's ``PYTHONPATH`` with ``BENCH_TRACEMALLOC_DIR`` set: see its sitecustomize."""


def python_objects(procs: list[psutil.Process], directory: Path, timeout_s: float = 30.0) -> int:
    """Bytes of Python objects the workers hold (``bench/_pyobjects``), summed, each after a full
    collection: every worker is asked by ``SIGUSR1`` and answers with a file."""
    total = 0
    for p in procs:
        path = directory / f"{p.pid}.json"
        path.unlink(missing_ok=True)
        p.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"worker {p.pid} did not report its Python objects (is bench/_pyobjects on its path?)")
            time.sleep(0.05)
        total += json.loads(path.read_text())["traced"]
    return total
