"""Deleted files' blobs are removed, and that is recorded (``file.blobs_removed``).

The delete route removes them right after ``file.deleted`` is appended; if that fails (the
store is down, the process stops), the ``BlobJanitor`` of every app process finds the deleted
files whose blobs are not recorded as removed in the ``files`` read model and tries again,
at start and then every ``interval_s``. Removing is idempotent, so two processes racing do no
harm; the event is appended once (the decider records nothing the second time).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from commands.shell import CommandShell, Context
from domain import file as f
from infra.aio import cancel_and_wait
from infra.blobs import BlobStore
from projections.files import unpurged_files

log = structlog.get_logger(__name__)


async def purge(shell: CommandShell, blobs: BlobStore, file_id: str, ctx: Context) -> bool:
    """Remove a deleted file's blobs and record it; False if that failed (the janitor retries)."""
    stream = f.file_stream(file_id)
    try:
        state = (await shell.load(f.FILE, stream)).state
        if not state.deleted or state.blobs_removed:
            return True
        await blobs.delete(state.keys)
        await shell.handle(f.FILE, stream, f.RemoveBlobs(), ctx)
    except Exception as exc:  # noqa: BLE001 - the janitor tries again; the deletion itself stands
        log.warning("file.purge_failed", file_id=file_id, error=repr(exc))
        return False
    log.info("file.blobs_removed", file_id=file_id, keys=len(state.keys))
    return True


class BlobJanitor:
    def __init__(
        self, shell: CommandShell, blobs: BlobStore, pool: AsyncConnectionPool, interval_s: float = 300.0
    ) -> None:
        self.shell, self.blobs, self.pool, self.interval_s = shell, blobs, pool, interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="blob-janitor")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def sweep(self) -> int:
        """Purge every deleted file still holding blobs; how many were purged."""
        ctx = Context(actor_id=None, now=dt.datetime.now(dt.UTC))
        done = 0
        for file_id in await unpurged_files(self.pool):
            done += await purge(self.shell, self.blobs, file_id, ctx)
        return done

    async def _run(self) -> None:
        await asyncio.sleep(min(self.interval_s, 30.0))  # after the projections made their tables
        while True:
            try:
                await self.sweep()
            except psycopg.errors.UndefinedTable:
                pass  # the files read model is being rebuilt: next time
            except Exception as exc:  # noqa: BLE001 - a database or store outage: next time
                log.warning("file.janitor_failed", error=repr(exc))
            await asyncio.sleep(self.interval_s)
