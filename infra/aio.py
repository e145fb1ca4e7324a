"""Small asyncio helpers that keep cancellation intact."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """True once ``event`` is set, False after ``timeout`` seconds.

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that arrives just as the
    event is set (CPython gh-86296, fixed in 3.12), and a task stopped that way keeps running; the
    app's shutdown then waits for it forever. ``asyncio.timeout`` delivers every cancellation.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    """Cancel ``tasks`` and wait up to ``timeout`` seconds for them to end.

    A task that swallows its cancellation (a library bug) is logged and left behind rather than
    hanging the shutdown that called this.
    """
    tasks = [task for task in tasks if not task.done()]
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=timeout)
    for task in stuck:
        log.warning("task.ignored_cancellation", task=task.get_name(), waited_s=timeout)


CLOSE_TIMEOUT_S = 5.0


async def close_within(what: str, close: Callable[[], Awaitable[object]], timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Await ``close()`` for ``timeout`` seconds at most; past that, cancel it, log what was given
    up on, and return, so that a shutdown always ends. Its error, if it ends with one, is raised.

    A NATS server that stopped reading (SIGSTOP, a hung host) made nats-py's close wait forever
    for it to take the unsent data (tests/faults/test_shutdown_faults.py). The close runs as a
    task waited on with ``asyncio.wait``, not inside ``asyncio.timeout`` or ``wait_for``, because a
    close may swallow the cancellation and go on waiting: nats-py's ``_flush_pending`` catches
    CancelledError (a publish under ``wait_for`` on a stopped server never returned).
    """
    task = asyncio.ensure_future(close())
    task.add_done_callback(_retrieve)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        log.warning("shutdown.gave_up", what=what, waited_s=timeout)
        return
    task.result()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A close given up on may fail later: that is no news (and no 'never retrieved' warning)."""
    if not task.cancelled():
        task.exception()
