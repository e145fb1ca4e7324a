"""Small asyncio helpers that keep cancellation intact."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
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
