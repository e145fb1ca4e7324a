"""Presence over HTTP, and the presence.changed frames the fan-out publishes to NATS."""

from __future__ import annotations

import asyncio
import json

import nats
from litestar.testing import AsyncTestClient

from tests.integration.conftest import register
from tests.integration.messaging_helpers import at, create_workspace, join_workspace, problem


async def _statuses(api: AsyncTestClient, team, viewer, query: str = "") -> dict[str, str]:
    response = await api.get(
        f"/api/v1/workspaces/{team.workspace_id}/presence{query}", headers=at(viewer, team.position)
    )
    assert response.status_code == 200, response.text
    return {item["user_id"]: item["status"] for item in response.json()["items"]}


async def test_set_presence_shows_in_the_workspace_for_its_members(api: AsyncTestClient) -> None:
    owner = await register(api, "Olga")
    team = await create_workspace(api, owner)
    member = await join_workspace(api, team, "Mia")
    assert (await _statuses(api, team, owner))[member.id] == "offline"

    response = await api.put("/api/v1/presence", json={"status": "active"}, headers=member.auth)
    assert response.status_code == 200 and response.json()["status"] == "online"
    assert response.json()["last_seen_at"] is not None
    assert (await _statuses(api, team, owner))[member.id] == "online"

    await api.put("/api/v1/presence", json={"status": "away"}, headers=member.auth)
    assert (await _statuses(api, team, owner, f"?user_ids={member.id}")) == {member.id: "away"}


async def test_presence_of_a_workspace_one_is_not_in_is_404(api: AsyncTestClient) -> None:
    owner, stranger = await register(api, "Olga"), await register(api, "Sid")
    team = await create_workspace(api, owner)
    problem(await api.get(f"/api/v1/workspaces/{team.workspace_id}/presence", headers=stranger.auth), 404)
    problem(await api.get("/api/v1/workspaces/not-an-id/presence", headers=stranger.auth), 404)


async def test_asking_for_people_outside_the_workspace_tells_nothing_about_them(api: AsyncTestClient) -> None:
    owner, outsider = await register(api, "Olga"), await register(api, "Otto")
    team = await create_workspace(api, owner)
    await api.put("/api/v1/presence", json={"status": "active"}, headers=outsider.auth)
    assert await _statuses(api, team, owner, f"?user_ids={outsider.id},{owner.id}") == {owner.id: "offline"}


async def test_bad_presence_input_is_a_problem(api: AsyncTestClient) -> None:
    owner = await register(api, "Olga")
    team = await create_workspace(api, owner)
    busy = problem(await api.put("/api/v1/presence", json={"status": "busy"}, headers=owner.auth), 422)
    assert busy["errors"][0]["field"] == "status"
    problem(await api.put("/api/v1/presence", json={"status": "active", "extra": 1}, headers=owner.auth), 422)
    problem(await api.put("/api/v1/presence", content=b"{", headers=owner.auth), 400)
    problem(await api.put("/api/v1/presence", json={"status": "active"}), 401)
    too_many = ",".join(f"u{i}" for i in range(201))
    problem(
        await api.get(f"/api/v1/workspaces/{team.workspace_id}/presence?user_ids={too_many}", headers=owner.auth), 422
    )


async def test_changes_are_published_once_a_second_as_one_frame_per_workspace(
    api: AsyncTestClient, service_urls: dict[str, str]
) -> None:
    owner = await register(api, "Olga")
    team = await create_workspace(api, owner)
    people = [await join_workspace(api, team, f"P{i}") for i in range(3)]
    nc = await nats.connect(service_urls["nats"])
    frames: asyncio.Queue[dict] = asyncio.Queue()

    async def got(msg) -> None:
        frames.put_nowait(json.loads(msg.data))

    await nc.subscribe(f"hubbub.ws.{team.workspace_id}.presence", cb=got)
    await nc.flush()
    try:
        # The fan-out publishes on a clock of its own. The owner's change finds its tick: when its
        # frame comes, the next tick is a second away, and the three changes made now all go in it
        # (made at any other moment, a tick could fall between them and split them in two frames).
        await api.put("/api/v1/presence", json={"status": "active"}, headers=owner.auth)
        assert (await asyncio.wait_for(frames.get(), 5))["data"]["online"] == [owner.id]
        await asyncio.gather(
            *(api.put("/api/v1/presence", json={"status": "active"}, headers=person.auth) for person in people)
        )
        frame = await asyncio.wait_for(frames.get(), 5)
    finally:
        await nc.close()
    assert frame["op"] == "event" and frame["type"] == "presence.changed" and "position" not in frame
    assert frame["workspace_id"] == team.workspace_id
    # the three changes, in one frame; ids only: no status, no last_seen_at
    assert sorted(frame["data"]["online"]) == sorted(p.id for p in people)
    assert frame["data"]["away"] == [] and frame["data"]["offline"] == []
