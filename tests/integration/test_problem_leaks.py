"""Error answers say what a client can act on and nothing of the internals (hosts, users, stream
ids, versions, driver messages); the internals go to the log with the request id.

Infrastructure that does not answer is a 503 with ``Retry-After`` (retry, with the same
Idempotency-Key for a command), never a 500.
"""

from __future__ import annotations

import io
import json
import socket
import sys
import types
import uuid
from collections.abc import AsyncIterator, Iterator

import nats.errors
import psycopg
import psycopg_pool
import pytest
import redis.exceptions
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from hubbub.app import create_app
from infra.embedded import free_port
from infra.eventstore.port import AppendOutcomeUnknown, DuplicateEventId, InvalidEvent, WrongExpectedVersion
from infra.settings import load_settings
from tests.integration.messaging_helpers import problem as _problem

SECRET_STREAM = "channel-0193secretstream"
DEAD_PORT = free_port()
DEAD_DB = f"postgresql://hubbub_admin:pw-{uuid.uuid4().hex[:6]}@127.0.0.1:{DEAD_PORT}/internal_db"


@get("/_leak/conflict", sync_to_thread=False)
def conflict() -> dict:
    raise WrongExpectedVersion(SECRET_STREAM, 3, 4)


@get("/_leak/duplicate", sync_to_thread=False)
def duplicate() -> dict:
    raise DuplicateEventId(f"event 0193abc exists in stream {SECRET_STREAM!r}")


@get("/_leak/unstorable", sync_to_thread=False)
def unstorable() -> dict:
    raise InvalidEvent("message.posted contains a NUL character (\\u0000), which the log cannot store")


@get("/_leak/raise/{kind:str}", sync_to_thread=False)
def raise_infra(kind: FromPath[str]) -> dict:
    raise RAISED[kind]()


@get("/_leak/postgres")
async def real_postgres() -> dict:
    await psycopg.AsyncConnection.connect(DEAD_DB, connect_timeout=2)
    return {}


@get("/_leak/pool")
async def real_pool_timeout() -> dict:
    async with psycopg_pool.AsyncConnectionPool(DEAD_DB, min_size=1, open=False) as pool:
        async with pool.connection(timeout=0.3):
            return {}


@get("/_leak/redis")
async def real_redis() -> dict:
    client = Redis.from_url(f"redis://:pw@127.0.0.1:{DEAD_PORT}/0", socket_connect_timeout=1)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return {}


RAISED = {
    "redis-timeout": lambda: redis.exceptions.TimeoutError(f"Timeout reading from 127.0.0.1:{DEAD_PORT}"),
    "nats-closed": lambda: nats.errors.ConnectionClosedError(),
    "nats-no-servers": lambda: nats.errors.NoServersError(),
    "nats-timeout": lambda: nats.errors.TimeoutError(),
    "nats-flush-timeout": lambda: nats.errors.FlushTimeoutError(),
    "append-outcome-unknown": lambda: AppendOutcomeUnknown(f"connection lost while appending to {SECRET_STREAM}"),
}
ROUTES = [conflict, duplicate, unstorable, raise_infra, real_postgres, real_pool_timeout, real_redis]


@pytest.fixture(scope="module")
def stand_in_projections() -> Iterator[None]:
    """No projectors: these tests are about error answers, not read models."""
    registry = types.ModuleType("projections.registry")
    registry.all_projections = list  # type: ignore[attr-defined]
    runtime = types.ModuleType("projections.runtime")
    runtime.ProjectorRunner = _NoRunner  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "projections.registry", registry)
        mp.setitem(sys.modules, "projections.runtime", runtime)
        yield


class _NoRunner:
    def __init__(self, **_: object) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def _app(service_urls: dict[str, str], database_url: str, **overrides: str) -> Litestar:
    urls = {"database_url": database_url, "nats_url": service_urls["nats"], "redis_url": service_urls["redis"]}
    unlimited = {"rate_register_per_s": 1000.0, "rate_register_burst": 1000}  # every test registers from one address
    return create_app(load_settings({}, **(urls | unlimited | overrides)), api_handlers=ROUTES)


@pytest.fixture(scope="module")
async def client(service_urls, migrated_url, stand_in_projections) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(_app(service_urls, migrated_url)) as client:
        yield client


