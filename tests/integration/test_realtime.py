"""The WebSocket gateway over a real socket: the app under uvicorn (as ``hubbub serve`` runs it),
real PostgreSQL, NATS and Redis, and the ``websockets`` client a native app would use.

Each test tells a user's story: what arrives, in which order, and what never arrives. "Never"
is checked with a sentinel: after the event someone must not get, a message they may see is
posted; events come in log order, so the next one they get must be the sentinel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import psycopg
import pytest
import uvicorn
from litestar import Litestar
from litestar.types import Empty
from litestar.utils.scope.state import ScopeState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hubbub.app import create_app
from infra.settings import load_settings
from realtime.gateway import STATE_KEY as GATEWAY
from tests.integration.conftest import User, register
from tests.integration.messaging_helpers import (
    API,
    Team,
    accept,
    add_to_channel,
    create_channel,
    create_workspace,
    invite,
    join_workspace,
    open_dm,
)

WAIT_S = 10.0  # how long a test waits for a frame before it fails (not a performance target)


class Address(str):
    """``host:port`` of a served app, with the app (for tests that reach into the gateway)."""

    app: Litestar


@contextlib.asynccontextmanager
async def serving(settings: Any, ws: str = "realtime.wire:GatewayProtocol") -> AsyncIterator[Address]:
    """The app under uvicorn on a free port of 127.0.0.1 (with ``hubbub serve``'s WebSocket protocol)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, ws=ws, ws_ping_interval=None)
    )
    task = asyncio.create_task(server._serve(sockets=[sock]))  # serve() would take over the signals
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        address = Address("127.0.0.1:%d" % sock.getsockname()[1])
        address.app = app
        yield address
    finally:
        server.should_exit = True
        await task


def _settings(service_urls: dict[str, str], database_url: str, **overrides: Any) -> Any:
    return load_settings(
        {},
        database_url=database_url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        rate_post_per_s=1000,
        rate_post_burst=1000,
        rate_register_per_s=1000.0,
        rate_register_burst=1000,
        **overrides,
    )


@pytest.fixture(scope="module")
async def server(service_urls: dict[str, str], migrated_url: str) -> AsyncIterator[Address]:
    async with serving(_settings(service_urls, migrated_url)) as address:
        yield address


@pytest.fixture(scope="module")
async def hasty(service_urls: dict[str, str], migrated_url: str) -> AsyncIterator[str]:
    """A second gateway process on the same log, with short heartbeat and hello timeouts."""
    settings = _settings(
        service_urls,
        migrated_url,
        ws_heartbeat_s=0.4,
        ws_hello_timeout_s=0.5,
        allowed_origins=["https://chat.example.com"],
    )
    async with serving(settings) as address:
        yield address


