"""Snapshots of long streams (``commands/snapshots.py``) against the real PostgreSQL log: a cold
shell starts from one and reads only the tail, gets the state a full fold gives, ignores one
folded by other code, answers a keyed repeat from before it, and loads without one when the
snapshot table cannot be read."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import types
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from commands import snapshots
from commands.shell import CommandShell, Decider
from commands.snapshots import PostgresSnapshots, Snapshot, _Body, fingerprint, keyed_positions
from domain import channel as ch
from domain import readstate as rs
from domain import workspace as ws
from domain.events import NewEvent
from infra.eventstore.postgres import PostgresEventStore
from tests.integration.test_command_shell import TAB, Add, OverLimit, ctx

EVERY = 20
TAB_SNAPSHOTS = Decider("tab", 0, TAB.evolve, TAB.decide, snapshots=True)


class RecordingStore(PostgresEventStore):
    """The log, noting from which version each stream was read."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read_from: list[tuple[str, int]] = []

    async def read_streams(self, wanted: Sequence[tuple[str, int]], *args: Any, **kwargs: Any) -> Any:
        self.read_from += list(wanted)
        return await super().read_streams(wanted, *args, **kwargs)


@pytest.fixture
async def store(pool, migrated_url: str):
    store = RecordingStore(pool, migrated_url)
    yield store
    await store.close()


def cold(store: PostgresEventStore, pool: Any) -> CommandShell:
    """A shell with nothing cached: another process, or this one after a restart."""
    return CommandShell(store, snapshots=PostgresSnapshots(pool), snapshot_every=EVERY)


async def load_cold(store: PostgresEventStore, pool: Any, stream: str) -> Any:
    """The channel as a cold shell loads it, with the snapshot it writes (if any) written."""
    shell = cold(store, pool)
    loaded = await shell.load(ch.CHANNEL, stream)
    await shell.drain_snapshots()
    return loaded


async def channel_with_members(store: PostgresEventStore, members: int) -> str:
    channel_id = str(uuid.uuid4())
    stream = ch.channel_stream(channel_id)
    created = ch.ChannelCreated(
        channel_id=channel_id,
        workspace_id="w",
        name=f"c-{channel_id[:8]}",
        kind="channel",
        private=False,
        topic="",
        created_by="u0",
    )
    await store.append(stream, [NewEvent(event=created, event_id=uuid.uuid4())])
    await join(store, stream, range(members))
    return stream


async def join(store: PostgresEventStore, stream: str, who: range) -> None:
    await store.append(
        stream, [NewEvent(event=ch.ChannelMemberJoined(user_id=f"u{i}"), event_id=uuid.uuid4()) for i in who]
    )


async def test_a_cold_shell_starts_from_the_snapshot_and_reads_only_the_tail(store, pool) -> None:
    stream = await channel_with_members(store, 50)
    await load_cold(store, pool, stream)
    await join(store, stream, range(50, 55))

    store.read_from.clear()
    second = cold(store, pool)
    loaded = await second.load(ch.CHANNEL, stream)
    assert store.read_from == [(stream, 51)]  # the snapshot's version: 1 created + 50 joins
    whole = await CommandShell(store).load(ch.CHANNEL, stream)  # no snapshots: the whole log
    assert loaded.state == whole.state and loaded.state.members == frozenset(f"u{i}" for i in range(55))
    assert loaded.version == whole.version == 56
    assert (loaded.first_position, loaded.last_position) == (whole.first_position, whole.last_position)
    assert 0 < whole.first_position < whole.last_position


async def test_a_short_stream_gets_no_snapshot(store, pool) -> None:
    stream = await channel_with_members(store, EVERY - 2)
    await load_cold(store, pool, stream)
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT count(*) FROM aggregate_snapshots WHERE stream_id = %s", (stream,))
        ).fetchone()
    assert rows == (0,)


async def snapshot_rows(pool: Any, stream: str) -> list[tuple[int, str]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT version, fingerprint FROM aggregate_snapshots WHERE stream_id = %s ORDER BY fingerprint", (stream,)
        )
        return await cur.fetchall()


async def test_a_snapshot_folded_by_other_code_is_not_used_and_goes_after_a_day(store, pool) -> None:
    stream = await channel_with_members(store, 30)
    await load_cold(store, pool, stream)
    ours = fingerprint(ch.CHANNEL)
    async with pool.connection() as conn:  # as if older code had written it (and ours not yet)
        await conn.execute("UPDATE aggregate_snapshots SET fingerprint = 'older code' WHERE stream_id = %s", (stream,))
    store.read_from.clear()
    loaded = await load_cold(store, pool, stream)
    assert store.read_from == [(stream, 0)] and len(loaded.state.members) == 30
    # A rolling deploy: each code keeps its own row; the other's goes once it is a day old.
    assert await snapshot_rows(pool, stream) == sorted([(31, "older code"), (31, ours)], key=lambda r: r[1])
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE aggregate_snapshots SET taken_at = now() - interval '2 days' "
            "WHERE stream_id = %s AND fingerprint = 'older code'",
            (stream,),
        )
    await join(store, stream, range(30, 30 + EVERY))
    await load_cold(store, pool, stream)
    assert await snapshot_rows(pool, stream) == [(31 + EVERY, ours)]


async def test_an_unreadable_snapshot_is_folded_from_the_log_and_written_again(store, pool) -> None:
    stream = await channel_with_members(store, 30)
    await load_cold(store, pool, stream)
    async with pool.connection() as conn:
        await conn.execute("UPDATE aggregate_snapshots SET body = 'not json' WHERE stream_id = %s", (stream,))
    store.read_from.clear()
    loaded = await load_cold(store, pool, stream)
    assert store.read_from == [(stream, 0)] and len(loaded.state.members) == 30
    store.read_from.clear()
    assert len((await load_cold(store, pool, stream)).state.members) == 30
    assert store.read_from == [(stream, 31)]  # the same version, written again readable