def _logged(json_logs: io.StringIO, request_id: str) -> str:
    return "\n".join(
        line for line in json_logs.getvalue().splitlines() if json.loads(line).get("request_id") == request_id
    )


# -- /readyz ---------------------------------------------------------------------------------------


def _assert_readyz_says_only(body: dict, redis_says: str) -> None:
    assert body["checks"] == {"database": "ok", "nats": "ok", "redis": redis_says}
    assert body["detail"] == "redis is down" + ("" if redis_says == "down" else f" ({redis_says})")


async def test_readyz_names_a_refused_dependency_without_its_error(
    service_urls, migrated_url, stand_in_projections, json_logs
) -> None:
    app = _app(service_urls, migrated_url, redis_url=f"redis://:hunter2@127.0.0.1:{DEAD_PORT}/0")
    async with AsyncTestClient(app) as client:
        response = await client.get("/readyz", headers={"x-request-id": "readyz-refused"})
    body = _problem(response, 503)
    _assert_readyz_says_only(body, "down")
    assert str(DEAD_PORT) not in response.text and "hunter2" not in response.text
    logged = _logged(json_logs, "readyz-refused")
    assert "readyz.check_failed" in logged and str(DEAD_PORT) in logged  # the operator gets the reason


async def test_readyz_says_a_silent_dependency_did_not_answer(service_urls, migrated_url, stand_in_projections) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        async with AsyncTestClient(_app(service_urls, migrated_url, redis_url=f"redis://127.0.0.1:{port}/0")) as client:
            body = _problem(await client.get("/readyz"), 503)
    _assert_readyz_says_only(body, "no answer within 1s")


async def test_me_before_the_read_models_have_the_account_says_retry_not_missing(client, pool) -> None:
    # No projector runs in this module: the account is in the log and nowhere else.
    from projections.accounts import Accounts  # the real module (the stand-ins replace the registry only)

    async with pool.connection() as conn:
        await conn.execute(Accounts().schema())
    email = f"late-{uuid.uuid4().hex[:8]}@example.com"
    registered = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": "correct horse battery", "display_name": "Late"}
    )
    assert registered.status_code == 201, registered.text
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {registered.json()['token']}"})
    body = _problem(response, 503)
    assert response.headers["retry-after"] == "1" and "try again" in body["detail"]


# -- conflicts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/_leak/conflict", "/api/v1/_leak/duplicate"])
async def test_a_conflict_says_retry_and_names_no_stream_or_version(client, json_logs, path: str) -> None:
    request_id = f"conflict-{uuid.uuid4().hex[:8]}"
    response = await client.get(path, headers={"x-request-id": request_id})
    body = _problem(response, 409)
    assert body["detail"] == "The resource changed while you were writing; read it again and retry."
    assert SECRET_STREAM not in response.text and "at version" not in response.text and "0193abc" not in response.text
    assert SECRET_STREAM in _logged(json_logs, request_id)


async def test_something_the_log_cannot_store_is_a_422_not_a_500(client) -> None:
    body = _problem(await client.get("/api/v1/_leak/unstorable"), 422)
    assert "cannot be stored" in body["detail"]


# -- infrastructure failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/_leak/postgres",
        "/api/v1/_leak/pool",
        "/api/v1/_leak/redis",
        *(f"/api/v1/_leak/raise/{kind}" for kind in RAISED),
    ],
)
async def test_an_unreachable_service_is_a_503_that_says_retry(client, json_logs, path: str) -> None:
    request_id = f"down-{uuid.uuid4().hex[:8]}"
    response = await client.get(path, headers={"x-request-id": request_id})
    body = _problem(response, 503)
    assert response.headers["retry-after"].isdigit()
    assert "Retry" in body["detail"] and "same Idempotency-Key" in body["detail"]
    assert body["request_id"] == request_id
    for internal in (str(DEAD_PORT), "hubbub_admin", "internal_db", SECRET_STREAM, "Error", "Timeout"):
        assert internal not in response.text
    assert "request.unavailable" in _logged(json_logs, request_id)


async def test_an_append_of_unknown_outcome_says_it_may_have_been_saved(client) -> None:
    body = _problem(await client.get("/api/v1/_leak/raise/append-outcome-unknown"), 503)
    assert "may or may not have been" in body["detail"]
