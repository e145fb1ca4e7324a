"""Logged tracebacks never carry frame locals (passwords, tokens, message text), in either format.

The secrets reach the failing frames at run time (from the request, from ``secrets``), never as
literals in this file, because a traceback rightly shows source lines.
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator

import pytest
import structlog
from litestar import Litestar, post
from litestar.params import JSONBody
from litestar.testing import TestClient

from hubbub.problems import exception_handlers
from infra.logging import configure_logging

PASSWORD = "hunter" + str(2)  # built, so that no source line shown in a traceback holds it
issued: list[str] = []


def _check_password(email: str, password: str) -> None:
    token = secrets.token_urlsafe(16)
    issued.append(token)
    raise RuntimeError(f"credential store unreachable for {email}")


@post("/login", sync_to_thread=False)
def login(data: JSONBody[dict[str, str]]) -> dict:
    password = data["password"]
    _check_password(data["email"], password)
    return {}


@pytest.fixture(params=["json", "console"])
def log_output(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    configure_logging("info", request.param, stream=stream)
    try:
        yield stream
    finally:
        root.handlers, root.level = saved
        structlog.reset_defaults()


def _assert_clean(output: str) -> None:
    assert "credential store unreachable" in output, output  # the traceback itself is there
    assert PASSWORD not in output
    assert issued and issued[-1] not in output


def test_a_500_logs_the_traceback_without_locals(log_output: io.StringIO) -> None:
    app = Litestar([login], exception_handlers=exception_handlers(), logging_config=None)  # as create_app
    with TestClient(app) as client:
        response = client.post("/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 500
    _assert_clean(log_output.getvalue())


def test_structlog_and_stdlib_exc_info_carry_no_locals(log_output: io.StringIO) -> None:
    for logger in (structlog.get_logger("hubbub.test"), logging.getLogger("some.library")):
        try:
            _check_password("ada@example.com", PASSWORD)
        except RuntimeError as exc:
            logger.error("failed", exc_info=exc)
        _assert_clean(log_output.getvalue())
