"""Login and registration limits against the real app, served as ``hubbub serve`` serves it
(uvicorn with its options, over a real socket), with a real Redis.

Each test speaks from loopback addresses of its own (127.x.y.z: Linux routes all of 127/8 to
``lo``), so its buckets are its own; the one test that must speak from 127.0.0.1 (uvicorn trusts
that peer's ``X-Forwarded-For`` by default) removes its bucket afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis

from hubbub.app import create_app
from hubbub.devserver import UVICORN_OPTIONS
from infra.ratelimit import KEY_PREFIX
from infra.settings import Settings, load_settings

API = "/api/v1"
PROBLEM = "application/problem+json"
PROXY = "127.0.0.2"
LOGIN_BURST = 2  # per account and address; per address: 5x that
ACCOUNT_ATTEMPTS = 3  # per account, from anywhere
REGISTER_BURST = 3
PASSWORD = "correct horse battery"


def _settings(service_urls: dict[str, str], database_url: str) -> Settings:
    return load_settings(
        {},
        database_url=database_url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        trusted_proxies=[PROXY],
        rate_login_per_s=0.001,
        rate_login_burst=LOGIN_BURST,
        rate_login_account_attempts=ACCOUNT_ATTEMPTS,
        rate_login_account_window_s=3600,
        rate_register_per_s=0.001,
        rate_register_burst=REGISTER_BURST,
    )


@pytest.fixture(scope="module")
async def server(service_urls: dict[str, str], migrated_url: str) -> AsyncIterator[Any]:
    """The app under uvicorn with ``hubbub serve``'s options, on a free port of 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    app = create_app(_settings(service_urls, migrated_url))
    server = uvicorn.Server(uvicorn.Config(app, **UVICORN_OPTIONS))
    task = asyncio.create_task(server._serve(sockets=[sock]))  # serve() would take over the signals
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield app, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def peer(server: Any, address: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from ``address`` (default: a loopback address of its own)."""
    address = address or f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(3, 254)}"
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=server[1] + API, transport=transport, timeout=30) as client:
        yield client


def forwarded() -> str:
    """An address in 198.18.0.0/15 (benchmarking), new each time."""
    return f"198.{random.randint(18, 19)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def email() -> str:
    return f"ada-{uuid.uuid4().hex[:12]}@example.com"


async def login(
    client: httpx.AsyncClient,
    who: str,
    password: str = "wrong password",
    via: str | None = None,
) -> httpx.Response:
    headers = {"X-Forwarded-For": via} if via else {}
    return await client.post("/auth/login", json={"email": who, "password": password}, headers=headers)


async def register(client: httpx.AsyncClient, who: str | None = None, **fields: str) -> httpx.Response:
    body = {"email": who or email(), "password": PASSWORD, "display_name": "Ada"} | fields
    return await client.post("/auth/register", json=body)


def too_many(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert detail in response.json()["detail"] and int(response.headers["retry-after"]) >= 1


# -- the client's address ----------------------------------------------------------------------


@pytest.fixture
async def localhost_bucket(service_urls: dict[str, str]) -> AsyncIterator[None]:
    """127.0.0.1's login buckets, emptied by the test, are removed afterwards: other modules log in from there."""
    yield
    redis = Redis.from_url(service_urls["redis"])
    try:
        keys = [key async for key in redis.scan_iter(f"{KEY_PREFIX}login*127.0.0.1*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def test_rotating_x_forwarded_for_from_an_untrusted_peer_does_not_reset_the_address_bucket(
    server: Any, localhost_bucket: None
) -> None:
    # 127.0.0.1: the peer whose header uvicorn's own default believes.
    async with peer(server, "127.0.0.1") as client:
        statuses = [(await login(client, email(), via=forwarded())).status_code for _ in range(LOGIN_BURST * 5)]
        assert statuses == [401] * (LOGIN_BURST * 5)
        too_many(await login(client, email(), via=forwarded()), "from your network")
        too_many(await login(client, email(), via=f"{forwarded()}, {forwarded()}"), "from your network")


async def test_a_trusted_proxy_s_forwarded_address_is_the_client(server: Any, json_logs) -> None:
    sprayer, bystander = forwarded(), forwarded()
    async with peer(server, PROXY) as proxy:
        # What the client put in the header itself is on the left: rotating it changes nothing.
        statuses = [
            (await login(proxy, email(), via=f"{forwarded()}, {sprayer}")).status_code for _ in range(LOGIN_BURST * 5)
        ]
        assert statuses == [401] * (LOGIN_BURST * 5)
        too_many(await login(proxy, email(), via=f"{forwarded()}, {sprayer}"), "from your network")
        assert (await login(proxy, email(), via=bystander)).status_code == 401
    async with peer(server) as client:  # the proxy's header from anyone else is not believed
        assert (await login(client, email(), via=sprayer)).status_code == 401
    logged = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    clients = [line["client"] for line in logged if line.get("event") == "http.request"]
    assert clients.count(sprayer) == LOGIN_BURST * 5 + 1 and clients.count(bystander) == 1


async def test_the_account_bucket_refuses_after_n_attempts_whatever_the_address(server: Any) -> None:
    ada = email()
    async with peer(server) as client:
        assert (await register(client, ada)).status_code == 201
    async with peer(server, PROXY) as proxy:
        statuses = [(await login(proxy, ada, via=forwarded())).status_code for _ in range(ACCOUNT_ATTEMPTS - 1)]
        assert statuses == [401] * (ACCOUNT_ATTEMPTS - 1)  # the registration's login was not one of them
        assert (await login(proxy, ada, PASSWORD, via=forwarded())).status_code == 200  # counted too
        too_many(await login(proxy, ada, PASSWORD, via=forwarded()), "for this account")
        too_many(await login(proxy, f"  {ada.upper()} ", PASSWORD, via=forwarded()), "for this account")
        assert (await login(proxy, email(), via=forwarded())).status_code == 401  # others are not locked


# -- registration ------------------------------------------------------------------------------


async def test_registration_is_limited_per_address(server: Any) -> None:
    async with peer(server) as client:
        assert [(await register(client)).status_code for _ in range(REGISTER_BURST)] == [201] * REGISTER_BURST
        too_many(await register(client), "Too many registrations from your network")
    async with peer(server) as elsewhere:
        assert (await register(elsewhere)).status_code == 201


class CountingHasher:
    """Stands in for the app's ``Passwords.hash``: counts the calls, hashes as it did."""

    def __init__(self, hash_: Any) -> None:
        self.hash, self.calls = hash_, 0

    async def __call__(self, password: str) -> str:
        self.calls += 1
        return await self.hash(password)


@pytest.fixture
def hashes(server: Any) -> Any:
    passwords = server[0].state["services"].passwords
    counting = CountingHasher(passwords.hash)
    passwords.hash = counting
    yield counting
    del passwords.hash


async def test_a_registration_refused_by_a_cheap_check_never_hashes_the_password(server: Any, hashes) -> None:
    async with peer(server) as client:
        taken = email()
        assert (await register(client, taken)).status_code == 201
        assert hashes.calls == 1
        refused = [
            await register(client, taken),  # taken
            await register(client, "not an email"),
            await register(client, display_name=" \t "),
            await register(client, password="short"),
        ]
        assert [r.status_code for r in refused] == [409, 422, 422, 422]
        assert hashes.calls == 1
        for _ in range(REGISTER_BURST):  # over the limit: the rest of the bucket, then 429s
            await register(client, taken)
        too_many(await register(client), "Too many registrations")
        assert hashes.calls == 1
