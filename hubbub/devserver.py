"""``hubbub dev`` (embedded services) and ``hubbub serve`` (external ones).

Everything a user can get wrong is checked before anything starts, and each problem is one line
on stderr that says what to do. Ctrl-C and SIGTERM are only *recorded* while services start and
stop, so a signal never cuts start-up or shut-down in half: the server stops first, then every
embedded service, and nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import pwd
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import psutil
import uvicorn
import uvicorn.config

from infra.embedded import EmbeddedError
from infra.logging import configure_logging
from infra.settings import Settings, load_settings

PID_FILE = "hubbub.pid"
WS_MAX_BYTES = 1024 * 1024
"""uvicorn's cap on one WebSocket message (its default, 16 MiB, would be held in memory before the
gateway's own 64 KiB check): frames up to this get the gateway's ``too_large`` error frame,
bigger ones close the socket with 1009.

Both servers also turn permessage-deflate off: uvicorn compresses every frame again for every
socket, so one message to 10,000 sockets was compressed 10,000 times (bench/realtime.py: ~42% of
a worker, fan-out to 10,000 in 31 s instead of 1.3 s, twice the memory per socket)."""
UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "lifespan": "on",
    "ws_max_size": WS_MAX_BYTES,
    "ws_per_message_deflate": False,
    "ws": "realtime.wire:GatewayProtocol",
    "ws_ping_interval": None,
    # The app works out the client's address itself, trusting only HUBBUB_TRUSTED_PROXIES
    # (infra/client_address.py); uvicorn's own rewrite trusts X-Forwarded-For from 127.0.0.1.
    "proxy_headers": False,
}
"""How both servers run uvicorn (tests that serve the app over a real socket use it too)."""
_URLS = {
    "database_url": "HUBBUB_DATABASE_URL (postgresql://...)",
    "nats_url": "HUBBUB_NATS_URL (nats://...)",
    "redis_url": "HUBBUB_REDIS_URL (redis://...)",
}


class StartError(Exception):
    """Hubbub cannot start as asked; the message (one line) says what to do instead."""


def dev(args: argparse.Namespace) -> int:
    from hubbub.services import resolved

    # A person at a terminal reads console lines; a pipe or a file gets JSON (unless set either way).
    console = "console" if sys.stderr.isatty() and "HUBBUB_LOG_FORMAT" not in os.environ else None
    settings = load_settings(host=args.host, port=args.port, data_dir=args.data_dir, log_format=console)
    configure_logging(settings.log_level, settings.log_format)
    shown = settings.data_dir
    try:
        data_dir = check_data_dir(Path(shown), shown)
        with pid_file(data_dir / PID_FILE, shown), _signals_recorded() as stop:
            check_port(settings.host, settings.port)
            with resolved(settings) as full:
                return 0 if stop else _run(full, stop, f"data in {shown}; Ctrl-C to stop")
    except (StartError, EmbeddedError) as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 1


def serve(args: argparse.Namespace) -> int:
    settings = load_settings(host=args.host, port=args.port)
    try:
        check_external(settings)
        if args.workers < 1:
            raise StartError(f"--workers must be at least 1, not {args.workers}")
        configure_logging(settings.log_level, settings.log_format)
        check_port(settings.host, settings.port)
        if args.workers > 1:
            return _run_workers(settings, args.workers)
        with _signals_recorded() as stop:
            return _run(settings, stop, "Ctrl-C to stop")
    except StartError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 1


# -- checks before anything starts -----------------------------------------------------------------


def check_data_dir(path: Path, shown: str) -> Path:
    if not path.exists():
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise StartError(f"cannot create data dir {shown}: {exc.strerror}; pass --data-dir") from None
    if not path.is_dir():
        raise StartError(f"data dir {shown} is not a directory; pass --data-dir")
    owner = path.stat().st_uid
    if owner != os.geteuid():
        raise StartError(
            f"data dir {shown} belongs to uid {owner} ({_user_name(owner)}); run as that user or pass --data-dir"
        )
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise StartError(f"data dir {shown} is not writable; chmod u+rwx {shown} or pass --data-dir")
    return path


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no such user"


def check_port(host: str, port: int) -> None:
    if port == 0:
        return  # the system picks a free one
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartError(f"port {port} is in use; stop what uses it or pass --port") from None
            raise StartError(f"cannot listen on {host}:{port}: {exc.strerror}; pass --host or --port") from None


def check_external(settings: Settings) -> None:
    for field, name in _URLS.items():
        if getattr(settings, field) is None:
            raise StartError(f"serve needs {name}; use hubbub dev for the embedded services")


@contextlib.contextmanager
def pid_file(path: Path, shown: str) -> Iterator[None]:
    """One ``hubbub dev`` per data dir. A pid file left by a crash is removed with a note."""
    _remove_if_stale(path, shown)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise StartError(f"another hubbub dev is starting on data dir {shown}; wait, or pass --data-dir") from None
    with os.fdopen(fd, "w") as out:
        out.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        if _pid_in(path) == os.getpid():
            path.unlink(missing_ok=True)


def _remove_if_stale(path: Path, shown: str) -> None:
    pid = _pid_in(path)
    if pid is None and not path.exists():
        return
    if pid is not None and _is_running_hubbub(pid, path):
        raise StartError(
            f"hubbub dev (pid {pid}) is already running on data dir {shown}; stop it (kill {pid}) or pass --data-dir"
        )
    path.unlink(missing_ok=True)
    print(f"hubbub: removed stale pid file {path} (pid {pid} is not running)", file=sys.stderr)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_running_hubbub(pid: int, path: Path) -> bool:
    # After a crash and a reboot the pid may belong to anything, even to another hubbub started
    # later: it counts only if it is a hubbub process that was already running when the file was written.
    if pid == os.getpid():
        return False
    try:
        proc = psutil.Process(pid)
        return (
            "hubbub" in " ".join(proc.cmdline())
            and proc.status() != psutil.STATUS_ZOMBIE
            and proc.create_time() <= path.stat().st_mtime + 1
        )
    except (psutil.Error, FileNotFoundError):
        return False


# -- running -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_recorded() -> Iterator[list[int]]:
    """SIGINT/SIGTERM append to the yielded list instead of interrupting; uvicorn installs its
    own handlers while it serves and hands the signal back to these when it has shut down."""
    received: list[int] = []
    handlers = {
        sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield received
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


class _Server(uvicorn.Server):
    """uvicorn, announcing where it listens once the app has started, and stopping for a
    signal that arrived before its own handlers were in place."""

    def __init__(self, config: uvicorn.Config, stop: list[int], note: str) -> None:
        super().__init__(config)
        self.stop, self.note = stop, note

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"Hubbub is running at http://{_url_host(self.config.host)}:{port} ({self.note})", flush=True)

    async def on_tick(self, counter: int) -> bool:
        return await super().on_tick(counter) or bool(self.stop)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _run(settings: Settings, stop: list[int], note: str) -> int:
    from hubbub.app import create_app

    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, **UVICORN_OPTIONS)
    try:
        _event_loop_run(_Server(config, stop, note).serve())
    except SystemExit as exc:  # uvicorn exits this way when the app or the socket fails at start
        if exc.code not in (0, None):
            raise StartError("the server did not start; the log above says why") from None
    return 0


def _event_loop_run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop when it is installed (uvicorn[standard] brings it), as uvicorn
    itself picks for ``--workers``: one worker served on asyncio's own loop took ~25% more CPU."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _bind_tcp_socket(config: uvicorn.Config) -> socket.socket:
    """uvicorn's multi-worker listener, made as IPPROTO_TCP (uvicorn issue #3149).

    uvicorn creates it with proto=0; accepted sockets inherit that, and asyncio sets TCP_NODELAY
    only when proto is IPPROTO_TCP. With Nagle left on, every keep-alive response that leaves in
    two writes waits ~40 ms for the client's delayed ACK (measured by bench/post.py: a reused
    connection's /healthz took 44 ms, 1.1 ms with this)."""
    family = socket.AF_INET6 if config.host and ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.set_inheritable(True)
    return sock


def _run_workers(settings: Settings, workers: int) -> int:
    uvicorn.config.Config.bind_socket = _bind_tcp_socket  # type: ignore[method-assign]
    print(
        f"Hubbub is starting {workers} workers at http://{_url_host(settings.host)}:{settings.port} (Ctrl-C to stop)",
        flush=True,
    )
    uvicorn.run(
        "hubbub.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        **UVICORN_OPTIONS,
    )
    return 0
