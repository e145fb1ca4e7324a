"""The embedded servers listen on loopback, where every local user can reach them: each asks for
a secret that only the data dir's owner can read, none runs as root, and a data dir made by an
older Hubbub (PostgreSQL trusting everyone) is secured on its next start with its data kept."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import psutil
import psycopg
import pytest
import redis
import structlog

from infra.embedded import (
    SECRETS_FILE, STATE_FILE, EmbeddedServices, Service, _alive, _give_to, _pg_bin, free_port, run_as, service_user,
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
        groups = next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if line.startswith("Groups:"))
        assert "0" not in groups.split()[1:], (proc.cmdline(), groups)


def _make_trusting_data_dir(data_dir: Path) -> None:
    """A data dir as Hubbub made it before passwords: initdb --auth=trust, a row in it."""
    pgdata, user, port = data_dir / "postgres", service_user(), free_port()
    _give_to(pgdata, user)
    subprocess.run([_pg_bin("initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--no-sync"],
                   check=True, capture_output=True, **run_as(user))
    subprocess.run([_pg_bin("pg_ctl"), "-D", str(pgdata), "-l", str(pgdata / "server.log"), "-w",
                    "-o", f"-h 127.0.0.1 -p {port} -k ''", "start"], check=True, capture_output=True, **run_as(user))
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE hubbub")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/hubbub", autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (note text)")
            conn.execute("INSERT INTO kept VALUES ('from before passwords')")
    finally:
        subprocess.run([_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
                       check=True, capture_output=True, **run_as(user))


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
