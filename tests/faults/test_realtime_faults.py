"""Faults: a 3-node NATS cluster and two ``hubbub serve`` gateways; while writers post, one NATS
node and one gateway process are killed with SIGKILL.

Clients run the reconnect loop of docs/realtime.md over both gateways: the killed gateway's
clients come back on the other one with ``resume_from`` their last position; the other's ride out
the NATS node's death (their gateway re-syncs its sockets itself). At the end every client must
have every message it may see exactly once, in log order, as the writers were told it was
accepted (201 with its position), and nothing of the private channel unless it is a member.

The gateway killed is the first one started, which leads the publisher and the projections, so
the survivor takes those over from their checkpoints too (the publisher resends what it had not
checkpointed: at-least-once, made exactly-once by the gateway dropping what it delivered already).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.faults.processes import GatewayProcess, NatsCluster, wait_for_leader
from tests.integration.conftest import User, register
from tests.integration.messaging_helpers import (
    API,
    Team,
    add_to_channel,
    create_channel,
    create_workspace,
    join_workspace,
)

RUN_S = 7.0  # writers post this long; in it, at
KILL_NATS_AT_S = 2.0  # ... the NATS node the surviving gateway's hub is on is killed,
KILL_GATEWAY_AT_S = 3.5  # ... and then the first gateway.
WRITE_PAUSE_S = 0.05  # between one writer's posts
CATCH_UP_S = 30.0  # how long clients may take to get everything after the writers stop (not a target)
HEARTBEAT_S = 2.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nats = NatsCluster(tmp_path)
    try:
        nats.start()
        yield nats
    finally:
        nats.stop()


@pytest.fixture
async def gateways(
    cluster: NatsCluster, service_urls: dict[str, str], migrated_url: str, tmp_path: Path
) -> AsyncIterator[list[GatewayProcess]]:
    env = {
        "HUBBUB_DATABASE_URL": migrated_url,
        "HUBBUB_NATS_URL": cluster.url,
        "HUBBUB_REDIS_URL": service_urls["redis"],
        "HUBBUB_INSECURE_FAST_PASSWORDS": "true",
        "HUBBUB_RATE_POST_PER_S": "1000",
        "HUBBUB_RATE_POST_BURST": "1000",
        "HUBBUB_WS_HEARTBEAT_S": str(HEARTBEAT_S),
    }
    started = [GatewayProcess(name, env, tmp_path / f"gateway-{name}.log") for name in "AB"]
    try:
        await started[0].start()
        await wait_for_leader(migrated_url, "realtime")  # so the first one leads the publisher
        await started[1].start()
        yield started
    finally:
        for gateway in started:
            gateway.stop()


# -- a client ----------------------------------------------------------------------------------------


@dataclass
class Follower:
    """One user's client: the reconnect loop of docs/realtime.md, over every gateway from ``home`` on."""

    user: User
    gateways: list[GatewayProcess]
    home: int
    frames: list[dict[str, Any]] = field(default_factory=list)
    """Every event frame, as it came."""
    readies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(gateway, ready frame) of each connection."""
    trouble: list[str] = field(default_factory=list)
    """What a correct server never makes a client go through."""
    position: int | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def messages(self) -> list[str]:
        return [f["data"]["id"] for f in self.frames if f["type"] == "message.posted"]

    async def run(self) -> None:
        turn, delay = self.home, 0.1
        while True:
            gateway = self.gateways[turn % len(self.gateways)]
            try:
                async with connect(f"ws://{gateway.address}{API}/ws", open_timeout=5) as ws:
                    if await self._session(gateway.name, ws):
                        delay = 0.1
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code in (4001, 4002):  # log in again / start afresh: never for a live session
                    self.trouble.append(f"closed with {code} by {gateway.name}: {closed.rcvd.reason}")  # type: ignore[union-attr]
                    return
            except (OSError, InvalidHandshake):
                pass  # that gateway is gone or going: the next one will do
            turn += 1
            await asyncio.sleep(delay * (1 + random.random()))  # jitter, as in the docs, shorter
            delay = min(delay * 2, 1.0)

    async def _session(self, gateway: str, ws: ClientConnection) -> bool:
        await ws.send(json.dumps({"op": "hello", "token": self.user.token, "resume_from": self.position}))
        ready = json.loads(await ws.recv())
        if ready.get("op") != "ready" or (self.position is not None and not ready["resumed"]):
            self.trouble.append(f"{gateway} answered a hello with resume_from {self.position} with {ready}")
            return False
        self.readies.append((gateway, ready))
        self.position = ready["position"]
        self.connected.set()
        beat = asyncio.create_task(_heartbeat(ws, ready["heartbeat_s"]))
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame["op"] == "event":
                    self.frames.append(frame)
                    self.position = frame.get("position", self.position)  # typing, presence: none
        finally:
            beat.cancel()
        return True


async def _heartbeat(ws: ClientConnection, every: float) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.sleep(every)
            await ws.send('{"op":"heartbeat"}')


# -- a writer ----------------------------------------------------------------------------------------


@dataclass
class Writer:
    """Posts to one channel until told to stop, each message until some gateway accepts it."""

    user: User
    channel_id: str
    apis: list[httpx.AsyncClient]
    home: int
    accepted: list[dict[str, Any]] = field(default_factory=list)
    """The 201 answers ({id, seq, position}), in posting order."""

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.accepted.append(await self._post(f"{self.user.display_name} {len(self.accepted)}"))
            await asyncio.sleep(WRITE_PAUSE_S)

    async def _post(self, text: str) -> dict[str, Any]:
        # The client_msg_id makes a retry of a post whose answer was lost (its gateway died) append nothing.
        body = {"text": text, "client_msg_id": f"{self.user.id}-{len(self.accepted)}"}
        loop = asyncio.get_running_loop()
        deadline, turn = loop.time() + 30, self.home
        while True:
            api = self.apis[turn % len(self.apis)]
            try:
                response = await api.post(
                    f"{API}/channels/{self.channel_id}/messages", json=body, headers=self.user.auth
                )
                if response.status_code == 201:
                    return response.json()
                assert response.status_code >= 500, response.text
            except httpx.TransportError:
                pass
            assert loop.time() < deadline, f"{text!r} not accepted by any gateway within 30 s"
            turn += 1
            await asyncio.sleep(0.05)


# -- the story ---------------------------------------------------------------------------------------

# name -> (a member of #secret, index of the gateway the client starts on)
CLIENTS = {
    "Ann": (True, 0),
    "Bob": (False, 0),
    "Cat": (True, 0),
    "Dan": (False, 1),
    "Eve": (True, 1),
    "Fay": (False, 1),
}


async def test_a_dead_nats_node_and_a_dead_gateway_lose_and_repeat_nothing(
    cluster: NatsCluster, gateways: list[GatewayProcess]
) -> None:
    first, survivor = gateways
    apis = [httpx.AsyncClient(base_url=f"http://{g.address}", timeout=10) for g in gateways]
    tasks: list[asyncio.Task[None]] = []
    try:
        team, people, secret = await _team(apis[0])
        followers = {name: Follower(people[name], gateways, home) for name, (_, home) in CLIENTS.items()}
        tasks += [asyncio.create_task(f.run()) for f in followers.values()]
        async with asyncio.timeout(15):
            for follower in followers.values():
                await follower.connected.wait()

        writers = [
            Writer(team.owner, team.general_id, apis, 0),
            Writer(people["Dan"], team.general_id, apis, 1),
            Writer(people["Ann"], secret, apis, 0),
            Writer(people["Eve"], secret, apis, 1),
        ]
        stop = asyncio.Event()
        writing = [asyncio.create_task(w.run(stop)) for w in writers]
        tasks += writing
        await asyncio.sleep(KILL_NATS_AT_S)
        victim = cluster.serving(survivor.pid, "hubbub-gateway")
        cluster.kill(victim)
        await asyncio.sleep(KILL_GATEWAY_AT_S - KILL_NATS_AT_S)
        first.kill()
        await asyncio.sleep(RUN_S - KILL_GATEWAY_AT_S)
        stop.set()
        await asyncio.gather(*writing)

        accepted = {team.general_id: [], secret: []}
        for writer in writers:
            accepted[writer.channel_id].extend(writer.accepted)
        everything = accepted[team.general_id] + accepted[secret]
        assert len({a["position"] for a in everything}) == len(everything) > 50
        wanted = {
            name: [
                a["id"]
                for a in sorted(
                    accepted[team.general_id] + (accepted[secret] if member else []), key=lambda a: a["position"]
                )
            ]
            for name, (member, _) in CLIENTS.items()
        }
        await _caught_up(followers, wanted, tasks)
    finally:
        for task in tasks:
            task.cancel()
        crashed = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if isinstance(r, Exception)]
        for client in apis:
            await client.aclose()
    assert crashed == []

    print(
        f"killed NATS node {victim.name}, then gateway {first.name}; {len(everything)} messages posted;",
        "gateways each client was served by:",
        {n: [g for g, _ in f.readies] for n, f in followers.items()},
    )
    logs = [str(g.log) for g in gateways]
    for name, (member, home) in CLIENTS.items():
        follower = followers[name]
        assert follower.trouble == [], (name, follower.trouble, logs)
        assert follower.messages == wanted[name], (name, _difference(follower.messages, wanted[name]), logs)
        if not member:
            assert [f for f in follower.frames if f.get("channel_id") == secret] == [], name
        served_by = [g for g, _ in follower.readies]
        if home == 0:  # the killed gateway's clients came back on the other one, resuming
            assert served_by[0] == first.name and survivor.name in served_by[1:], (name, follower.readies)


async def _team(api: httpx.AsyncClient) -> tuple[Team, dict[str, User], str]:
    """A workspace with every client's user in it, and #secret with the members among them."""
    team = await create_workspace(api, await register(api, "Owner"))  # type: ignore[arg-type]
    people = {name: await join_workspace(api, team, name) for name in CLIENTS}  # type: ignore[arg-type]
    secret = await create_channel(api, team, team.owner, "secret", private=True)  # type: ignore[arg-type]
    members = [people[name] for name, (member, _) in CLIENTS.items() if member]
    await add_to_channel(api, team, secret, team.owner, *members)  # type: ignore[arg-type]
    return team, people, secret


async def _caught_up(
    followers: dict[str, Follower], wanted: dict[str, list[str]], tasks: list[asyncio.Task[None]]
) -> None:
    """Until every client has as many messages as it should (or time is up, or a task died: the asserts tell)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CATCH_UP_S
    while any(len(f.messages) < len(wanted[n]) for n, f in followers.items()):
        if loop.time() > deadline or any(t.done() for t in tasks):
            return
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # a repeat of the last one would come about now


def _difference(got: list[str], wanted: list[str]) -> str:
    missing, unexpected = set(wanted) - set(got), set(got) - set(wanted)
    repeated = [i for i, n in Counter(got).items() if n > 1]
    first = next((k for k, (g, w) in enumerate(zip(got, wanted)) if g != w), min(len(got), len(wanted)))
    return (
        f"got {len(got)} of {len(wanted)}: {len(missing)} missing, {len(unexpected)} unexpected, "
        f"{len(repeated)} repeated, first difference at index {first}"
    )
