import asyncio

import pytest
import structlog

from infra.aio import cancel_and_wait, close_within, wait_event


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


async def test_a_close_that_ignores_cancellation_is_given_up_on_and_named() -> None:
    release = asyncio.Event()

    async def stubborn_close() -> None:  # as nats-py's _flush_pending: catches CancelledError, waits on
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    with structlog.testing.capture_logs() as logs:
        closing = asyncio.create_task(close_within("stubborn", stubborn_close, timeout=0.05))
        done, _ = await asyncio.wait({closing}, timeout=2)  # not wait_for: it would wait for the stubborn one
    release.set()
    assert closing in done
    assert [(e["event"], e["what"]) for e in logs] == [("shutdown.gave_up", "stubborn")]
    await closing


async def test_a_close_within_its_bound_is_awaited_and_its_error_raised() -> None:
    closed = []

    async def close() -> None:
        await asyncio.sleep(0.01)
        closed.append(True)

    async def failing_close() -> None:
        raise ConnectionError("gone")

    await close_within("quick", close, timeout=1)
    assert closed == [True]
    with pytest.raises(ConnectionError):
        await close_within("failing", failing_close, timeout=1)
