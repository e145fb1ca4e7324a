"""Presence and typing over a real socket (the gateway of test_realtime, same fixtures).

"Never arrives" uses test_realtime's sentinel: after what must not arrive, a message the socket
may see is posted; the next frame of either kind must be that message.
"""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.messaging_helpers import API, create_channel
from tests.integration.test_realtime import api, hasty, post, server, team_of, ws

__all__ = ["api", "hasty", "server"]


async def _presence(sock, user_id: str) -> str:
    """The status of ``user_id`` in the next presence.changed frame that names them."""
    while True:
        frame = await sock.event("presence.changed")
        assert "position" not in frame  # ephemeral: not in the log
        data = frame["data"]
        assert set(data) == {"online", "away", "offline"}  # all three, always: ids by status
        if user_id in data["online"] or user_id in data["away"]:
            return "online" if user_id in data["online"] else "away"
        for item in data["offline"]:
            if item["user_id"] == user_id:
                assert set(item) == {"user_id", "last_seen_at"} and item["last_seen_at"] is not None
                return "offline"


async def test_typing_reaches_the_others_in_the_channel_once_per_burst(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea", "Cat")
    bea, cat = team.people["Bea"], team.people["Cat"]
    async with ws(server, bea) as typist, ws(server, cat) as reader:
        for _ in range(3):  # keystrokes: passed on once per few seconds, not per key
            await typist.send({"op": "typing", "channel_id": team.general_id})
        typing = await reader.event("typing")
        assert typing["channel_id"] == team.general_id and "position" not in typing
        assert typing["data"] == {"user_id": bea.id, "expires_in_s": 5}
        sentinel = await post(api, team.owner, team.general_id, "sentinel")
        assert (await reader.event("typing", "message.posted"))["data"]["id"] == sentinel["id"]
        assert (await typist.event("typing", "message.posted"))["data"]["id"] == sentinel["id"]  # not echoed


async def test_typing_in_a_channel_one_cannot_see_is_unknown_and_reaches_nobody_outside(
    api: httpx.AsyncClient, server: str
) -> None:
    team = await team_of(api, "Bea", "Cat")
    bea, cat = team.people["Bea"], team.people["Cat"]
    secret = await create_channel(api, team, team.owner, "secret", private=True)  # type: ignore[arg-type]
    async with ws(server, bea) as outsider, ws(server, cat) as other:
        await outsider.send({"op": "typing", "channel_id": secret})
        error = await outsider.recv()
        while error["op"] != "error":
            error = await outsider.recv()
        assert error["code"] == "unknown_channel"
        async with ws(server, team.owner) as insider:
            await insider.send({"op": "typing", "channel_id": secret})
            sentinel = await post(api, team.owner, team.general_id, "sentinel")
            assert (await other.event("typing", "message.posted"))["data"]["id"] == sentinel["id"]
        for bad in ({"op": "typing"}, {"op": "typing", "channel_id": 7}):
            await outsider.send(bad)
            frame = await outsider.recv()
            while frame["op"] != "error":
                frame = await outsider.recv()
            assert frame["code"] == "bad_typing"


async def test_a_socket_brings_its_user_online_away_and_offline(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea", "Cat")
    bea, cat = team.people["Bea"], team.people["Cat"]
    async with ws(server, cat) as watcher:
        async with ws(server, bea) as device:
            assert await _presence(watcher, bea.id) == "online"
            await device.send({"op": "presence", "status": "away"})
            assert await _presence(watcher, bea.id) == "away"
            listed = await api.get(f"{API}/workspaces/{team.workspace_id}/presence?user_ids={bea.id}", headers=cat.auth)
            assert listed.json()["items"][0]["status"] == "away"
            await device.send({"op": "presence", "status": "asleep"})
            error = await device.recv()
            while error["op"] != "error":
                error = await device.recv()
            assert error["code"] == "bad_presence"
        assert await _presence(watcher, bea.id) == "offline"  # a clean close: at once


async def test_a_second_device_keeps_its_user_online_when_the_first_closes(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea", "Cat")
    bea, cat = team.people["Bea"], team.people["Cat"]
    async with ws(server, cat) as watcher, ws(server, bea):
        assert await _presence(watcher, bea.id) == "online"
        async with ws(server, bea) as second:
            await second.send({"op": "presence", "status": "away"})
            await second.send({"op": "heartbeat"})
            assert (await second.recv())["op"] == "heartbeat_ack"  # the away frame was handled
        listed = await api.get(f"{API}/workspaces/{team.workspace_id}/presence?user_ids={bea.id}", headers=cat.auth)
        assert listed.json()["items"][0]["status"] == "online"  # the first device is still active


async def test_missed_heartbeats_make_the_user_offline(api: httpx.AsyncClient, hasty: str) -> None:
    team = await team_of(api, "Bea", "Cat")
    bea, cat = team.people["Bea"], team.people["Cat"]
    async with ws(hasty, cat) as watcher, ws(hasty, bea) as silent:

        async def heartbeats() -> None:  # the watcher stays; only the silent one misses its heartbeats
            while True:
                await watcher.send({"op": "heartbeat"})
                await asyncio.sleep(0.2)

        beating = asyncio.create_task(heartbeats())
        try:
            assert await _presence(watcher, bea.id) == "online"
            assert await _presence(watcher, bea.id) == "offline"
        finally:
            beating.cancel()
        assert await silent.closed() == 4009
