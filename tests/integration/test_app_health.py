"""The app skeleton over HTTP, in process, with its lifespan and real PostgreSQL, NATS and Redis.

The projector runtime is replaced by a stand-in (two named projections whose checkpoints the
tests move by hand), so that read-your-writes can be tested on its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import types
import uuid
from collections.abc import AsyncIterator, Iterator

import msgspec
import psycopg
import pytest
from litestar import Litestar, get, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient

from domain.errors import Conflict
from hubbub.app import create_app
from infra.embedded import free_port
from infra.eventstore.port import WrongExpectedVersion
from infra.settings import load_settings
from projections import consistency
from projections.consistency import wait_for_position
from tests.integration.messaging_helpers import problem as _problem


class EchoBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    count: int = 0


@post("/_test/echo", sync_to_thread=False)
def echo(data: JSONBody[EchoBody]) -> dict:
    return {"name": data.name, "count": data.count}


@get("/_test/read", sync_to_thread=False)
def read() -> dict:
    return {"ok": True}


@get("/_test/boom", sync_to_thread=False)
def boom() -> dict:
    raise RuntimeError("secret-internal-detail")


@get("/_test/conflict", sync_to_thread=False)
def conflict() -> dict:
    raise WrongExpectedVersion("channel-1", 3, 4)


@get("/_test/taken", sync_to_thread=False)
def taken() -> dict:
    raise Conflict("a channel named #general exists; pick another name", field="name")


TEST_ROUTES = [echo, read, boom, conflict, taken]


class StandInProjection:
    def __init__(self, name: str) -> None:
        self.name = name


class StandInRunner:
    started = stopped = 0

    def __init__(self, *, pool, conninfo, store, projections) -> None:
        self.projections = projections

    async def start(self) -> None:
        StandInRunner.started += 1

    async def stop(self) -> None:
        StandInRunner.stopped += 1


READ_MODELS = [f"test_rw_a_{uuid.uuid4().hex[:8]}", f"test_rw_b_{uuid.uuid4().hex[:8]}"]


@pytest.fixture(scope="module")  # module, not session: it must not leak into other test modules
def stand_in_projections() -> Iterator[None]:
    registry = types.ModuleType("projections.registry")
    registry.all_projections = lambda: [StandInProjection(n) for n in READ_MODELS]  # type: ignore[attr-defined]
    runtime = types.ModuleType("projections.runtime")
    runtime.ProjectorRunner = StandInRunner  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "projections.registry", registry)
        mp.setitem(sys.modules, "projections.runtime", runtime)
        # Only NOTIFY may wake a waiting read here; the safety re-check would hide a broken LISTEN.
        mp.setattr(consistency, "SAFETY_RECHECK_S", 30.0)
        yield


def _settings(service_urls: dict[str, str], database_url: str, **overrides):
    urls = {"database_url": database_url, "nats_url": service_urls["nats"], "redis_url": service_urls["redis"]}
    unlimited = {"rate_register_per_s": 1000.0, "rate_register_burst": 1000}  # every test registers from one address
    return load_settings({}, **(urls | unlimited | overrides))


@pytest.fixture(scope="module")
async def app(service_urls, migrated_url, stand_in_projections) -> Litestar:
    settings = _settings(service_urls, migrated_url, read_wait_timeout_s=1.0, max_request_bytes=1024)
    return create_app(settings, api_handlers=TEST_ROUTES)


@pytest.fixture(scope="module")
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(app) as client:
        yield client


# -- health ----------------------------------------------------------------------------------------


async def test_healthz(client: AsyncTestClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_every_dependency(client: AsyncTestClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "nats": "ok", "redis": "ok"}}


async def test_lifespan_starts_and_stops_the_projectors(service_urls, migrated_url, stand_in_projections) -> None:
    before = (StandInRunner.started, StandInRunner.stopped)
    app = create_app(_settings(service_urls, migrated_url))
    async with AsyncTestClient(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert StandInRunner.started == before[0] + 1
        assert app.state.services.consistency.read_models == tuple(READ_MODELS)
    assert StandInRunner.stopped == before[1] + 1


@post("/_test/close-nats", status_code=204)
async def close_nats(state: State) -> None:
    # Closed on the app's own event loop: the test client runs the app on a loop of its own, and
    # a NATS client closed from another loop leaves its tasks behind and hangs the shutdown.
    await state.services.nats.close()


async def test_readyz_names_what_is_down(service_urls, migrated_url, stand_in_projections) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(_settings(service_urls, migrated_url, redis_url=dead_redis), api_handlers=[close_nats])
    async with AsyncTestClient(app) as client:
        body = _problem(await client.get("/readyz"), 503)
        assert "redis is down" in body["detail"]
        assert "database" not in body["detail"] and "nats" not in body["detail"]
        assert body["checks"]["database"] == "ok" and body["checks"]["redis"] != "ok"

        assert (await client.post("/api/v1/_test/close-nats")).status_code == 204
        body = _problem(await client.get("/readyz"), 503)
        assert "nats is down" in body["detail"] and "redis is down" in body["detail"]


async def test_openapi_document(client: AsyncTestClient) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "Hubbub"
    assert {"/healthz", "/readyz"} <= document["paths"].keys()


# -- problems --------------------------------------------------------------------------------------


async def test_unknown_route_is_a_404_problem(client: AsyncTestClient) -> None:
    body = _problem(await client.get("/api/v1/no/such/thing"), 404)
    assert body["title"] == "Not Found"


async def test_wrong_method_is_a_405_problem(client: AsyncTestClient) -> None:
    response = await client.delete("/healthz")
    _problem(response, 405)
    assert "GET" in response.headers.get("allow", "")


async def test_malformed_json_is_a_400_problem(client: AsyncTestClient) -> None:
    response = await client.post(
        "/api/v1/_test/echo", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    body = _problem(response, 400)
    assert body["type"] == "urn:hubbub:problem:malformed-body"
    assert "not valid JSON" in body["detail"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": 5}, "name"),
        ({"count": 1}, "name"),
        ({"name": "x", "colour": "red"}, "colour"),
        ([1, 2], "data"),
    ],
)
async def test_invalid_input_is_a_422_problem_naming_the_field(client: AsyncTestClient, payload, field) -> None:
    body = _problem(await client.post("/api/v1/_test/echo", json=payload), 422)
    assert field in [error["field"] for error in body["errors"]]
    assert all(error["message"] for error in body["errors"])


async def test_a_missing_body_is_reported(client: AsyncTestClient) -> None:
    body = _problem(await client.post("/api/v1/_test/echo"), 422)
    assert body["errors"][0]["message"] == "this is required"


async def test_oversized_body_is_a_413_problem(client: AsyncTestClient) -> None:
    response = await client.post("/api/v1/_test/echo", json={"name": "x" * 2000})
    _problem(response, 413)


async def test_a_crash_is_a_500_problem_with_the_request_id_and_nothing_else(client: AsyncTestClient) -> None:
    response = await client.get("/api/v1/_test/boom")
    body = _problem(response, 500)
    assert "secret-internal-detail" not in response.text and "RuntimeError" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["request_id"] in body["detail"]


async def test_wrong_expected_version_is_a_409_problem(client: AsyncTestClient) -> None:
    _problem(await client.get("/api/v1/_test/conflict"), 409)


async def test_domain_errors_carry_their_status_and_field(client: AsyncTestClient) -> None:
    body = _problem(await client.get("/api/v1/_test/taken"), 409)
    assert body["type"] == "urn:hubbub:problem:conflict"
    assert body["errors"] == [{"field": "name", "message": "a channel named #general exists; pick another name"}]


# -- request ids and logs --------------------------------------------------------------------------


async def test_a_sane_request_id_is_echoed_and_a_bad_one_replaced(client: AsyncTestClient) -> None:
    assert (await client.get("/healthz", headers={"x-request-id": "abc-123"})).headers["x-request-id"] == "abc-123"
    replaced = (await client.get("/healthz", headers={"x-request-id": "bad id\twith junk"})).headers["x-request-id"]
    assert replaced != "bad id\twith junk" and len(replaced) == 32
    assert (await client.get("/nowhere")).headers["x-request-id"]


async def test_one_access_log_line_per_request_with_the_request_id(client: AsyncTestClient, json_logs) -> None:
    await client.get("/api/v1/_test/boom", headers={"x-request-id": "req-logs-1"})
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_id") == "req-logs-1"]
    access = [line for line in mine if line["event"] == "http.request"]
    assert len(access) == 1
    assert access[0] | {"duration_ms": 0} == access[0] | {
        "method": "GET",
        "path": "/api/v1/_test/boom",
        "status": 500,
        "duration_ms": 0,
    }
    assert any(line["event"] == "request.failed" and "exception" in line for line in mine)


# -- read-your-writes ------------------------------------------------------------------------------


async def _set_checkpoints(pool, position: int, names=READ_MODELS, notify: bool = True) -> None:
    async with pool.connection() as conn, conn.transaction():
        for name in names:
            await conn.execute(
                "INSERT INTO projection_checkpoints (name, position) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                (name, position),
            )
            if notify:
                await conn.execute("SELECT pg_notify('hubbub_checkpoints', %s)", (name,))


async def test_a_read_waits_for_the_position_and_is_woken_by_notify(
    client: AsyncTestClient, pool, migrated_url: str
) -> None:
    await _set_checkpoints(pool, 100)
    moved: list[float] = []

    def move_later() -> None:  # the test client blocks this loop while the app serves, so: a thread
        time.sleep(0.3)
        with psycopg.connect(migrated_url, autocommit=True) as conn, conn.transaction():
            for name in READ_MODELS:
                conn.execute("UPDATE projection_checkpoints SET position = 105 WHERE name = %s", (name,))
                conn.execute("SELECT pg_notify('hubbub_checkpoints', %s)", (name,))
        moved.append(time.monotonic())

    mover = threading.Thread(target=move_later)
    started = time.monotonic()
    mover.start()
    response = await client.get("/api/v1/_test/read", headers={"X-Hubbub-Position": "105"})
    answered = time.monotonic()
    mover.join()
    assert response.status_code == 200 and "x-hubbub-stale" not in response.headers
    assert answered - started >= 0.3  # it waited for the move
    assert answered - moved[0] < 0.2  # and was woken by NOTIFY, not by the (disabled) re-check


async def test_a_notify_that_carries_the_position_answers_waiting_reads_without_a_query(
    client: AsyncTestClient, pool, migrated_url: str
) -> None:
    # What projectors send: "{name} {position}". The table is left behind on purpose: a read
    # answered at once can only have taken the position from the notification.
    await _set_checkpoints(pool, 400)

    def notify_later() -> None:
        time.sleep(0.2)
        with psycopg.connect(migrated_url, autocommit=True) as conn, conn.transaction():
            for name in READ_MODELS:
                conn.execute("SELECT pg_notify('hubbub_checkpoints', %s)", (f"{name} 410",))

    notifier = threading.Thread(target=notify_later)
    notifier.start()
    response = await client.get("/api/v1/_test/read", headers={"X-Hubbub-Position": "410"})
    notifier.join()
    assert response.status_code == 200 and "x-hubbub-stale" not in response.headers


async def test_a_read_behind_the_position_times_out_and_says_stale(client: AsyncTestClient, pool) -> None:
    await _set_checkpoints(pool, 200)
    started = time.monotonic()
    response = await client.get("/api/v1/_test/read", headers={"X-Hubbub-Position": "1000000"})
    assert response.status_code == 200 and response.headers["x-hubbub-stale"] == "true"
    assert 0.95 <= time.monotonic() - started < 2.5


async def test_a_read_already_past_the_position_does_not_wait(client: AsyncTestClient, pool) -> None:
    await _set_checkpoints(pool, 300)
    await asyncio.sleep(0.1)  # let the watcher see it
    started = time.monotonic()
    response = await client.get("/api/v1/_test/read", headers={"X-Hubbub-Position": "250"})
    assert response.status_code == 200 and "x-hubbub-stale" not in response.headers
    assert time.monotonic() - started < 0.2


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "0x10", "9" * 40])
async def test_a_malformed_position_is_a_400_problem(client: AsyncTestClient, value: str) -> None:
    body = _problem(await client.get("/api/v1/_test/read", headers={"X-Hubbub-Position": value}), 400)
    assert "X-Hubbub-Position" in body["detail"]


async def test_only_api_reads_wait(client: AsyncTestClient) -> None:
    started = time.monotonic()
    assert (await client.get("/healthz", headers={"X-Hubbub-Position": "999999999"})).status_code == 200
    assert time.monotonic() - started < 0.3


async def test_wait_for_position_without_a_watcher(pool) -> None:
    names = [f"test_wait_{uuid.uuid4().hex[:8]}"]
    assert await wait_for_position(pool, [], 10**12, 0)  # nothing to wait for
    assert await wait_for_position(pool, names, 0, 0)  # a missing row counts as position 0
    assert not await wait_for_position(pool, names, 1, 0.1)
    await _set_checkpoints(pool, 7, names=names, notify=False)
    assert await wait_for_position(pool, names, 7, 1)