async def test_a_keyed_command_before_the_snapshot_is_still_answered_as_a_repeat(store, pool) -> None:
    stream = f"tab-{uuid.uuid4().hex}"
    shell = cold(store, pool)
    first = await shell.handle(TAB_SNAPSHOTS, stream, Add(6), ctx("pay-once"))
    for _ in range(EVERY):
        await shell.handle(TAB_SNAPSHOTS, stream, Add(0), ctx())
    await shell.drain_snapshots()
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT version FROM aggregate_snapshots WHERE stream_id = %s", (stream,))
        ).fetchone()
    assert row is not None and row[0] > 1  # the keyed event is folded into the snapshot

    store.read_from.clear()
    other = cold(store, pool)
    repeat = await other.handle(TAB_SNAPSHOTS, stream, Add(6), ctx("pay-once"))  # decided again: 6 + 6 > 10
    assert store.read_from[0] == (stream, row[0])
    assert repeat.repeated and repeat.position == first.position
    assert len(await store.read_stream(stream)) == EVERY + 1  # nothing appended
    with pytest.raises(OverLimit):
        await other.handle(TAB_SNAPSHOTS, stream, Add(6), ctx("another key"))


async def test_an_unreadable_snapshot_table_means_loading_the_whole_log(store, pool) -> None:
    class Broken(PostgresSnapshots):
        async def get_many(self, wanted: Any) -> list[Snapshot[Any] | None]:
            raise ConnectionError("snapshot table unreachable")

    stream = await channel_with_members(store, 25)
    shell = CommandShell(store, snapshots=Broken(pool), snapshot_every=EVERY)
    loaded = await shell.load(ch.CHANNEL, stream)
    await shell.drain_snapshots()
    assert len(loaded.state.members) == 25 and loaded.version == 26


def test_a_snapshot_keeps_the_positions_of_the_latest_keyed_events_only(monkeypatch: pytest.MonkeyPatch) -> None:
    keyed = [uuid.uuid5(uuid.NAMESPACE_URL, f"k{i}") for i in range(3)]
    random_id = uuid.uuid4()
    assert keyed_positions({keyed[0]: 7, random_id: 8}) == {keyed[0]: 7}
    monkeypatch.setattr(snapshots, "KEYED_KEPT", 2)
    assert keyed_positions({keyed[2]: 30, keyed[0]: 10, random_id: 15, keyed[1]: 20}) == {keyed[1]: 20, keyed[2]: 30}


@pytest.mark.parametrize(
    "decider, state",
    [
        (
            ch.CHANNEL,
            ch.Channel("c", "w", "general", "channel", False, "topic", False, frozenset({"u1", "u2"}), "u1", True),
        ),
        (
            ws.WORKSPACE,
            ws.Workspace(
                "w",
                "team",
                {"u1": "owner", "u2": "guest"},
                {"h": ws.Invite("member", dt.datetime(2026, 11, 29, tzinfo=dt.UTC), "u2")},
                "c",
            ),
        ),
        (rs.READ_STATE, rs.ReadState({"c1": 4, "c2": 0})),
    ],
)
def test_every_snapshotted_state_reads_back_as_it_was_written(decider: Decider[Any, Any], state: Any) -> None:
    assert decider.snapshots
    store = PostgresSnapshots(pool=None)  # type: ignore[arg-type] - encoding only
    body = msgspec.json.encode(_Body(state, {uuid.uuid5(uuid.NAMESPACE_URL, "k"): 3}))
    decoded = store._decoder(decider).decode(body)
    assert decoded.state == state and type(decoded.state) is type(state)


def _decider_from(source: str, module_name: str) -> Decider[Any, Any]:
    module = types.ModuleType(module_name)
    sys.modules[module_name] = module
    exec(compile(source, module_name, "exec"), module.__dict__)
    return Decider("counter", module.State(), module.evolve, module.decide, snapshots=True)


COUNTER = """
from dataclasses import dataclass

STEP = {step}

@dataclass(frozen=True)
class State:
    total: {kind} = {default}

def evolve(state, event):
    return State(state.total {op} STEP)

def decide(state, command):
    return []
"""
BASE = {"step": 1, "kind": "int", "default": 0, "op": "+"}


def test_the_fingerprint_follows_the_running_code_not_its_lines() -> None:
    def of(source: str) -> str:
        try:
            return fingerprint(_decider_from(source, "snapshot_fp_a"))
        finally:
            sys.modules.pop("snapshot_fp_a")

    base = of(COUNTER.format(**BASE))
    assert of("\n\n# a comment\n" + COUNTER.format(**BASE)) == base
    changed = [
        of(COUNTER.format(**(BASE | change)))
        for change in ({"step": 2}, {"kind": "float"}, {"default": 1}, {"op": "-"})
    ]
    assert len({base, *changed}) == 5  # a constant, an annotation, a default, the code


def test_the_fingerprint_is_the_same_in_every_process() -> None:
    script = (
        "from commands.snapshots import fingerprint; from domain import channel, readstate, workspace; "
        "print(*(fingerprint(d) for d in (channel.CHANNEL, readstate.READ_STATE, workspace.WORKSPACE)))"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ | {"PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert seen == {" ".join(fingerprint(d) for d in (ch.CHANNEL, rs.READ_STATE, ws.WORKSPACE))}
