"""The whole app over HTTP, in process, with its lifespan, real projectors and real services."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import structlog
from litestar import Litestar
from litestar.testing import AsyncTestClient

from hubbub.app import create_app
from infra.logging import configure_logging
from infra.settings import load_settings


@pytest.fixture(scope="module")
async def api(service_urls: dict[str, str], migrated_url: str) -> AsyncIterator[AsyncTestClient]:
    settings = load_settings(
        {},
        database_url=migrated_url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        rate_register_per_s=1000.0,
        rate_register_burst=1000,  # every test registers from one address
    )
    app: Litestar = create_app(settings)
    async with AsyncTestClient(app) as client:
        yield client


@dataclass
class User:
    id: str
    email: str
    token: str
    display_name: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(api: AsyncTestClient, name: str = "Ada", password: str = "correct horse battery") -> User:
    email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    response = await api.post(
        "/api/v1/auth/register", json={"email": email, "password": password, "display_name": name}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return User(body["user"]["id"], email, body["token"], name)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Everything logged during the test, as JSON lines (the production format)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    try:
        yield stream
    finally:
        root.handlers, root.level = saved
        structlog.reset_defaults()
