"""A real Hubbub server for HTTP benchmarks: durable embedded PostgreSQL, NATS and Redis in a temp
dir, ``hubbub serve --workers N`` against them, and CPU accounting per component."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench._common import progress


@dataclass
class Server:
    base_url: str
    database_url: str
    workers: int
    env: dict[str, str]
    proc: subprocess.Popen
    pids: dict[str, int]
    """Root process of each component: ``server`` (hubbub serve), ``postgres``, ``nats``, ``redis``."""
    log_path: Path
    data_dir: Path
    notes: list[str] = field(default_factory=list)


SETUP_SETTINGS = {"HUBBUB_RATE_REGISTER_PER_S": "1000000", "HUBBUB_RATE_REGISTER_BURST": "1000000"}
"""Set-up registers up to thousands of accounts from one address. Given only to a tree whose
settings have them (``bench.ab``'s base may predate them, and would refuse to start)."""


def server_env(urls: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    env |= {
        "HUBBUB_DATABASE_URL": urls["postgres"],
        "HUBBUB_NATS_URL": urls["nats"],
        "HUBBUB_REDIS_URL": urls["redis"],
        "HUBBUB_LOG_FORMAT": "json",
    }
    tree = Path(overrides.get("PYTHONPATH") or Path(__file__).resolve().parent.parent)
    known = (tree / "infra" / "settings.py").read_text()
    env |= {k: v for k, v in SETUP_SETTINGS.items() if k.removeprefix("HUBBUB_").lower() in known}
    return env | overrides


@contextlib.contextmanager
def running_server(workers: int, overrides: dict[str, str]) -> Iterator[Server]:
    """Embedded durable services + ``hubbub serve --workers N``; everything stopped afterwards."""
    from infra.embedded import EmbeddedServices, free_port

    tmp = Path(tempfile.mkdtemp(prefix="hubbub-bench-post-"))
    services = EmbeddedServices(tmp / "services", durable=True)
    proc = None
    try:
        progress(f"starting embedded durable PostgreSQL, NATS, Redis under {tmp}")
        started = services.start()
        urls = {name: s.url for name, s in started.items()}
        env = server_env(urls, overrides)
        port = free_port()
        log_path = tmp / "hubbub-serve.log"
        hubbub = [str(Path(sys.executable).parent / "hubbub")]
        argv = [*hubbub, "serve", "--port", str(port), "--workers", str(workers)]
        progress(f"starting: {' '.join(argv[len(hubbub) - 1 :])}")
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
        base = f"http://127.0.0.1:{port}"
        _wait_ready(proc, base, log_path, time.monotonic() + 90)
        pids = {"server": proc.pid} | {name: s.pid for name, s in started.items()}
        yield Server(base, urls["postgres"], workers, env, proc, pids, log_path, tmp)
    finally:
        if proc is not None:
            _stop(proc)
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen, base: str, log_path: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"hubbub serve exited with {proc.returncode}:\n{_tail(log_path)}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise SystemExit(f"hubbub serve not ready in time:\n{_tail(log_path)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# -- CPU per component ------------------------------------------------------------------------------


def _tree_cpu(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


class ComponentCpu:
    """CPU seconds of each component's process tree between ``start`` and ``stop``, as % of one
    core. Processes that end inside the window lose their time (pooled connections rarely do)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self._began = time.monotonic()
        self._before = {name: _tree_cpu(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._began
        return {name: round(100 * (_tree_cpu(pid) - self._before[name]) / wall, 1) for name, pid in self.pids.items()}
