"""`hubbub projections ...` and `hubbub events ...` as an operator runs them: real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.eventstore.postgres import PostgresEventStore
from projections.registry import all_projections
from projections.runtime import ProjectorRunner
from projections.streams import StreamCatalog
from tests.contract.test_eventstore import new


def cli_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    return {**env, "HUBBUB_DATABASE_URL": url}


async def hubbub(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hubbub.cli",
        *args,
        env=cli_env(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def store(pool, migrated_url: str) -> AsyncIterator[PostgresEventStore]:
    s = PostgresEventStore(pool, migrated_url)
    yield s
    await s.close()


@pytest.fixture
async def live_catalog(pool, migrated_url: str, store: PostgresEventStore) -> AsyncIterator[ProjectorRunner]:
    """The `streams` projection running in this process, caught up with the log."""
    runner = ProjectorRunner(pool=pool, conninfo=migrated_url, store=store, projections=[StreamCatalog()])
    await runner.start()
    head = await store.head()
    for _ in range(600):
        if runner.is_leading("streams") and (await runner.positions()).get("streams", 0) >= head:
            break
        await asyncio.sleep(0.05)
    yield runner
    await runner.stop()


async def test_status_shows_position_head_lag_and_the_live_instance(migrated_url, live_catalog) -> None:
    result = await hubbub(migrated_url, "projections", "status")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "POSITION", "HEAD", "LAG", "UPDATED", "LIVE"]
    (line,) = [r for r in rows if r.startswith("streams ")]
    name, position, head, lag, *_ = line.split()
    assert int(position) <= int(head) and int(lag) >= 0
    assert "yes (pid " in line


async def test_rebuild_verify_reports_identical_and_swaps(migrated_url, store, live_catalog) -> None:
    await store.append(f"cli{uuid.uuid4().hex[:8]}-1", [new(1), new(2)])
    result = await hubbub(migrated_url, "projections", "rebuild", "streams", "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify streams: identical" in result.stdout
    assert "swapped in" in result.stdout
    assert "replayed" in result.stderr and "events/s" in result.stderr


async def test_rebuild_of_an_unknown_projection_names_the_known_ones(migrated_url) -> None:
    result = await hubbub(migrated_url, "projections", "rebuild", "nope")
    assert result.returncode == 2
    known = ", ".join(p.name for p in all_projections())
    assert result.stderr.strip() == f"hubbub: no projection named 'nope'; known projections: {known}"


async def test_export_writes_every_event_as_a_json_line(migrated_url, store, tmp_path: Path) -> None:
    stream = f"exp{uuid.uuid4().hex[:8]}-1"
    await store.append(stream, [new(1, "héllo"), new(2)])
    head = await store.head()
    out = tmp_path / "log.jsonl"
    result = await hubbub(migrated_url, "events", "export", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["position"] for e in lines] == sorted(e["position"] for e in lines)
    assert lines[-1]["position"] == head
    ours = [e for e in lines if e["stream_id"] == stream]
    assert [(e["version"], e["type"], e["data"]) for e in ours] == [
        (1, "test.noted", {"n": 1, "text": "héllo"}),
        (2, "test.noted", {"n": 2, "text": ""}),
    ]
    assert set(ours[0]) == {"position", "stream_id", "version", "event_id", "type", "data", "metadata", "recorded_at"}
    assert ours[0]["metadata"]["actor_id"] == "u1"
    assert f"exported {len(lines):,} events" in result.stderr
    assert not (tmp_path / "log.jsonl.partial").exists()


async def test_tail_prints_the_last_events_one_line_each(migrated_url, store) -> None:
    stream = f"tail{uuid.uuid4().hex[:8]}-1"
    await store.append(stream, [new(1), new(2), new(3)])
    result = await hubbub(migrated_url, "events", "tail", "-n", "3", "--no-follow")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for version, line in enumerate(lines, start=1):
        position, recorded_at, stream_id, v, type_, data = line.split("  ")
        assert (stream_id, v, type_) == (stream, f"v{version}", "test.noted")
        assert json.loads(data) == {"n": version, "text": ""}
        assert recorded_at.endswith("Z")


async def test_tail_follows_new_events_until_ctrl_c(migrated_url, store) -> None:
    stream = f"follow{uuid.uuid4().hex[:8]}-1"
    await store.append(stream, [new(1)])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hubbub.cli",
        "events",
        "tail",
        "-n",
        "1",
        env=cli_env(migrated_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert f"{stream}  v1" in first.decode()
        await store.append(stream, [new(2)])
        followed = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert f"{stream}  v2" in followed.decode()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
