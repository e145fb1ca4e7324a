"""``hubbub`` as a user runs it: a subprocess, real embedded services, real signals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from infra.embedded import free_port

HUBBUB = str(Path(sys.executable).parent / "hubbub")
START_TIMEOUT_S = 90


def _env() -> dict[str, str]:
    # No HUBBUB_* from the outside: these tests are about the embedded services.
    return {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HUBBUB, *args], capture_output=True, text=True, timeout=timeout, env=_env())


class Dev:
    """A running ``hubbub dev``: its process, its URL, and what it wrote on stderr."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.stderr_path = data_dir.parent / f"dev-{port}.stderr"
        self.stderr = open(self.stderr_path, "w")  # noqa: SIM115 - open while the server runs; closed by stop()
        self.proc = subprocess.Popen(
            [HUBBUB, "dev", "--data-dir", str(data_dir), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=_env(),
        )
        self.banner = self._first_line()
        self.url = f"http://127.0.0.1:{port}"

    def _first_line(self) -> str:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not line or not line[0]:
            self.proc.kill()
            raise AssertionError(f"hubbub dev did not start:\n{self.stderr_path.read_text()[-3000:]}")
        return line[0].strip()

    def errors(self) -> str:
        return self.stderr_path.read_text()

    def services(self) -> dict[str, dict]:
        return json.loads((self.data_dir / "services.json").read_text())

    def service_pids(self) -> set[int]:
        pids = {s["pid"] for s in self.services().values()}
        postmaster = self.services()["postgres"]["pid"]
        return pids | {child.pid for child in psutil.Process(postmaster).children(recursive=True)}

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        finally:
            self.stderr.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    _stop_leftovers(path)


def _stop_leftovers(data_dir: Path) -> None:
    """If a test failed half-way, do not leave its servers running (only ones we started)."""
    state = data_dir / "services.json"
    if state.exists():
        for service in json.loads(state.read_text()).values():
            if _runs_from(service["pid"], data_dir):
                psutil.Process(service["pid"]).terminate()


def _runs_from(pid: int, data_dir: Path) -> bool:
    try:
        return str(data_dir) in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(data_dir) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _assert_all_gone(dev: Dev, pids: set[int]) -> None:
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running after stop: {alive}"
    assert not _processes_using(dev.data_dir)
    assert not (dev.data_dir / "hubbub.pid").exists()


def _only_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- help ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["dev"],
        ["serve"],
        ["migrate"],
        ["projections"],
        ["projections", "status"],
        ["projections", "rebuild"],
        ["events"],
        ["events", "tail"],
        ["events", "export"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: hubbub")


# -- bad input: one line, exit code != 0 ------------------------------------------------------------


def test_dev_on_a_busy_port_says_so(data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run("dev", "--data-dir", str(data_dir), "--port", str(port))
    assert result.returncode != 0
    assert _only_line(result.stderr) == f"hubbub: port {port} is in use; stop what uses it or pass --port"


def test_dev_refuses_a_data_dir_owned_by_someone_else(data_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    data_dir.mkdir()
    os.chown(data_dir, 65534, 65534)
    result = _run("dev", "--data-dir", str(data_dir), "--port", str(free_port()))
    assert result.returncode != 0
    assert _only_line(result.stderr).startswith(f"hubbub: data dir {data_dir} belongs to uid 65534 (")
    assert "run as that user or pass --data-dir" in result.stderr


def test_dev_refuses_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("")
    result = _run("dev", "--data-dir", str(path), "--port", str(free_port()))
    assert result.returncode != 0
    assert _only_line(result.stderr) == f"hubbub: data dir {path} is not a directory; pass --data-dir"


def test_a_bad_setting_is_one_line(data_dir: Path) -> None:
    result = subprocess.run(
        [HUBBUB, "dev", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=_env() | {"HUBBUB_REDIS_URL": "localhost:6379"},
        timeout=60,
    )
    assert result.returncode != 0
    assert _only_line(result.stderr).startswith("hubbub: HUBBUB_REDIS_URL is not a redis://")


def test_serve_needs_external_urls() -> None:
    result = _run("serve", "--port", str(free_port()))
    assert result.returncode != 0
    assert _only_line(result.stderr) == (
        "hubbub: serve needs HUBBUB_DATABASE_URL (postgresql://...); use hubbub dev for the embedded services"
    )


# -- running ---------------------------------------------------------------------------------------


def test_dev_serves_and_stops_everything_on_ctrl_c(data_dir: Path) -> None:
    port = free_port()
    dev = Dev(data_dir, port)
    assert dev.banner == f"Hubbub is running at http://127.0.0.1:{port} (data in {data_dir}; Ctrl-C to stop)"
    assert httpx.get(f"{dev.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{dev.url}/readyz").status_code == 200
    assert int((data_dir / "hubbub.pid").read_text()) == dev.proc.pid

    second = _run("dev", "--data-dir", str(data_dir), "--port", str(free_port()))
    assert second.returncode != 0
    assert _only_line(second.stderr) == (
        f"hubbub: hubbub dev (pid {dev.proc.pid}) is already running on data dir "
        f"{data_dir}; stop it (kill {dev.proc.pid}) or pass --data-dir"
    )

    pids = dev.service_pids()
    assert dev.stop(signal.SIGINT) == 0
    _assert_all_gone(dev, pids)
    assert "Traceback" not in dev.errors()


@pytest.mark.parametrize("crash", ["dev", "everything"])
def test_a_killed_dev_restarts_on_the_same_data_and_loses_nothing(data_dir: Path, crash: str) -> None:
    dev = Dev(data_dir, free_port())
    servers = dev.service_pids()
    with psycopg.connect(dev.services()["postgres"]["url"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (stream_id, version, event_id, type, data)"
            " VALUES ('test-survivor', 1, gen_random_uuid(), 'test.survived', '{}')"
        )
    dev.proc.kill()  # kill -9: no clean-up at all; its servers and its pid file stay behind
    dev.proc.wait(10)
    dev.stderr.close()
    assert (data_dir / "hubbub.pid").exists()
    if crash == "everything":  # as after a power cut: the servers die too, without clean-up
        for pid in servers:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        psutil.wait_procs([p for p in map(_process, servers) if p], timeout=10)

    again = Dev(data_dir, free_port())
    assert f"removed stale pid file {data_dir / 'hubbub.pid'} (pid {dev.proc.pid} is not running)" in again.errors()
    assert httpx.get(f"{again.url}/readyz").status_code == 200
    with psycopg.connect(again.services()["postgres"]["url"]) as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE stream_id = 'test-survivor'").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 1

    pids = again.service_pids()
    assert again.stop(signal.SIGTERM) == 0
    _assert_all_gone(again, pids)


def test_a_stale_pid_file_is_removed_with_a_note(data_dir: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    data_dir.mkdir()
    (data_dir / "hubbub.pid").write_text(f"{gone.pid}\n")
    dev = Dev(data_dir, free_port())
    assert f"hubbub: removed stale pid file {data_dir / 'hubbub.pid'} (pid {gone.pid} is not running)" in dev.errors()
    assert httpx.get(f"{dev.url}/healthz").status_code == 200
    pids = dev.service_pids()
    assert dev.stop() == 0
    _assert_all_gone(dev, pids)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_runs_against_external_services(
    tmp_path: Path, service_urls: dict[str, str], migrated_url: str, workers: int
) -> None:
    port = free_port()
    env = _env() | {
        "HUBBUB_DATABASE_URL": migrated_url,
        "HUBBUB_NATS_URL": service_urls["nats"],
        "HUBBUB_REDIS_URL": service_urls["redis"],
    }
    with open(tmp_path / "serve.stderr", "w") as stderr:
        proc = subprocess.Popen(
            [HUBBUB, "serve", "--port", str(port), "--workers", str(workers)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        try:
            assert _wait_ready(f"http://127.0.0.1:{port}/readyz"), (tmp_path / "serve.stderr").read_text()[-3000:]
            children = psutil.Process(proc.pid).children(recursive=True)
            assert len(children) >= (workers if workers > 1 else 0)
            httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"x-request-id": "one-line-please"})
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    # Workers (and multiprocessing's resource tracker) finish a moment after the parent; give
    # them a bounded while, then none may be left.
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not [c for c in alive if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    logged = (tmp_path / "serve.stderr").read_text()
    assert "Traceback" not in logged
    # One access line per request, ours (with the request id): not uvicorn's as well.
    assert [line for line in logged.splitlines() if "/healthz" in line and "GET" in line] == [
        line for line in logged.splitlines() if "one-line-please" in line and "http.request" in line
    ]
    assert "one-line-please" in logged


def _wait_ready(url: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        time.sleep(0.2)
    return False
