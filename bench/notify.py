"""``@channel`` in a 10,000-member channel: ``python -m bench.notify [--quick]``.

Issue 6's target: all notifications recorded and pushed within 2 s. Against a real
``hubbub serve --workers 2`` on durable embedded PostgreSQL, NATS and Redis (``bench/_server.py``):

- set-up: an owner and ``SOCKETS`` real people through the API (they keep WebSockets open), and
  the rest of the members appended to the log as the command side writes them
  (``workspace.member_joined`` + ``channel.member_joined``; registering 10,000 accounts through
  argon2 would measure nothing of interest); the projections build everything from the log;
- each round the owner posts ``@channel ...`` and the clock starts just before the POST:
  *accepted* when it answers 201, *recorded* when the ``notifications`` projection's checkpoint
  passes the post (its rows are counted afterwards: one per member but the author), *pushed*
  when the last ``notification.created`` for it arrived on ``hubbub.user.*`` (a NATS wildcard
  subscriber in this process sees what every gateway would), *delivered* when the last of the
  real sockets got its frame. The first round (a process loads the 10,000-member channel and
  workspace streams for the first time) is reported apart as the warm-up.

``--quick``: 1,000 members, 3 rounds (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field

import httpx
import nats
import psycopg
from websockets.asyncio.client import connect

from bench._common import finish, logs_to_stderr, machine_facts, markdown_table, percentile, progress
from bench._server import running_server
from bench._setup import API, _auth, _ok, _post, _register
from domain import channel as ch
from domain import workspace as ws
from domain.events import EventMeta, NewEvent
from infra.db import open_pool
from infra.eventstore.postgres import PostgresEventStore
from infra.ids import new_id

WORKERS = 2
SOCKETS = 20
CHUNK = 1000
TARGET_S = 2.0
SERVER_SETTINGS = {
    "HUBBUB_INSECURE_FAST_PASSWORDS": "true",
    "HUBBUB_RATE_POST_PER_S": "1000",
    "HUBBUB_RATE_POST_BURST": "1000",
}


@dataclass(frozen=True)
class Plan:
    members: int
    rounds: int


FULL, QUICK = Plan(10_000, 6), Plan(1_000, 3)


@dataclass
class World:
    workspace_id: str
    channel_id: str
    owner_id: str
    owner_token: str
    people: list[tuple[str, str]] = field(default_factory=list)  # (user id, token) with a socket


async def build(base_url: str, database_url: str, members: int) -> World:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        owner_id, owner_token = await _register(client, "owner")
        owner = _auth(owner_token)
        made = _ok(await client.post(f"{API}/workspaces", json={"name": "Notify bench"}, headers=owner), 201)
        world = World(made["id"], "", owner_id, owner_token)
        world.channel_id = _ok(
            await client.post(
                f"{API}/workspaces/{world.workspace_id}/channels", json={"name": "all-hands"}, headers=owner
            ),
            201,
        )["id"]
        for i in range(SOCKETS):
            user_id, token = await _register(client, f"sock{i}")
            code = (await _post(client, f"{API}/workspaces/{world.workspace_id}/invites", 201, json={}, headers=owner))[
                "code"
            ]
            await _post(client, f"{API}/invites/{code}/accept", 200, headers=_auth(token))
            await _post(client, f"{API}/channels/{world.channel_id}/join", 200, headers=_auth(token))
            world.people.append((user_id, token))
    await _append_members(database_url, world, members - 1 - SOCKETS)
    return world


async def _append_members(url: str, world: World, count: int) -> None:
    """``count`` more members, as accepting invites and joining would record them."""
    pool = await open_pool(url, 1, 2)
    store = PostgresEventStore(pool, url)
    meta = EventMeta(actor_id=world.owner_id)
    try:
        for start in range(0, count, CHUNK):
            ids = [new_id() for _ in range(min(CHUNK, count - start))]
            for stream, events in (
                (
                    f"workspace-{world.workspace_id}",
                    [ws.MemberJoined(user_id=u, role="member", via="invite") for u in ids],
                ),
                (
                    f"channel-{world.channel_id}",
                    [ch.ChannelMemberJoined(user_id=u, added_by=world.owner_id) for u in ids],
                ),
            ):
                version = await _version(pool, stream)
                await store.append(
                    stream, [NewEvent(event=e, event_id=uuid.uuid4(), meta=meta) for e in events], version
                )
    finally:
        await store.close()
        await pool.close()


async def _version(pool, stream: str) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT max(version) FROM events WHERE stream_id = %s", (stream,))).fetchone()
    return int(row[0])


def _checkpoint(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("SELECT position FROM projection_checkpoints WHERE name = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


def _wait_projected(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        head = int(conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])
        while min(_checkpoint(conn, n) for n in ("workspaces", "notifications", "messages")) < head:
            if time.monotonic() > deadline:
                raise SystemExit("the projections did not catch up with the set-up in time")
            time.sleep(0.2)


class Listener:
    """Arrival times of ``notification.created`` on ``hubbub.user.*`` and on the real sockets."""

    def __init__(self) -> None:
        self.nats_times: dict[int, list[float]] = {}
        self.socket_times: dict[int, list[float]] = {}

    async def on_nats(self, msg) -> None:
        position = int((msg.headers or {}).get("Hubbub-Position", "0"))
        if b'"notification.created"' in msg.data:
            self.nats_times.setdefault(position, []).append(time.monotonic())

    async def follow_socket(self, url: str, token: str, ready: asyncio.Event, opened: list[int]) -> None:
        async with connect(url, max_size=2**24) as sock:
            await sock.send(json.dumps({"op": "hello", "token": token, "resume_from": None}))
            json.loads(await sock.recv())
            opened.append(1)
            if len(opened) == SOCKETS:
                ready.set()
            async for raw in sock:
                frame = json.loads(raw)
                if frame.get("type") == "notification.created":
                    self.socket_times.setdefault(frame["position"], []).append(time.monotonic())


async def rounds(base_url: str, database_url: str, nats_url: str, world: World, plan: Plan) -> list[dict]:
    listener = Listener()
    nc = await nats.connect(nats_url, max_reconnect_attempts=0)
    await nc.subscribe("hubbub.user.*", cb=listener.on_nats)
    ready, opened = asyncio.Event(), []
    ws_url = base_url.replace("http://", "ws://") + f"{API}/ws"
    readers = [asyncio.create_task(listener.follow_socket(ws_url, token, ready, opened)) for _, token in world.people]
    async with asyncio.timeout(60):
        await ready.wait()
    expected = plan.members - 1
    out = []
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            with psycopg.connect(database_url, autocommit=True) as conn:
                for i in range(plan.rounds):
                    out.append(await _round(client, conn, world, listener, expected, i))
                    progress(f"  round {i}: {out[-1]}")
                    await asyncio.sleep(1.0)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await nc.close()
    return out


async def _round(
    client: httpx.AsyncClient, conn: psycopg.Connection, world: World, listener: Listener, expected: int, i: int
) -> dict:
    began = time.monotonic()
    body = _ok(
        await client.post(
            f"{API}/channels/{world.channel_id}/messages",
            json={"text": f"@channel round {i}"},
            headers=_auth(world.owner_token),
        ),
        201,
    )
    accepted, position = time.monotonic(), body["position"]
    recorded = None
    deadline = began + 60
    while time.monotonic() < deadline:
        if recorded is None and _checkpoint(conn, "notifications") >= position:
            recorded = time.monotonic()
        if (
            recorded
            and len(listener.nats_times.get(position, ())) >= expected
            and len(listener.socket_times.get(position, ())) >= SOCKETS
        ):
            break
        await asyncio.sleep(0.005)
    rows = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE pushed) FROM notifications WHERE message_id = %s", (body["id"],)
    ).fetchone()
    pushed, delivered = listener.nats_times.get(position, []), listener.socket_times.get(position, [])

    def ms(t: float | None) -> float | None:
        return None if t is None else round((t - began) * 1000, 1)

    return {
        "accepted_ms": ms(accepted),
        "recorded_ms": ms(recorded),
        "rows": rows[0],
        "pushed_rows": rows[1],
        "pushed_count": len(pushed),
        "pushed_ms": ms(max(pushed)) if len(pushed) >= expected else None,
        "first_pushed_ms": ms(min(pushed)) if pushed else None,
        "delivered_count": len(delivered),
        "delivered_ms": ms(max(delivered)) if len(delivered) >= SOCKETS else None,
        "expected": expected,
    }


def report(results: dict) -> str:
    measured = results["rounds"][1:] or results["rounds"]
    members = results["plan"]["members"]

    def stat(key: str) -> str:
        values = sorted(r[key] for r in measured if r[key] is not None)
        missing = len(measured) - len(values)
        if not values:
            return "never"
        text = f"{percentile(values, 50):,.0f} / {values[-1]:,.0f} ms"
        return text + (f" ({missing} rounds incomplete)" if missing else "")

    worst = max((r["pushed_ms"] or float("inf")) for r in measured)
    complete = all(r["rows"] == r["expected"] and r["pushed_count"] >= r["expected"] for r in measured)
    verdict = "PASS" if worst <= TARGET_S * 1000 and complete else "FAIL"
    warm = results["rounds"][0]
    rows = [
        ["POST answered (201)", stat("accepted_ms"), ""],
        [f"all {members - 1:,} notifications recorded (projection committed)", stat("recorded_ms"), "< 2 s"],
        [
            f"all {members - 1:,} `notification.created` published on `hubbub.user.*`",
            stat("pushed_ms"),
            f"< 2 s: **{verdict}**",
        ],
        [f"the last of {SOCKETS} real WebSockets got its frame", stat("delivered_ms"), ""],
        [
            "first round (processes load the member streams: warm-up)",
            f"recorded {warm['recorded_ms']} ms, pushed {warm['pushed_ms']} ms",
            "",
        ],
    ]
    head = (
        f"@channel to {members:,} members, {len(measured)} measured rounds (p50 / max, from just before the POST); "
        f"`hubbub serve --workers {WORKERS}`"
    )
    return head + "\n\n" + markdown_table(["what", "measured", "target"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 members, 3 rounds (a smoke run)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    logs_to_stderr()
    began = time.monotonic()
    results: dict = {"machine": machine_facts(), "plan": plan.__dict__, "workers": WORKERS}
    with running_server(WORKERS, SERVER_SETTINGS) as srv:
        progress(f"set-up: {plan.members:,} members ({SOCKETS} through the API, with sockets)")
        world = asyncio.run(build(srv.base_url, srv.database_url, plan.members))
        _wait_projected(srv.database_url)
        results["setup_s"] = round(time.monotonic() - began, 1)
        progress(f"  ready after {results['setup_s']}s; {plan.rounds} rounds of @channel")
        results["rounds"] = asyncio.run(rounds(srv.base_url, srv.database_url, srv.env["HUBBUB_NATS_URL"], world, plan))
    return finish("notify", args.quick, results, report(results), began)


if __name__ == "__main__":
    sys.exit(main())
