"""The Presence contract, against a real Redis (the session's embedded one or HUBBUB_REDIS_URL).

Every test uses people of its own; ``expire`` sweeps everyone's devices, so tests look only at
the changes of their own people. Time is the backend's: a test waits for a device to time out
by sweeping until the sweep says so (``swept_until``), never by sleeping for as long as it
hopes is enough.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection

import pytest
from redis.asyncio import Redis

from infra.presence import Change, Presence, RedisPresence

LONG = 60.0
SHORT = 0.2


@pytest.fixture(params=["redis"])
def presence(request: pytest.FixtureRequest, redis: Redis) -> Presence:
    return RedisPresence(redis)


def person() -> str:
    return f"u-{uuid.uuid4().hex[:12]}"


async def status(presence: Presence, user: str) -> str:
    return (await presence.statuses([user]))[user].status


async def swept_until(presence: Presence, user: str, watched: Collection[str] = ()) -> list[Change]:
    """Sweep (``expire``) until one reports ``user``'s change: every change of ``user`` and
    ``watched`` the sweeps reported on the way, in order."""
    seen: list[Change] = []
    async with asyncio.timeout(10):
        while not any(change.user_id == user for change in seen):
            seen += [change for change in await presence.expire() if change.user_id in (user, *watched)]
            await asyncio.sleep(0.01)
    return seen


async def test_a_first_device_brings_a_person_online_once(presence: Presence) -> None:
    user = person()
    first = await presence.seen(user, "phone", "active", LONG)
    assert first is not None and (first.user_id, first.status) == (user, "online")
    assert first.last_seen_at is not None
    assert await presence.seen(user, "phone", "active", LONG) is None  # a heartbeat is no news
    assert await presence.seen(user, "laptop", "active", LONG) is None  # nor is a second device
    assert await status(presence, user) == "online"


async def test_online_while_any_device_is_active_away_when_all_are(presence: Presence) -> None:
    user = person()
    await presence.seen(user, "phone", "active", LONG)
    await presence.seen(user, "laptop", "away", LONG)
    assert await status(presence, user) == "online"
    change = await presence.seen(user, "phone", "away", LONG)
    assert change is not None and change.status == "away"
    back = await presence.seen(user, "laptop", "active", LONG)
    assert back is not None and back.status == "online"


async def test_a_clean_close_of_the_last_device_is_offline_at_once(presence: Presence) -> None:
    user = person()
    await presence.seen(user, "phone", "active", LONG)
    await presence.seen(user, "laptop", "active", LONG)
    assert await presence.gone(user, "phone") is None
    change = await presence.gone(user, "laptop")
    assert change is not None and change.status == "offline" and change.last_seen_at is not None
    seen = (await presence.statuses([user]))[user]
    assert seen.status == "offline" and seen.last_seen_at == change.last_seen_at


async def test_a_lost_device_times_out_and_expire_reports_it_once(presence: Presence) -> None:
    user, steady = person(), person()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await presence.seen(user, "phone", "active", SHORT)
    await presence.seen(steady, "phone", "active", LONG)
    mine = await swept_until(presence, user, [steady])
    assert loop.time() - started >= SHORT  # not before its time
    assert [(c.user_id, c.status) for c in mine] == [(user, "offline")]
    assert [c for c in await presence.expire() if c.user_id == user] == []
    assert await status(presence, user) == "offline" and await status(presence, steady) == "online"


async def test_a_heartbeat_in_time_keeps_the_device(presence: Presence) -> None:
    user, clock = person(), person()
    await presence.seen(user, "phone", "active", SHORT)
    await presence.seen(clock, "phone", "active", SHORT)  # seen later: times out after the user's first time
    await presence.seen(user, "phone", "active", LONG)  # the heartbeat, before any sweep
    assert [c.user_id for c in await swept_until(presence, clock, [user])] == [clock]
    assert await status(presence, user) == "online"


async def test_a_person_never_seen_is_offline_with_no_last_seen(presence: Presence) -> None:
    user = person()
    seen = (await presence.statuses([user]))[user]
    assert (seen.status, seen.last_seen_at) == ("offline", None)


async def test_a_device_status_must_be_active_or_away(presence: Presence) -> None:
    with pytest.raises(ValueError, match="active or away"):
        await presence.seen(person(), "phone", "busy", LONG)  # type: ignore[arg-type]


async def test_calls_made_together_take_effect_in_the_order_they_were_made(presence: Presence) -> None:
    users = [person() for _ in range(300)]
    # A heartbeat and a clean close of the same socket back to back, for many sockets at once:
    # the close is the last word, so everyone ends offline (not online until their devices time out).
    await asyncio.gather(
        *(
            call
            for user in users
            for call in (presence.seen(user, "phone", "active", LONG), presence.gone(user, "phone"))
        )
    )
    seen = await presence.statuses(users)
    assert {s.status for s in seen.values()} == {"offline"}
    changes = await asyncio.gather(*(presence.seen(user, "phone", "away", LONG) for user in users))
    assert [c.status if c else None for c in changes] == ["away"] * len(users)
