"""The command shell against the real PostgreSQL log: conflicts retried, repeats answered once."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence

import msgspec
import pytest

from commands.idempotency import event_ids, keyed
from commands.shell import CommandShell, Context, Decider
from domain.events import Event
from infra.eventstore import WrongExpectedVersion
from infra.eventstore.postgres import PostgresEventStore


class Opened(Event, frozen=True, tag="test.tab_opened"):
    limit: int


class Added(Event, frozen=True, tag="test.tab_added"):
    amount: int


class Add(msgspec.Struct, frozen=True):
    amount: int


class OverLimit(Exception):
    pass


def evolve(total: int, event: Event) -> int:
    match event:
        case Opened():
            return 0
        case Added(amount=amount):
            return total + amount
    return total


def decide(total: int, command: Add) -> Sequence[Event]:
    if total + command.amount > 10:
        raise OverLimit(f"{total} + {command.amount} > 10")
    return [Added(amount=command.amount)]


TAB = Decider("tab", 0, evolve, decide)


def ctx(key: str | None = None) -> Context:
    return Context(
        actor_id="u1", now=dt.datetime.now(dt.UTC), key=keyed("u1", key, "addToTab", {}, None) if key else None
    )


@pytest.fixture
async def shell(pool, migrated_url: str):
    store = PostgresEventStore(pool, migrated_url)
    yield CommandShell(store), store
    await store.close()


async def test_concurrent_commands_on_one_stream_all_land_by_retrying(shell) -> None:
    commands, store = shell
    s = f"tab-{uuid.uuid4().hex}"
    outcomes = await asyncio.gather(*(commands.handle(TAB, s, Add(1), ctx()) for _ in range(8)))
    assert sorted(o.version for o in outcomes) == list(range(1, 9))
    assert len(await store.read_stream(s)) == 8


async def test_rules_see_every_earlier_event_even_from_another_shell(shell) -> None:
    commands, store = shell
    s = f"tab-{uuid.uuid4().hex}"
    await commands.handle(TAB, s, Add(6), ctx())
    other = CommandShell(store)  # another process's shell, with its own cache
    await other.handle(TAB, s, Add(3), ctx())
    with pytest.raises(OverLimit):
        await commands.handle(TAB, s, Add(2), ctx())  # its cache says 6; the log says 9
    assert len(await store.read_stream(s)) == 2


async def test_a_repeated_key_returns_the_first_answer_even_when_deciding_again_would_fail(shell) -> None:
    commands, store = shell
    s = f"tab-{uuid.uuid4().hex}"
    first = await commands.handle(TAB, s, Add(7), ctx("key-1"))
    again = await commands.handle(TAB, s, Add(7), ctx("key-1"))  # 14 > 10 if decided anew
    assert again.repeated and again.position == first.position
    assert len(await store.read_stream(s)) == 1


async def test_racing_repeats_of_one_key_append_once(shell) -> None:
    commands, store = shell
    s = f"tab-{uuid.uuid4().hex}"
    outcomes = await asyncio.gather(*(CommandShell(store).handle(TAB, s, Add(1), ctx("k")) for _ in range(5)))
    assert len({o.position for o in outcomes}) == 1
    assert len(await store.read_stream(s)) == 1


async def test_commands_from_two_processes_on_one_stream_all_land(shell) -> None:
    commands, store = shell
    s = f"tab-{uuid.uuid4().hex}"
    other = CommandShell(store)  # no lock shared with `commands`: conflicts are real
    outcomes = await asyncio.gather(*(sh.handle(TAB, s, Add(1), ctx()) for sh in [commands, other] * 4))
    assert sorted(o.version for o in outcomes) == list(range(1, 9))


async def test_a_burst_on_one_stream_from_eight_processes_all_lands(shell) -> None:
    # Like a thousand people accepting one workspace's invite at once, from every app process.
    _, store = shell
    s = f"tab-{uuid.uuid4().hex}"
    processes = [CommandShell(store) for _ in range(8)]
    outcomes = await asyncio.gather(*(sh.handle(TAB, s, Add(0), ctx()) for sh in processes * 10))
    assert sorted(o.version for o in outcomes) == list(range(1, 81))


async def test_commit_many_writes_every_stream_or_none_and_answers_a_repeated_key_once(shell) -> None:
    commands, store = shell
    a, b, fresh = (f"tab-{uuid.uuid4().hex}" for _ in range(3))
    writes = [
        (TAB, a, await commands.load(TAB, a), [Added(amount=4)]),
        (TAB, b, await commands.load(TAB, b), [Added(amount=3), Added(amount=2)]),
    ]
    first = await commands.commit_many(writes, ctx("key-m"))
    assert [(o.version, o.state) for o in first] == [(1, 4), (2, 5)]
    assert [e.event_id for e in await store.read_stream(b)] == event_ids(b, ctx("key-m").key, 2)
    again = await commands.commit_many(writes, ctx("key-m"))  # a retry with the same, now stale, loads
    assert [(o.position, o.version) for o in again] == [(o.position, o.version) for o in first]
    stale = [
        (TAB, fresh, await commands.load(TAB, fresh), [Added(amount=1)]),
        (TAB, a, writes[0][2], [Added(amount=1)]),  # loaded before the first commit
    ]
    with pytest.raises(WrongExpectedVersion):
        await commands.commit_many(stale, ctx())
    assert [len(await store.read_stream(s)) for s in (a, b, fresh)] == [1, 2, 0]
