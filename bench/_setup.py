"""People, a workspace and channels, made through the HTTP API like any client would."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import httpx

API = "/api/v1"


@dataclass
class World:
    workspace_id: str
    general_id: str
    history_id: str
    owner_id: str
    owner_token: str
    poster_ids: list[str]
    poster_tokens: list[str]
    other_channels: list[str] = field(default_factory=list)
    position: int = 0


def _ok(response: httpx.Response, *codes: int) -> dict:
    if response.status_code not in codes:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} -> {response.status_code}: {response.text[:300]}"
        )
    return response.json()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _post(client: httpx.AsyncClient, path: str, code: int, **kwargs) -> dict:
    """POST, retried on a 409 wrong-expected-version (concurrent writers of one stream in two
    worker processes outlast the server's bounded retries now and then), as a client would."""
    for attempt in range(10):
        response = await client.post(path, **kwargs)
        if response.status_code != 409 or "wrong-expected-version" not in response.text:
            return _ok(response, code)
        await asyncio.sleep(0.01 * (attempt + 1))
    return _ok(response, code)


async def _register(client: httpx.AsyncClient, name: str) -> tuple[str, str]:
    email = f"{name}-{uuid.uuid4().hex[:8]}@bench.example"
    body = _ok(
        await client.post(
            f"{API}/auth/register", json={"email": email, "password": "bench password 1", "display_name": name}
        ),
        201,
    )
    return body["user"]["id"], body["token"]


async def _limited(n: int, coros) -> list:
    gate = asyncio.Semaphore(n)

    async def run(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


async def build(base_url: str, posters: int, channels_for_owner: int) -> World:
    """An owner in ``channels_for_owner`` channels (#general, the history channel and the rest),
    and ``posters`` members who joined the history channel."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        people = await _limited(8, [_register(client, f"user{i}") for i in range(posters + 1)])
        (owner_id, owner_token), rest = people[0], people[1:]
        owner = _auth(owner_token)
        ws = _ok(await client.post(f"{API}/workspaces", json={"name": "Bench"}, headers=owner), 201)
        world = World(
            ws["id"],
            ws["general_channel_id"],
            "",
            owner_id,
            owner_token,
            [p[0] for p in rest],
            [p[1] for p in rest],
            position=ws["position"],
        )

        async def bring_in(token: str) -> int:
            code = (
                await _post(
                    client,
                    f"{API}/workspaces/{world.workspace_id}/invites",
                    201,
                    json={"role": "member"},
                    headers=owner,
                )
            )["code"]
            return (await _post(client, f"{API}/invites/{code}/accept", 200, headers=_auth(token)))["position"]

        positions = await _limited(8, [bring_in(t) for t in world.poster_tokens])
        made = _ok(
            await client.post(
                f"{API}/workspaces/{world.workspace_id}/channels", json={"name": "bench-posts"}, headers=owner
            ),
            201,
        )
        world.history_id = made["id"]
        positions += await _limited(8, [_join(client, world.history_id, t) for t in world.poster_tokens])

        async def create(i: int) -> tuple[str, int]:
            body = await _post(
                client,
                f"{API}/workspaces/{world.workspace_id}/channels",
                201,
                json={"name": f"team-{i:03d}", "topic": f"team {i}"},
                headers=owner,
            )
            return body["id"], body["position"]

        made_many = await _limited(8, [create(i) for i in range(channels_for_owner - 2)])
        world.other_channels = [c for c, _ in made_many]
        world.position = max([world.position, made["position"], *positions, *(p for _, p in made_many)])
        return world


async def _join(client: httpx.AsyncClient, channel_id: str, token: str) -> int:
    return (await _post(client, f"{API}/channels/{channel_id}/join", 200, headers=_auth(token)))["position"]


async def owner_channel_count(base_url: str, world: World) -> int:
    """How many channels the owner's list holds (every page), after every write so far."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        after, total = "", 0
        while True:
            headers = {**_auth(world.owner_token), "X-Hubbub-Position": str(world.position)}
            body = _ok(
                await client.get(
                    f"{API}/workspaces/{world.workspace_id}/channels",
                    params={"limit": 200, "after": after},
                    headers=headers,
                ),
                200,
            )
            total += sum(1 for c in body["items"] if c["member"])
            if not body["next_cursor"]:
                return total
            after = body["next_cursor"]
