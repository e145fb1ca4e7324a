"""The realtime benchmark's people, made through the HTTP API as clients would: ``n`` users who
accepted an invite to one workspace (so they are in its ``#general``), and private channels of
``group_size`` of them (the latency phase's conversations)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench._common import progress
from bench._ws_http import Http

API = "/api/v1"


@dataclass
class RtWorld:
    workspace_id: str
    general_id: str
    owner_id: str
    owner_token: str
    user_ids: list[str]
    tokens: list[str]
    groups: list[tuple[str, list[int]]] = field(default_factory=list)
    """(private channel id, the indices of its members in ``user_ids``)."""
    timings_s: dict[str, float] = field(default_factory=dict)


async def _call(
    http: Http, method: str, path: str, expect: tuple[int, ...], token: str | None = None, body: object = None
) -> dict:
    """One call; a 409 wrong-expected-version (two writers of one stream in two worker processes)
    is retried as a client would."""
    raw = None if body is None else json.dumps(body).encode()
    for attempt in range(30):
        status, data = await http.request(method, path, token, raw)
        if status in expect:
            return json.loads(data) if data else {}
        if status != 409 or b"wrong-expected-version" not in data:
            break
        await asyncio.sleep(0.005 * (attempt + 1))
    raise RuntimeError(f"{method} {path} -> {status}: {data[:300]!r}")


async def _many(n: int, make: Callable[[int], Awaitable], concurrency: int, what: str) -> list:
    gate, done, out = asyncio.Semaphore(concurrency), 0, [None] * n
    began = time.monotonic()

    async def run(i: int) -> None:
        nonlocal done
        async with gate:
            out[i] = await make(i)
        done += 1
        if done % 2000 == 0 or done == n:
            progress(f"  {what}: {done:,}/{n:,} ({done / (time.monotonic() - began):,.0f}/s)")

    await asyncio.gather(*(run(i) for i in range(n)))
    return out


async def build(base_url: str, n: int, group_users: int, group_size: int) -> RtWorld:
    http = Http(base_url, size=48)
    tag = uuid.uuid4().hex[:6]
    timings: dict[str, float] = {}

    async def register(i: int) -> tuple[str, str]:
        body = await _call(
            http,
            "POST",
            f"{API}/auth/register",
            (201,),
            body={"email": f"rt{i}-{tag}@bench.example", "password": "bench password 1", "display_name": f"rt{i}"},
        )
        return body["user"]["id"], body["token"]

    began = time.monotonic()
    owner_id, owner_token = await register(n)
    people = await _many(n, register, 32, "registered")
    timings["register_s"] = time.monotonic() - began
    ws = await _call(http, "POST", f"{API}/workspaces", (201,), owner_token, {"name": "Realtime bench"})
    world = RtWorld(
        ws["id"], ws["general_channel_id"], owner_id, owner_token, [p[0] for p in people], [p[1] for p in people]
    )

    async def bring_in(i: int) -> None:
        code = (
            await _call(
                http, "POST", f"{API}/workspaces/{world.workspace_id}/invites", (201,), owner_token, {"role": "member"}
            )
        )["code"]
        await _call(http, "POST", f"{API}/invites/{code}/accept", (200,), world.tokens[i])

    began = time.monotonic()
    await _many(n, bring_in, 16, "invited and accepted (joins #general)")
    timings["invite_accept_s"] = time.monotonic() - began

    async def group(g: int) -> tuple[str, list[int]]:
        members = list(range(g * group_size, (g + 1) * group_size))
        made = await _call(
            http,
            "POST",
            f"{API}/workspaces/{world.workspace_id}/channels",
            (201,),
            owner_token,
            {"name": f"rt-group-{g:04d}", "private": True},
        )
        await _call(
            http,
            "POST",
            f"{API}/channels/{made['id']}/members",
            (200, 201, 204),
            owner_token,
            {"user_ids": [world.user_ids[m] for m in members]},
        )
        return made["id"], members

    began = time.monotonic()
    world.groups = await _many(group_users // group_size, group, 8, "private channels")
    timings["groups_s"] = time.monotonic() - began
    world.timings_s = {k: round(v, 1) for k, v in timings.items()}
    await http.close()
    return world


def wait_projections(database_url: str, timeout_s: float = 300) -> float:
    """Seconds until every checkpoint has reached the log's head (read models and the publisher)."""
    from bench._fill import head_and_checkpoints

    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        head, cps = head_and_checkpoints(database_url)
        if cps and min(cps.values()) >= head:
            return time.monotonic() - began
        time.sleep(0.2)
    raise RuntimeError(f"projections not caught up after {timeout_s:.0f}s: {head_and_checkpoints(database_url)}")
