"""Session fixtures: real PostgreSQL, NATS and Redis, and the tiers.

Each service comes from ``HUBBUB_{DATABASE,NATS,REDIS}_URL`` when set, otherwise from the
embedded servers (started once per session under a temporary dir, stopped at the end), the
first time a test asks for one of these fixtures: none is autouse, so a run of tests that ask
for none (``tests/unit``) starts nothing. The tests get a fresh, migrated PostgreSQL database of
their own either way.

Each test is marked with its tier, the directory under ``tests/`` it is in (``TIERS``), so
``pytest -m "not faults"`` works as well as ``pytest tests/unit`` (``make test-unit``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from infra.db import open_pool
from infra.embedded import EmbeddedServices
from infra.migrations import migrate

TESTS = Path(__file__).parent
TIERS = ("unit", "contract", "integration", "faults", "browser")
"""The directories under ``tests/`` and the markers they give their tests (pyproject.toml)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else None
        if tier in TIERS:
            item.add_marker(tier)


@pytest.fixture(scope="session")
def service_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    external = {
        "postgres": os.environ.get("HUBBUB_DATABASE_URL"),
        "nats": os.environ.get("HUBBUB_NATS_URL"),
        "redis": os.environ.get("HUBBUB_REDIS_URL"),
    }
    want = tuple(name for name, url in external.items() if not url)
    embedded = EmbeddedServices(Path(tmp_path_factory.mktemp("services")), durable=False, want=want)
    started = embedded.start() if want else {}
    urls = {name: url or started[name].url for name, url in external.items()}
    try:
        yield urls
    finally:
        embedded.stop()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def database_url(service_urls: dict[str, str]) -> Iterator[str]:
    """A fresh database for this test session, migrated, dropped at the end."""
    admin = service_urls["postgres"]
    name = f"hubbub_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(admin, name)
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def migrated_url(database_url: str) -> str:
    await migrate(database_url)
    return database_url


@pytest.fixture(scope="session")
async def pool(migrated_url: str) -> AsyncIterator:
    pool = await open_pool(migrated_url, 2, 20)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A real S3 API over HTTP: moto's server in a thread, on a free port, with a fresh bucket.
    The settings a blob store needs to use it (``blob_url``, endpoint, region, keys)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"hubbub-test-{uuid.uuid4().hex[:8]}"
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(Bucket=bucket)
    try:
        yield {
            "blob_url": f"s3://{bucket}/blobs",
            "s3_endpoint_url": endpoint,
            "s3_region": "us-east-1",
            "s3_access_key_id": "testing",
            "s3_secret_access_key": "testing",
            "bucket": bucket,
        }
    finally:
        server.stop()
