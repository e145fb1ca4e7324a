"""The leftover sweeper (``infra/blob_sweep.py``): at start, then periodically, what uploads that
never finished left behind is removed once it is older than the grace period, and only that."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from structlog.testing import capture_logs

from infra.blob_sweep import GRACE_S, LeftoverSweeper
from infra.blobs import open_blob_store


def leftover(root: Path, name: str, age_s: float) -> Path:
    path = root / "ws" / "file" / name / "original.part"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half an upload")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


async def test_the_sweeper_removes_old_leftovers_at_start_and_keeps_everything_else(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = open_blob_store(f"file://{root}")
    old = leftover(root, "crashed", GRACE_S + 60)
    recent = leftover(root, "uploading", GRACE_S - 60)
    await store.put("ws/file/done/original", b"a committed blob")
    sweeper = LeftoverSweeper(store, interval_s=3600)
    with capture_logs() as logs:
        sweeper.start()
        try:
            for _ in range(100):
                if not old.exists():
                    break
                await asyncio.sleep(0.05)
        finally:
            await sweeper.stop()
            await store.close()
    assert not old.exists()
    assert recent.exists() and (root / "ws/file/done/original").read_bytes() == b"a committed blob"
    swept = [e for e in logs if e["event"] == "blobs.leftovers_swept"]
    assert len(swept) == 1 and swept[0]["removed"] == 1 and swept[0]["log_level"] == "info"


async def test_the_sweeper_sweeps_again_after_its_interval(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = open_blob_store(f"file://{root}")
    sweeper = LeftoverSweeper(store, interval_s=0.05)
    sweeper.start()
    try:
        await asyncio.sleep(0.2)
        later = leftover(root, "crashed-later", GRACE_S + 60)
        for _ in range(100):
            if not later.exists():
                break
            await asyncio.sleep(0.05)
        assert not later.exists()
    finally:
        await sweeper.stop()
        await store.close()


async def test_a_store_that_fails_is_logged_and_tried_again(tmp_path: Path) -> None:
    class Failing:
        calls = 0

        async def sweep_leftovers(self, before: object) -> int:
            self.calls += 1
            raise OSError("the store is down")

    store = Failing()
    sweeper = LeftoverSweeper(store, interval_s=0.05)  # type: ignore[arg-type]
    with capture_logs() as logs:
        sweeper.start()
        await asyncio.sleep(0.3)
        await sweeper.stop()
    assert store.calls >= 2
    assert any(e["event"] == "blobs.leftover_sweep_failed" and e["log_level"] == "warning" for e in logs)
