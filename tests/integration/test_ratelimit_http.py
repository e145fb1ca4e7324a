"""The rate-limit helpers over HTTP: a tiny app with Hubbub's problem handlers and a real Redis.

A 429 is a problem with ``Retry-After`` in whole seconds; login fails closed (503) and posting
fails open when Redis is down.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from structlog.testing import capture_logs

from commands.ratelimits import (
    TooManyRequests,
    check_login,
    check_post,
    check_register,
    client_network,
    normalised_email,
    retry_after_header,
)
from hubbub import problems
from infra.embedded import free_port
from infra.ratelimit import RedisRateLimiter
from infra.settings import load_settings
from tests.integration.messaging_helpers import problem as _problem

SETTINGS = load_settings({}, rate_post_per_s=0.001, rate_post_burst=2, rate_login_per_s=0.001, rate_login_burst=2)


class Login(msgspec.Struct):
    email: str


@get("/raise", sync_to_thread=False)
def raise_429() -> None:
    raise TooManyRequests("slow down", retry_after_s=2.01)


@post("/post/{user_id:str}")
async def post_message(state: State, user_id: FromPath[str]) -> dict:
    await check_post(state.limiter, SETTINGS, user_id)
    return {"ok": True}


@post("/login")
async def login(state: State, request: Request, data: JSONBody[Login]) -> dict:
    await check_login(state.limiter, SETTINGS, request.headers.get("x-test-ip", "192.0.2.1"), data.email)
    return {"ok": True}


@post("/register")
async def register(state: State, request: Request) -> dict:
    await check_register(state.limiter, SETTINGS, request.headers.get("x-test-ip", "192.0.2.1"))
    return {"ok": True}


def _app(redis_url: str) -> Litestar:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The test client serves the app on a loop of its own: Redis must be opened on that one.
        redis = Redis.from_url(redis_url, socket_connect_timeout=1)
        app.state.limiter = RedisRateLimiter(redis, timeout_s=0.5)
        yield
        await redis.aclose()

    return Litestar(
        [raise_429, post_message, login, register],
        exception_handlers=problems.exception_handlers(),
        lifespan=[lifespan],
        logging_config=None,
    )


@pytest.fixture
async def client(service_urls: dict[str, str]) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(_app(service_urls["redis"])) as client:
        yield client


@pytest.fixture
async def client_without_redis() -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(_app(f"redis://127.0.0.1:{free_port()}/0")) as client:
        yield client


def _me() -> str:
    return uuid.uuid4().hex


async def test_too_many_requests_is_a_429_problem_with_retry_after_rounded_up(client: AsyncTestClient) -> None:
    response = await client.get("/raise")
    body = _problem(response, 429)
    assert response.headers["retry-after"] == "3"
    assert body["type"] == "urn:hubbub:problem:too-many-requests" and body["detail"] == "slow down"


@pytest.mark.parametrize(("seconds", "header"), [(0.0, 1), (0.001, 1), (1.0, 1), (1.2, 2), (59.9, 60)])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(seconds: float, header: int) -> None:
    assert retry_after_header(seconds) == header


async def test_posting_is_limited_per_user(client: AsyncTestClient) -> None:
    me, other = _me(), _me()
    assert [(await client.post(f"/post/{me}")).status_code for _ in range(2)] == [201, 201]
    response = await client.post(f"/post/{me}")
    body = _problem(response, 429)
    assert int(response.headers["retry-after"]) >= 1 and "posting too fast" in body["detail"]
    assert (await client.post(f"/post/{other}")).status_code == 201


async def test_login_is_limited_per_address_and_account(client: AsyncTestClient) -> None:
    name, ip = _me(), "198.51.100.7"
    for typed in (f"{name}@Example.com", f"  {name.upper()}@EXAMPLE.COM "):  # one account however typed
        assert (await client.post("/login", json={"email": typed}, headers={"x-test-ip": ip})).status_code == 201
    response = await client.post("/login", json={"email": f"{name}@example.com"}, headers={"x-test-ip": ip})
    assert "for this account" in _problem(response, 429)["detail"] and response.headers["retry-after"]
    elsewhere = await client.post("/login", json={"email": f"{name}@example.com"}, headers={"x-test-ip": "203.0.113.9"})
    assert elsewhere.status_code == 201


async def test_spraying_many_accounts_from_one_address_is_limited(client: AsyncTestClient) -> None:
    ip = f"2001:db8:{uuid.uuid4().int % 65536:x}::1"
    statuses = [
        (
            await client.post(
                "/login", json={"email": f"{_me()}@example.com"}, headers={"x-test-ip": ip.replace("::1", f"::{n:x}")}
            )
        ).status_code
        for n in range(SETTINGS.rate_login_burst * 5 + 1)
    ]  # every address in one /64
    assert statuses == [201] * (SETTINGS.rate_login_burst * 5) + [429]


async def test_without_redis_posting_fails_open(client_without_redis: AsyncTestClient) -> None:
    with capture_logs():
        statuses = [(await client_without_redis.post(f"/post/{_me()}")).status_code for _ in range(3)]
    assert statuses == [201, 201, 201]


async def test_without_redis_login_fails_closed_with_a_503_and_retry_after(client_without_redis) -> None:
    with capture_logs():
        response = await client_without_redis.post("/login", json={"email": "a@example.com"})
    body = _problem(response, 503)
    assert response.headers["retry-after"] == "5" and "try again" in body["detail"]


async def test_without_redis_registering_fails_closed_too(client_without_redis) -> None:
    with capture_logs():
        response = await client_without_redis.post("/register")
    body = _problem(response, 503)
    assert response.headers["retry-after"] == "5" and body["detail"].startswith("Registering is briefly unavailable")


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("testclient", "testclient"),
        ("", "unknown"),
    ],
)
def test_client_network(ip: str, network: str) -> None:
    assert client_network(ip) == network


def test_normalised_email() -> None:
    assert normalised_email("  Ada@Example.COM ") == "ada@example.com"
    assert len(normalised_email("a" * 10_000)) == 254
