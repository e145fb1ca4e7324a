"""Leftovers of uploads that never finished are removed: at start, then every ``interval_s``.

A server killed mid-upload leaves its ``.part`` file (local disk) or its incomplete multipart
upload (S3), which nothing else would ever remove (``infra/blobs.py``). Every app process sweeps
what is older than ``grace_s`` (a day by default: longer than any upload can take, so an upload
still running in another process is never touched). Sweeping is idempotent: two processes
racing remove each leftover once between them. One ``blobs.leftovers_swept`` log line per sweep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable

import structlog

from infra.aio import cancel_and_wait
from infra.blobs import BlobStore

log = structlog.get_logger(__name__)

GRACE_S = 86_400.0
INTERVAL_S = 3_600.0


class LeftoverSweeper:
    def __init__(
        self,
        blobs: BlobStore,
        *,
        grace_s: float = GRACE_S,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.blobs, self.grace_s, self.interval_s, self.clock = blobs, grace_s, interval_s, clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="blob-leftover-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def sweep(self) -> int:
        """Remove the leftovers older than the grace period; how many."""
        started = time.perf_counter()
        before = self.clock() - dt.timedelta(seconds=self.grace_s)
        removed = await self.blobs.sweep_leftovers(before)
        log.info(
            "blobs.leftovers_swept",
            removed=removed,
            older_than=before.isoformat(),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return removed

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - the store is down: next time
                log.warning("blobs.leftover_sweep_failed", error=repr(exc))
            await asyncio.sleep(self.interval_s)
