"""Liveness and readiness. ``/readyz`` checks each dependency with a short timeout, all at once,
and answers 503 naming the ones that are down, so a load balancer stops sending traffic here.

Anyone may ask, so the answer says only "down" or "no answer within 1s"; the error itself (hosts,
users, driver messages) goes to the log, with the request id."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import structlog
from litestar import Response, get
from litestar.di import NamedDependency

from hubbub.deps import Services
from hubbub.problems import problem

CHECK_TIMEOUT_S = 1  # seconds
DOWN = "down"
NO_ANSWER = f"no answer within {CHECK_TIMEOUT_S:g}s"

log = structlog.get_logger(__name__)


@get("/healthz", operation_id="healthz", tags=["health"], summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    operation_id="readyz",
    tags=["health"],
    summary="Readiness: PostgreSQL, NATS and Redis are reachable (503 names the ones that are not)",
)
async def readyz(services: NamedDependency[Services]) -> Response[dict[str, Any]]:
    checks = {"database": _database(services), "nats": _nats(services), "redis": _redis(services)}
    results = await asyncio.gather(*(_run(name, check) for name, check in checks.items()))
    report = dict(zip(checks, results, strict=True))
    down = {name: result for name, result in report.items() if result != "ok"}
    if not down:
        return Response({"status": "ready", "checks": report})
    detail = "; ".join(f"{name} is down" + ("" if result == DOWN else f" ({result})") for name, result in down.items())
    return problem(503, detail, title="Not ready", slug="not-ready", checks=report, headers={"Retry-After": "5"})


async def _run(name: str, check: Awaitable[None]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await check
    except TimeoutError:
        log.warning("readyz.check_failed", check=name, reason=NO_ANSWER)
        return NO_ANSWER
    except Exception as exc:  # noqa: BLE001 - any failure at all means "not ready", reported by name
        log.warning("readyz.check_failed", check=name, error=type(exc).__name__, reason=str(exc))
        return DOWN
    return "ok"


async def _database(services: Services) -> None:
    async with services.pool.connection(timeout=CHECK_TIMEOUT_S) as conn:
        await conn.execute("SELECT 1")


async def _nats(services: Services) -> None:
    if not services.nats.is_connected:
        raise ConnectionError("not connected (reconnecting)")
    await services.nats.flush(timeout=CHECK_TIMEOUT_S)


async def _redis(services: Services) -> None:
    await services.redis.ping()


ROUTES = [healthz, readyz]