@pytest.fixture(scope="module")
async def api(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        yield client


class Socket:
    """A client's WebSocket: frames as dicts, heartbeat acks set aside."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ready: dict[str, Any] = {}

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            return json.loads(await self.ws.recv())

    async def event(self, *types: str) -> dict[str, Any]:
        """The next event frame of one of ``types`` (skipping others); with no types, the next
        event from the log (ephemeral ones, presence and typing, have no position and come at
        their own times, so they are skipped too)."""
        while True:
            frame = await self.recv()
            if frame["op"] == "event" and (frame["type"] in types if types else frame.get("position") is not None):
                return frame

    async def message(self) -> dict[str, Any]:
        return (await self.event("message.posted"))["data"]

    async def closed(self) -> int:
        """Read until the server closes; its close code."""
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(WAIT_S):
                while True:
                    await self.ws.recv()
        assert self.ws.close_code is not None
        return self.ws.close_code


@contextlib.asynccontextmanager
async def ws(
    address: str, user: User | None = None, resume_from: int | None = None, **headers: str
) -> AsyncIterator[Socket]:
    """A socket to ``address``; with ``user``, after hello and ready."""
    async with connect(f"ws://{address}{API}/ws", additional_headers=headers, open_timeout=WAIT_S) as conn:
        sock = Socket(conn)
        if user is not None:
            await sock.send({"op": "hello", "token": user.token, "resume_from": resume_from})
            sock.ready = await sock.recv()
            assert sock.ready["op"] == "ready", sock.ready
        yield sock


async def post(api: httpx.AsyncClient, user: User, channel_id: str, text: str, **extra: Any) -> dict[str, Any]:
    response = await api.post(f"{API}/channels/{channel_id}/messages", json={"text": text, **extra}, headers=user.auth)
    assert response.status_code == 201, response.text
    return response.json()


async def team_of(api: httpx.AsyncClient, *names: str) -> Team:
    team = await create_workspace(api, await register(api, "Owner"))  # type: ignore[arg-type]
    for name in names:
        await join_workspace(api, team, name)  # type: ignore[arg-type]
    # A socket opened before the read models have the set-up would get it as live events (its
    # ready position is theirs): tests expect their own events first, so wait for them.
    settled = await api.get(
        f"{API}/workspaces/{team.workspace_id}", headers={**team.owner.auth, "X-Hubbub-Position": str(team.position)}
    )
    assert settled.status_code == 200 and "x-hubbub-stale" not in settled.headers, settled.text
    return team


# -- live delivery ---------------------------------------------------------------------------------


async def test_messages_arrive_live_in_order_as_the_read_api_shows_them(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea")
    bea = team.people["Bea"]
    async with ws(server, bea) as sock:
        assert sock.ready["heartbeat_s"] == 30 and sock.ready["user_id"] == bea.id and sock.ready["session_id"]
        posted = [await post(api, team.owner, team.general_id, f"hello {i}") for i in range(5)]
        frames = [await sock.event("message.posted") for _ in posted]
    assert [f["data"]["id"] for f in frames] == [p["id"] for p in posted]
    assert [f["position"] for f in frames] == sorted(f["position"] for f in frames)
    assert all(f["position"] > sock.ready["position"] for f in frames)
    assert [f["data"]["seq"] for f in frames] == [p["seq"] for p in posted]
    assert frames[0]["workspace_id"] == team.workspace_id and frames[0]["channel_id"] == team.general_id
    fetched = await api.get(f"{API}/messages/{posted[0]['id']}", headers=bea.auth)
    assert frames[0]["data"] == fetched.json()


async def test_the_publishers_checkpoint_follows_the_last_frame_with_nothing_after_it(
    api: httpx.AsyncClient, server: str, migrated_url: str
) -> None:
    """``hubbub projections status`` shows the publisher's lag from its checkpoint, which it saves
    apart from publishing (at most every ``CHECKPOINT_EVERY_S``): once a frame is out, the
    checkpoint gets there without another event to carry it."""
    team = await team_of(api, "Bea")
    async with ws(server, team.people["Bea"]) as sock:
        await post(api, team.owner, team.general_id, "the last word")
        frame = await sock.event("message.posted")
    async with await psycopg.AsyncConnection.connect(migrated_url, autocommit=True) as conn:
        async with asyncio.timeout(WAIT_S):
            while True:
                cur = await conn.execute("SELECT position FROM projection_checkpoints WHERE name = 'realtime'")
                if (await cur.fetchone())[0] >= frame["position"]:
                    break
                await asyncio.sleep(0.05)


async def test_under_another_websocket_protocol_frames_go_through_asgi_in_order(
    api: httpx.AsyncClient, service_urls: dict[str, str], migrated_url: str
) -> None:
    team = await team_of(api, "Bea")
    async with (
        serving(_settings(service_urls, migrated_url), ws="websockets-sansio") as plain,
        ws(plain, team.people["Bea"]) as sock,
    ):
        posted = [await post(api, team.owner, team.general_id, f"hello {i}") for i in range(20)]
        assert [(await sock.message())["id"] for _ in posted] == [p["id"] for p in posted]
        assert {type(c.sink).__name__ for c in plain.app.state[GATEWAY].hub.connections} == {"AsgiSink"}


async def test_an_open_socket_keeps_nothing_of_its_handshake(
    api: httpx.AsyncClient, service_urls: dict[str, str], migrated_url: str
) -> None:
    # Memory per idle socket is a target (issue 4): the handshake's request and response, with
    # their headers, were ~7 KiB of each socket's ~30 KiB of Python objects for as long as it
    # stayed open (bench.realtime --python-objects).
    team = await team_of(api, "Bea")
    async with serving(_settings(service_urls, migrated_url)) as address, ws(address, team.people["Bea"]) as sock:
        posted = await post(api, team.owner, team.general_id, "hello")
        assert (await sock.message())["id"] == posted["id"]
        [conn] = address.app.state[GATEWAY].hub.connections
        proto = conn.sink._proto
        assert proto.handshake_complete and proto.request is None and proto.response is None
        assert proto.scope["headers"] == [] and ScopeState.from_scope(proto.scope).headers is Empty


async def test_replies_edits_reactions_and_deletes_reach_the_channel(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea")
    owner = team.owner
    async with ws(server, team.people["Bea"]) as sock:
        root = await post(api, owner, team.general_id, "root")
        await post(api, owner, team.general_id, "a reply", thread_root_id=root["id"])
        assert (
            await api.patch(f"{API}/messages/{root['id']}", json={"text": "root, edited"}, headers=owner.auth)
        ).status_code == 200
        assert (
            await api.put(f"{API}/messages/{root['id']}/reactions/%F0%9F%91%8D", headers=owner.auth)
        ).status_code == 200
        assert (await api.delete(f"{API}/messages/{root['id']}", headers=owner.auth)).status_code == 200
        frames = [await sock.event() for _ in range(6)]
    assert [f["type"] for f in frames] == [
        "message.posted",
        "message.posted",
        "thread.updated",
        "message.edited",
        "reaction.added",
        "message.deleted",
    ]
    assert frames[2]["position"] == frames[1]["position"] and frames[2]["data"]["reply_count"] == 1
    assert frames[4]["data"]["emoji"] == "\N{THUMBS UP SIGN}" and frames[4]["data"]["message"]["id"] == root["id"]
    assert frames[5]["data"]["deleted"] is True and frames[5]["data"]["text"] == ""


async def test_every_device_of_a_user_gets_the_same_events(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea")
    bea = team.people["Bea"]
    login = await api.post(f"{API}/auth/login", json={"email": bea.email, "password": "correct horse battery"})
    phone = User(bea.id, bea.email, login.json()["token"], bea.display_name)
    async with ws(server, bea) as laptop, ws(server, phone) as handset:
        assert laptop.ready["session_id"] != handset.ready["session_id"]
        sent = await post(api, team.owner, team.general_id, "to both")
        assert (await laptop.message())["id"] == sent["id"]
        assert (await handset.message())["id"] == sent["id"]
        read = await api.post(f"{API}/channels/{team.general_id}/read", json={"seq": sent["seq"]}, headers=phone.auth)
        assert read.status_code == 200, read.text
        marker = await laptop.event("read_marker.moved")
        assert marker["data"] == {"channel_id": team.general_id, "seq": sent["seq"]}
        assert (await handset.event("read_marker.moved"))["position"] == marker["position"]


# -- privacy -----------------------------------------------------------------------------------------


async def test_private_channels_reach_members_only_from_the_moment_they_are_added_until_removed(
    api: httpx.AsyncClient, server: str
) -> None:
    team = await team_of(api, "Bea")
    owner, bea = team.owner, team.people["Bea"]
    secret = await create_channel(api, team, owner, "secret", private=True)  # type: ignore[arg-type]
    async with ws(server, bea) as sock:
        await post(api, owner, secret, "not for Bea")
        sentinel = await post(api, owner, team.general_id, "sentinel 1")
        assert (await sock.message())["id"] == sentinel["id"]

        await add_to_channel(api, team, secret, owner, bea)  # type: ignore[arg-type]
        joined = await sock.event("channel.member_joined")
        assert joined["channel_id"] == secret and joined["data"]["user_id"] == bea.id
        inside = await post(api, owner, secret, "welcome, Bea")  # posted right away: no gap allowed
        assert (await sock.message())["id"] == inside["id"]

        removed = await api.delete(f"{API}/channels/{secret}/members/{bea.id}", headers=owner.auth)
        assert removed.status_code == 200, removed.text
        left = await sock.event("channel.member_left")
        assert left["channel_id"] == secret and left["data"]["user_id"] == bea.id
        await post(api, owner, secret, "Bea is gone")
        sentinel = await post(api, owner, team.general_id, "sentinel 2")
        assert (await sock.message())["id"] == sentinel["id"]


async def test_a_new_public_channel_reaches_members_at_once_and_guests_only_once_added(
    api: httpx.AsyncClient, server: str
) -> None:
    team = await team_of(api, "Bea")
    owner, bea = team.owner, team.people["Bea"]
    gus = await join_workspace(api, team, "Gus", role="guest")  # type: ignore[arg-type]
    dm = await open_dm(api, team, owner, gus)  # type: ignore[arg-type]
    async with ws(server, bea) as member, ws(server, gus) as guest:
        news = await create_channel(api, team, owner, "news")  # type: ignore[arg-type]
        created = await member.event("channel.created")
        assert created["channel_id"] == news and created["data"]["private"] is False
        first = await post(api, owner, news, "first news")  # right after: Bea has not joined, but may see it
        assert (await member.message())["id"] == first["id"]
        await post(api, owner, team.general_id, "not for guests")
        sentinel = await post(api, owner, dm, "for Gus")
        assert (await guest.event())["data"]["id"] == sentinel["id"]  # no channel.created, nothing of #general

        await add_to_channel(api, team, news, owner, gus)  # type: ignore[arg-type]
        assert (await guest.event("channel.member_joined"))["channel_id"] == news
        second = await post(api, owner, news, "second news")
        assert (await guest.message())["id"] == second["id"]


async def test_direct_messages_reach_their_people_only(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea", "Cy")
    owner, bea, cy = team.owner, team.people["Bea"], team.people["Cy"]
    async with ws(server, bea) as bea_sock, ws(server, cy) as cy_sock:
        dm = await open_dm(api, team, owner, bea)  # type: ignore[arg-type]
        opened = await bea_sock.event("channel.member_joined")
        assert opened["channel_id"] == dm and opened["data"]["channel"]["kind"] == "dm"
        whisper = await post(api, owner, dm, "just us")
        assert (await bea_sock.message())["id"] == whisper["id"]
        sentinel = await post(api, owner, team.general_id, "everyone")
        assert (await cy_sock.event())["data"]["id"] == sentinel["id"]


async def test_a_member_removed_from_the_workspace_hears_nothing_more_from_it(
    api: httpx.AsyncClient, server: str
) -> None:
    team = await team_of(api, "Bea")
    owner, bea = team.owner, team.people["Bea"]
    other = await create_workspace(api, owner, "Elsewhere")  # type: ignore[arg-type]
    await accept(api, other, bea, await invite(api, other))  # type: ignore[arg-type]
    async with ws(server, bea) as sock:
        removed = await api.delete(f"{API}/workspaces/{team.workspace_id}/members/{bea.id}", headers=owner.auth)
        assert removed.status_code == 200, removed.text
        left = await sock.event("workspace.member_left")
        assert left["workspace_id"] == team.workspace_id and left["data"]["user_id"] == bea.id
        await post(api, owner, team.general_id, "after Bea left")
        sentinel = await post(api, owner, other.general_id, "Bea still hears the other workspace")
        assert (await sock.message())["id"] == sentinel["id"]


# -- resume ------------------------------------------------------------------------------------------


async def test_resume_replays_what_was_missed_once_in_order_then_goes_live(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea")
    owner, bea = team.owner, team.people["Bea"]
    secret = await create_channel(api, team, owner, "secret2", private=True)  # type: ignore[arg-type]
    async with ws(server, bea) as sock:
        first = await post(api, owner, team.general_id, "seen live")
        last = (await sock.event("message.posted"))["position"]
        assert (await api.get(f"{API}/me", headers=bea.auth)).status_code == 200
    missed = [await post(api, owner, team.general_id, f"missed {i}") for i in range(3)]
    await post(api, owner, secret, "never for Bea")
    async with ws(server, bea, resume_from=last) as sock:
        assert sock.ready["resumed"] is True and sock.ready["position"] == last
        live_task = asyncio.create_task(post(api, owner, team.general_id, "live again"))
        got = [await sock.message() for _ in range(4)]
        live = await live_task
    assert [m["id"] for m in got] == [m["id"] for m in missed] + [live["id"]]
    assert first["id"] not in [m["id"] for m in got]


async def test_reconnecting_while_others_post_gets_every_message_once_in_order(
    api: httpx.AsyncClient, server: str, hasty: str
) -> None:
    team = await team_of(api, "Bea")
    owner, bea = team.owner, team.people["Bea"]
    async with ws(server, bea) as sock:
        position = sock.ready["position"]
    writer = asyncio.create_task(_post_many(api, owner, team.general_id, 40))
    got: list[str] = []
    for turn in range(200):
        if len(got) == 40:
            break
        async with ws((server, hasty)[turn % 2], bea, resume_from=position) as sock:
            heartbeat_on_hasty = asyncio.create_task(_heartbeats(sock))
            try:
                for _ in range(1 + turn % 4):  # a few frames, then drop the connection
                    if len(got) == 40:
                        break
                    frame = await sock.event("message.posted")
                    got.append(frame["data"]["id"])
                    position = frame["position"]
            finally:
                heartbeat_on_hasty.cancel()
    posted = await writer
    assert got == [p["id"] for p in posted]


async def _post_many(api: httpx.AsyncClient, user: User, channel_id: str, n: int) -> list[dict[str, Any]]:
    return [await post(api, user, channel_id, f"message {i}") for i in range(n)]


async def _heartbeats(sock: Socket) -> None:
    while True:
        await asyncio.sleep(0.2)
        await sock.send({"op": "heartbeat"})


async def test_resume_on_another_gateway_process(api: httpx.AsyncClient, server: str, hasty: str) -> None:
    team = await team_of(api, "Bea")
    owner, bea = team.owner, team.people["Bea"]
    async with ws(server, bea) as sock:
        await post(api, owner, team.general_id, "on the first gateway")
        last = (await sock.event("message.posted"))["position"]
    missed = await post(api, owner, team.general_id, "while away")
    async with ws(hasty, bea, resume_from=last) as sock:
        assert (await sock.message())["id"] == missed["id"]
        live = await post(api, owner, team.general_id, "live on the second")
        assert (await sock.message())["id"] == live["id"]


async def test_resume_shows_only_what_the_user_may_see_now(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea")
    owner, bea = team.owner, team.people["Bea"]
    secret = await create_channel(api, team, owner, "secret3", private=True)  # type: ignore[arg-type]
    await add_to_channel(api, team, secret, owner, bea)  # type: ignore[arg-type]
    async with ws(server, bea) as sock:
        start = sock.ready["position"]
    await post(api, owner, secret, "before the removal")
    assert (await api.delete(f"{API}/channels/{secret}/members/{bea.id}", headers=owner.auth)).status_code == 200
    sentinel = await post(api, owner, team.general_id, "public")
    async with ws(server, bea, resume_from=start) as sock:
        left = await sock.event("channel.member_left", "message.posted")
        assert left["type"] == "channel.member_left"
        assert (await sock.message())["id"] == sentinel["id"]


async def test_after_a_nats_outage_the_gateway_resumes_its_sockets_itself(
    api: httpx.AsyncClient, server: Address, service_urls: dict[str, str]
) -> None:
    team = await team_of(api, "Bea")
    owner, bea = team.owner, team.people["Bea"]
    hub = server.app.state[GATEWAY].hub
    watcher = await nats.connect(service_urls["nats"])
    published: asyncio.Queue[Any] = asyncio.Queue()
    await watcher.subscribe(f"hubbub.ch.{team.general_id}", cb=published.put)
    try:
        async with ws(server, bea) as sock:
            before = await post(api, owner, team.general_id, "before the outage")
            assert (await sock.message())["id"] == before["id"]
            for sub in hub._subs.values():
                sub._cb = _dropping  # NATS is away: what is published now never reaches this gateway
            lost = [await post(api, owner, team.general_id, f"lost {i}") for i in range(3)]
            async with asyncio.timeout(WAIT_S):
                while published.qsize() < 4:  # "before" and the three lost ones went out
                    await asyncio.sleep(0.02)
            for sub in hub._subs.values():
                sub._cb = hub._collect
            await hub._on_reconnected()
            after = await post(api, owner, team.general_id, "after the outage")
            got = [await sock.message() for _ in range(4)]
    finally:
        await watcher.close()
    assert [m["id"] for m in got] == [m["id"] for m in lost] + [after["id"]]


async def _dropping(msg: Any) -> None:
    pass


# -- bad input, tokens, heartbeats ----------------------------------------------------------------------


async def test_a_bad_token_closes_with_4001(server: str) -> None:
    async with ws(server) as sock:
        await sock.send({"op": "hello", "token": "hbt_not-a-token", "resume_from": None})
        assert await sock.closed() == 4001
    async with ws(server) as sock:
        await sock.send({"op": "hello", "resume_from": None})
        assert (await sock.recv())["code"] == "bad_hello"
        assert await sock.closed() == 4001


async def test_logout_closes_that_sessions_sockets_only(api: httpx.AsyncClient, server: str) -> None:
    bea = await register(api, "Bea")  # type: ignore[arg-type]
    login = await api.post(f"{API}/auth/login", json={"email": bea.email, "password": "correct horse battery"})
    phone = User(bea.id, bea.email, login.json()["token"], bea.display_name)
    async with ws(server, bea) as laptop, ws(server, phone) as handset:
        assert (await api.post(f"{API}/auth/logout", headers=phone.auth)).status_code == 204
        assert await handset.closed() == 4001
        await laptop.send({"op": "heartbeat"})
        assert await laptop.recv() == {"op": "heartbeat_ack"}


async def test_revoking_a_lost_phone_closes_its_sockets(api: httpx.AsyncClient, server: str) -> None:
    bea = await register(api, "Bea")  # type: ignore[arg-type]
    login = await api.post(f"{API}/auth/login", json={"email": bea.email, "password": "correct horse battery"})
    phone = User(bea.id, bea.email, login.json()["token"], bea.display_name)
    async with ws(server, bea) as laptop, ws(server, phone) as handset:
        revoked = await api.delete(f"{API}/me/sessions/{handset.ready['session_id']}", headers=bea.auth)
        assert revoked.status_code == 204, revoked.text
        assert await handset.closed() == 4001
        await laptop.send({"op": "heartbeat"})
        assert await laptop.recv() == {"op": "heartbeat_ack"}


async def test_a_resume_too_far_back_says_ready_first_then_refetch(
    api: httpx.AsyncClient, service_urls: dict[str, str], migrated_url: str
) -> None:
    team = await team_of(api, "Bea")
    bea = team.people["Bea"]
    async with serving(_settings(service_urls, migrated_url, ws_resume_max_events=2)) as short:
        async with ws(short, bea) as sock:
            left_at = sock.ready["position"]
        for i in range(4):
            last = await post(api, team.owner, team.general_id, f"while away {i}")
        settled = await api.get(
            f"{API}/channels/{team.general_id}",  # read models past them: upto is beyond
            headers={**bea.auth, "X-Hubbub-Position": str(last["position"])},
        )
        assert "x-hubbub-stale" not in settled.headers
        async with ws(short) as sock:
            await sock.send({"op": "hello", "token": bea.token, "resume_from": left_at})
            ready = await sock.recv()
            assert ready["op"] == "ready" and ready["resumed"] is False and ready["position"] > left_at
            assert (await sock.recv())["code"] == "resume_unavailable"


async def test_a_client_that_stops_reading_is_closed_with_4008_and_resumes_without_gap(
    api: httpx.AsyncClient, service_urls: dict[str, str], migrated_url: str
) -> None:
    team = await team_of(api, "Bea", "Cy")
    bea, cy = team.people["Bea"], team.people["Cy"]
    big = "x" * 30_000
    async with serving(_settings(service_urls, migrated_url, ws_send_queue=4)) as cramped, ws(cramped, cy) as quick:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few frames
        host, port = cramped.split(":")
        client.connect((host, int(port)))
        async with connect(f"ws://{cramped}{API}/ws", sock=client, max_queue=1, open_timeout=WAIT_S) as raw:
            stalled = Socket(raw)
            await stalled.send({"op": "hello", "token": bea.token, "resume_from": None})
            assert (await stalled.recv())["op"] == "ready"
            gateway = cramped.app.state[GATEWAY]
            sent = []
            while any(c.user_id == bea.id for c in gateway.hub.connections) and len(sent) < 400:
                sent.append(await post(api, team.owner, team.general_id, f"{len(sent)} {big}"))
                assert (await quick.message())["id"] == sent[-1]["id"]  # the others are not held up
            assert len(sent) < 400, "the stalled socket was never closed"
            got, code = [], None
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(WAIT_S):
                    while True:
                        frame = json.loads(await raw.recv())
                        if frame.get("type") == "message.posted":
                            got.append(frame)
            code, reason = raw.close_code, raw.close_reason or ""
        assert code == 4008, (code, reason)
        assert [f["data"]["id"] for f in got] == [m["id"] for m in sent[: len(got)]]
        hint = int(reason.rsplit(" ", 1)[1])  # "too slow; reconnect with resume_from N"
        assert got and hint == got[-1]["position"]
        more = [m["id"] for m in sent[len(got) :]]
        async with ws(cramped, bea, resume_from=hint) as back:
            assert [(await back.message())["id"] for _ in more] == more


async def test_forged_resume_positions_get_an_error_and_4002(api: httpx.AsyncClient, server: str) -> None:
    bea = await register(api, "Bea")  # type: ignore[arg-type]
    for forged in (-1, 10**15, "7", 1.5, True):
        async with ws(server) as sock:
            await sock.send({"op": "hello", "token": bea.token, "resume_from": forged})
            assert (await sock.recv())["code"] == "bad_resume_from", forged
            assert await sock.closed() == 4002


async def test_bad_frames_get_error_frames_and_the_socket_keeps_working(api: httpx.AsyncClient, server: str) -> None:
    bea = await register(api, "Bea")  # type: ignore[arg-type]
    async with ws(server) as sock:
        await sock.send("not json")
        assert (await sock.recv())["code"] == "not_json"
        await sock.send({"op": "heartbeat"})
        assert (await sock.recv())["code"] == "hello_first"
        await sock.send({"op": "hello", "token": bea.token, "resume_from": None})
        assert (await sock.recv())["op"] == "ready"
        cases = [
            ("{", "not_json"),
            (b"\x00\x01", "not_json"),
            ("[1, 2]", "no_op"),
            ({"op": 7}, "no_op"),
            ({"op": "dance"}, "unknown_op"),
            ({"op": "hello", "token": bea.token}, "already_hello"),
            ({"op": "heartbeat", "pad": "x" * 70_000}, "too_large"),
            ('"\\ud800"', "not_json"),
        ]
        for frame, code in cases:
            await sock.send(frame)
            answer = await sock.recv()
            assert answer["op"] == "error" and answer["code"] == code, (frame, answer)
        await sock.send({"op": "heartbeat"})
        assert await sock.recv() == {"op": "heartbeat_ack"}


async def test_deeply_nested_frames_are_not_json_and_the_socket_keeps_working(
    api: httpx.AsyncClient, server: str
) -> None:
    """Nested past the decoder's depth (about 1,000 levels, well inside the 64 KiB frame limit)."""
    bea = await register(api, "Bea")  # type: ignore[arg-type]
    deep = ["[" * 60_000, '{"a":' * 12_000, '{"op": "heartbeat", "x": ' + "[" * 5_000]
    async with ws(server) as sock:
        await sock.send(deep[0])
        assert (await sock.recv())["code"] == "not_json"  # before hello too
        await sock.send({"op": "hello", "token": bea.token, "resume_from": None})
        assert (await sock.recv())["op"] == "ready"
        for frame in deep:
            await sock.send(frame)
            answer = await sock.recv()
            assert answer["op"] == "error" and answer["code"] == "not_json", (frame[:40], answer)
        await sock.send({"op": "heartbeat"})
        assert await sock.recv() == {"op": "heartbeat_ack"}


async def test_missed_heartbeats_close_with_4009_and_heartbeats_keep_it_open(
    api: httpx.AsyncClient, hasty: str
) -> None:
    bea = await register(api, "Bea")  # type: ignore[arg-type]
    async with ws(hasty, bea) as silent, ws(hasty, bea) as chatty:
        assert silent.ready["heartbeat_s"] == 0.4
        for _ in range(6):  # 2.4 s, well past the silent one's 1 s
            await chatty.send({"op": "heartbeat"})
            assert await chatty.recv() == {"op": "heartbeat_ack"}
            await asyncio.sleep(0.4)
        assert await silent.closed() == 4009
        assert chatty.ws.close_code is None


async def test_no_hello_in_time_closes_with_4002(hasty: str) -> None:
    async with ws(hasty) as sock:
        assert await sock.closed() == 4002


async def test_foreign_origins_are_refused_and_clients_without_one_are_not(api: httpx.AsyncClient, hasty: str) -> None:
    bea = await register(api, "Bea")  # type: ignore[arg-type]
    with pytest.raises(Exception) as refused:
        async with ws(hasty, Origin="https://evil.example"):
            pass
    assert "403" in str(refused.value)
    async with ws(hasty, bea, Origin="https://chat.example.com") as sock:
        assert sock.ready["op"] == "ready"
    async with ws(hasty, bea, Origin=f"http://{hasty}") as sock:  # the server's own web client
        assert sock.ready["op"] == "ready"
