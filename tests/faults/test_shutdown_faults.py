"""Faults at shutdown: a dependency that stopped answering must not hold up the app's shutdown.

NATS is stopped with SIGSTOP, as a hung host or a network partition leaves it: its connections
stay open and nothing is read. The app had messages on their way to it, so its NATS client's
close waits for the server to take them, forever. The shutdown must give up on it within its
bound and say so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from litestar import Litestar

from hubbub import deps
from hubbub.app import create_app
from infra.aio import CLOSE_TIMEOUT_S
from infra.embedded import EmbeddedServices, Service
from infra.settings import load_settings

SHUTDOWN_BOUND_S = CLOSE_TIMEOUT_S + 10  # the close given up on, and every other close with room to spare


class Lifespan:
    """The app's ASGI lifespan, driven as uvicorn drives it."""

    def __init__(self, app: Litestar) -> None:
        self.app, self.to_app, self.from_app = app, asyncio.Queue[dict](), asyncio.Queue[dict]()
        self.task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.to_app.get, self.from_app.put))  # type: ignore[arg-type]
        await self.to_app.put({"type": "lifespan.startup"})
        assert (await asyncio.wait_for(self.from_app.get(), 60))["type"] == "lifespan.startup.complete"

    async def shut_down(self, timeout: float) -> dict:
        await self.to_app.put({"type": "lifespan.shutdown"})
        return await self.answer(timeout)

    async def answer(self, timeout: float) -> dict:
        done, _ = await asyncio.wait({asyncio.ensure_future(self.from_app.get())}, timeout=timeout)
        if not done:
            raise TimeoutError(f"the app's shutdown did not end within {timeout:.0f}s")
        return done.pop().result()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[Service]:
    embedded = EmbeddedServices(tmp_path, durable=False, want=("nats",))
    nats = embedded.start()["nats"]
    try:
        yield nats
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(nats.pid, signal.SIGCONT)
        embedded.stop()


async def test_the_app_shuts_down_while_nats_takes_nothing(
    own_nats: Service, service_urls: dict[str, str], migrated_url: str
) -> None:
    app = create_app(
        load_settings({}, database_url=migrated_url, nats_url=own_nats.url, redis_url=service_urls["redis"])
    )
    lifespan = Lifespan(app)
    await lifespan.start()
    nats = app.state[deps.STATE_KEY].nats
    os.kill(own_nats.pid, signal.SIGSTOP)
    # More than the sockets hold, so the client's writer waits for a server that never reads; what
    # comes after waits in the client.
    publishers = []
    for burst in (300, 10):
        publishers += [asyncio.create_task(nats.publish("test.unsent", b"x" * 65536)) for _ in range(burst)]
        await asyncio.sleep(0.3)
    assert nats.pending_data_size > 0
    began, shut_down = time.monotonic(), None
    try:
        with structlog.testing.capture_logs() as logs:
            shut_down = await lifespan.shut_down(SHUTDOWN_BOUND_S)
        took = time.monotonic() - began
    finally:
        os.kill(own_nats.pid, signal.SIGCONT)  # lets a shutdown that waited for NATS end after all
        if shut_down is None:
            await lifespan.answer(60)
        for task in publishers:
            task.cancel()
        await asyncio.wait(publishers, timeout=10)
    assert shut_down["type"] == "lifespan.shutdown.complete", shut_down
    assert took < SHUTDOWN_BOUND_S
    gave_up = [entry for entry in logs if entry["event"] == "shutdown.gave_up"]
    assert [entry["what"] for entry in gave_up] == ["nats"], gave_up
