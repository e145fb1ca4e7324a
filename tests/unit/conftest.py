"""Unit tests: the domain and other pure code, no I/O, milliseconds each (STYLE.md habit 8).

They start no server: a unit test that asks for one fails at once and says where it belongs,
instead of making ``make test-unit`` start PostgreSQL, NATS and Redis."""

from __future__ import annotations

from typing import NoReturn

import pytest

WHERE = "it belongs in tests/contract (a port against its backends) or tests/integration (the app)"


@pytest.fixture(scope="session")
def service_urls() -> NoReturn:
    pytest.fail(f"a unit test asked for the servers (PostgreSQL, NATS, Redis): {WHERE}")


@pytest.fixture(scope="session")
def s3_server() -> NoReturn:
    pytest.fail(f"a unit test asked for an S3 server: {WHERE}")
