import asyncio

import pytest

from infra.aio import cancel_and_wait, wait_event


async def test_a_wait_cancelled_as_its_event_fires_is_still_cancelled() -> None:
    # The race that let asyncio.wait_for (Python 3.11) swallow a shutdown's cancellation.
    event = asyncio.Event()
    task = asyncio.create_task(wait_event(event, 10))
    await asyncio.sleep(0)
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_wait_event_says_whether_the_event_fired() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0.01) is True


async def test_a_task_that_ignores_cancellation_does_not_hang_the_caller() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await cancel_and_wait([task], timeout=0.05)
    assert not task.done()
    release.set()
    task.cancel()
    await asyncio.wait([task])
