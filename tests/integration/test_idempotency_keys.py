"""Idempotency keys over HTTP: a key is the caller's own, and it repeats only the request it came
with (``commands/idempotency.py``). The first four tests are the probe's findings (issue 16 item
13): each got a 2xx that did nothing before keys were scoped."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.testing import AsyncTestClient

from tests.integration.conftest import User, register
from tests.integration.messaging_helpers import (
    API,
    Team,
    at,
    channels_of,
    create_channel,
    create_workspace,
    join_workspace,
    problem,
)


def keyed(user: User, key: str) -> dict[str, str]:
    return {**user.auth, "Idempotency-Key": key}


async def team_with(api: AsyncTestClient, *names: str) -> Team:
    team = await create_workspace(api, await register(api, "Owner"))
    for name in names:
        await join_workspace(api, team, name)
    return team


async def events(pool: Any, stream_id: str, type_: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM events WHERE stream_id = %s AND type = %s", (stream_id, type_))
        return (await cur.fetchone())[0]


async def channel(api: AsyncTestClient, team: Team, user: User, channel_id: str) -> dict:
    response = await api.get(f"{API}/channels/{channel_id}", headers=at(user, team.position))
    assert response.status_code == 200, response.text
    return response.json()


def moved(team: Team, response) -> dict:
    assert response.status_code in (200, 201), response.text
    team.position = max(team.position, response.json()["position"])
    return response.json()


async def test_another_caller_joining_with_the_same_key_is_added(api: AsyncTestClient) -> None:
    team = await team_with(api, "Bee", "Eve")
    bee, eve = team.people["Bee"], team.people["Eve"]
    cid = await create_channel(api, team, team.owner, "open")
    moved(team, await api.post(f"{API}/channels/{cid}/join", headers=keyed(bee, "join-1")))
    moved(team, await api.post(f"{API}/channels/{cid}/join", headers=keyed(eve, "join-1")))
    assert (await channels_of(api, team, eve))[cid]["member"] is True
    assert (await channel(api, team, bee, cid))["member_count"] == 3


async def test_archive_under_the_key_of_an_earlier_patch_is_422_and_archives_nothing(api: AsyncTestClient) -> None:
    team = await team_with(api)
    cid = await create_channel(api, team, team.owner, "keep")
    moved(team, await api.patch(f"{API}/channels/{cid}", json={"topic": "t"}, headers=keyed(team.owner, "k-7")))
    body = problem(await api.post(f"{API}/channels/{cid}/archive", headers=keyed(team.owner, "k-7")), 422)
    assert "Idempotency-Key" in body["detail"] and "updateChannel" in body["detail"]
    assert (await channel(api, team, team.owner, cid))["archived"] is False
    moved(team, await api.post(f"{API}/channels/{cid}/archive", headers=keyed(team.owner, "k-8")))  # a new key: done
    assert (await channel(api, team, team.owner, cid))["archived"] is True


async def test_a_read_marker_under_a_reused_key_is_422_not_a_marker_left_behind(api: AsyncTestClient) -> None:
    team = await team_with(api, "Bee")
    bee = team.people["Bee"]
    for text in ("one", "two"):
        moved(
            team,
            await api.post(f"{API}/channels/{team.general_id}/messages", json={"text": text}, headers=team.owner.auth),
        )
    url = f"{API}/channels/{team.general_id}/read"
    first = moved(team, await api.post(url, json={"seq": 1}, headers=keyed(bee, "read-1")))
    again = moved(team, await api.post(url, json={"seq": 1}, headers=keyed(bee, "read-1")))
    assert again == first  # the same request: the same answer
    problem(await api.post(url, json={"seq": 2}, headers=keyed(bee, "read-1")), 422)
    assert (await channels_of(api, team, bee))[team.general_id]["last_read_seq"] == 1
    assert moved(team, await api.post(url, json={"seq": 2}, headers=keyed(bee, "read-2")))["last_read_seq"] == 2


async def test_a_post_reusing_a_key_with_other_text_is_422_and_posts_nothing(api: AsyncTestClient, pool: Any) -> None:
    team = await team_with(api)
    url = f"{API}/channels/{team.general_id}/messages"
    for headers, extra in ((keyed(team.owner, "post-1"), {}), (team.owner.auth, {"client_msg_id": "cm-1"})):
        first = moved(team, await api.post(url, json={"text": "first", **extra}, headers=headers))
        assert moved(team, await api.post(url, json={"text": "first", **extra}, headers=headers)) == first
        body = problem(await api.post(url, json={"text": "second", **extra}, headers=headers), 422)
        assert body["detail"].startswith("this Idempotency-Key" if not extra else "this client_msg_id")
        assert await events(pool, f"message-{first['id']}", "message.posted") == 1
    page = await api.get(url, params={"limit": 100}, headers=at(team.owner, team.position))
    assert [m["text"] for m in page.json()["items"]] == ["first", "first"]


async def test_a_repeated_request_is_answered_alike_and_appended_once(api: AsyncTestClient, pool: Any) -> None:
    team = await team_with(api)
    cid = await create_channel(api, team, team.owner, "topical")
    sent = [
        await api.patch(f"{API}/channels/{cid}", json={"topic": "once"}, headers=keyed(team.owner, "t-1"))
        for _ in range(3)
    ]
    assert len({r.status_code for r in sent}) == 1 and sent[0].json() == sent[1].json() == sent[2].json()
    moved(team, sent[0])
    assert await events(pool, f"channel-{cid}", "channel.topic_set") == 1
    racing = await asyncio.gather(
        *(
            api.patch(f"{API}/channels/{cid}", json={"topic": "race"}, headers=keyed(team.owner, "t-2"))
            for _ in range(4)
        )
    )
    assert {r.status_code for r in racing} == {200} and len({r.text for r in racing}) == 1
    assert await events(pool, f"channel-{cid}", "channel.topic_set") == 2


async def test_the_same_key_with_another_body_is_422_even_when_racing(api: AsyncTestClient) -> None:
    team = await team_with(api)
    cid = await create_channel(api, team, team.owner, "contested")
    url = f"{API}/channels/{cid}"
    moved(team, await api.patch(url, json={"topic": "a"}, headers=keyed(team.owner, "b-1")))
    problem(await api.patch(url, json={"topic": "b"}, headers=keyed(team.owner, "b-1")), 422)
    racing = await asyncio.gather(
        *(api.patch(url, json={"topic": topic}, headers=keyed(team.owner, "b-2")) for topic in ("x", "y", "z"))
    )
    done = [r for r in racing if r.status_code == 200]
    assert len(done) == 1 and sorted(r.status_code for r in racing) == [200, 422, 422]
    moved(team, done[0])
    assert (await channel(api, team, team.owner, cid))["topic"] == done[0].json()["topic"]


async def test_different_callers_with_the_same_key_each_get_their_own_request_done(api: AsyncTestClient) -> None:
    team = await team_with(api, "Bee")
    bee = team.people["Bee"]
    url = f"{API}/channels/{team.general_id}/messages"
    mine = moved(team, await api.post(url, json={"text": "owner's"}, headers=keyed(team.owner, "shared")))
    hers = moved(team, await api.post(url, json={"text": "bee's"}, headers=keyed(bee, "shared")))
    assert mine["id"] != hers["id"]
    made = [
        moved(team, await api.post(f"{API}/workspaces", json={"name": "Same"}, headers=keyed(u, "ws-1")))
        for u in (team.owner, bee)
    ]
    assert made[0]["id"] != made[1]["id"]
