"""The RateLimiter contract, against a real Redis (the session's embedded one or HUBBUB_REDIS_URL).

Every test uses buckets of its own, so tests share one Redis without seeing each other. Time is
the backend's: a test that waits for tokens takes until a take is allowed (a refused take spends
nothing), and what it asserts about time needs only "at least this long", which a busy machine
cannot make false.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from infra.embedded import free_port
from infra.ratelimit import KEY_PREFIX, Decision, RateLimit, RateLimiter, RateLimiterUnavailable, RedisRateLimiter

SLOW = 0.001  # tokens per second: nothing refills during a test


@pytest.fixture(params=["redis"])
def limiter(request: pytest.FixtureRequest, redis: Redis) -> RateLimiter:
    return RedisRateLimiter(redis)


def bucket() -> str:
    return f"test:{uuid.uuid4().hex}"


async def takes(limiter: RateLimiter, name: str, limit: RateLimit, n: int, cost: int = 1) -> list[bool]:
    return [(await limiter.take(name, limit, cost)).allowed for _ in range(n)]


async def refused(limiter: RateLimiter, name: str, limit: RateLimit) -> tuple[Decision, float]:
    """Take until a take is refused: the refusal, and when (loop time) it was asked."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        decision = await limiter.take(name, limit)
        if not decision.allowed:
            return decision, asked


async def allowed(limiter: RateLimiter, name: str, limit: RateLimit) -> Decision:
    """Take until a take is allowed (the refused ones spend nothing)."""
    async with asyncio.timeout(10):
        while not (decision := await limiter.take(name, limit)).allowed:
            await asyncio.sleep(min(decision.retry_after_s, 0.01))
    return decision


async def test_the_burst_is_allowed_then_refused_with_the_time_to_the_next_token(limiter: RateLimiter) -> None:
    name, limit = bucket(), RateLimit(rate_per_s=1.0, burst=3)
    decisions = [await limiter.take(name, limit) for _ in range(4)]
    assert [(d.allowed, d.remaining) for d in decisions] == [(True, 2), (True, 1), (True, 0), (False, 0)]
    assert all(d.retry_after_s == 0 for d in decisions[:3])
    assert 0.8 < decisions[3].retry_after_s <= 1.0


async def test_tokens_refill_over_time(limiter: RateLimiter) -> None:
    name, limit = bucket(), RateLimit(rate_per_s=5.0, burst=2)
    assert await takes(limiter, name, limit, 2) == [True, True]
    refusal, asked = await refused(limiter, name, limit)
    assert 0.0 < refusal.retry_after_s <= 0.2
    back = await allowed(limiter, name, limit)
    waited = asyncio.get_running_loop().time() - asked
    assert waited >= refusal.retry_after_s  # not before its time
    # One token came back, not two: it had less than one, and got ``rate`` a second since.
    assert back.remaining < waited * limit.rate_per_s
    await asyncio.sleep((limit.burst + 1) / limit.rate_per_s)  # at least long enough to refill past the burst...
    assert (await limiter.take(name, limit)).remaining == limit.burst - 1  # ...which still caps it


async def test_concurrent_takes_never_overspend(limiter: RateLimiter) -> None:
    name, limit = bucket(), RateLimit(rate_per_s=SLOW, burst=10)
    decisions = await asyncio.gather(*(limiter.take(name, limit) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


async def test_concurrent_takes_on_many_buckets_each_get_their_own_answer(limiter: RateLimiter) -> None:
    """Takes that arrive together travel together (one pipelined round trip); each still counts
    against its own bucket only."""
    names, limit = [bucket() for _ in range(4)], RateLimit(rate_per_s=SLOW, burst=2)
    order = [name for _ in range(5) for name in names]
    decisions = await asyncio.gather(*(limiter.take(name, limit) for name in order))
    for name in names:
        assert [d.allowed for n, d in zip(order, decisions, strict=True) if n == name] == [
            True,
            True,
            False,
            False,
            False,
        ]


async def test_takes_go_on_after_redis_forgets_its_scripts(limiter: RateLimiter, redis: Redis) -> None:
    names, limit = [bucket() for _ in range(3)], RateLimit(rate_per_s=SLOW, burst=1)
    await limiter.take(bucket(), limit)  # the script is loaded
    await redis.script_flush()  # as after a Redis restart
    decisions = await asyncio.gather(*(limiter.take(name, limit) for name in names + names))
    assert [d.allowed for d in decisions] == [True] * 3 + [False] * 3


async def test_buckets_are_independent(limiter: RateLimiter) -> None:
    first, second, limit = bucket(), bucket(), RateLimit(rate_per_s=SLOW, burst=2)
    assert await takes(limiter, first, limit, 3) == [True, True, False]
    assert await takes(limiter, second, limit, 3) == [True, True, False]


async def test_a_cost_takes_that_many_tokens_and_a_refused_one_spends_nothing(limiter: RateLimiter) -> None:
    name, limit = bucket(), RateLimit(rate_per_s=1.0, burst=5)
    assert (await limiter.take(name, limit, cost=3)).remaining == 2
    refused = await limiter.take(name, limit, cost=3)
    assert not refused.allowed and 0.8 < refused.retry_after_s <= 1.0  # one token short
    assert (await limiter.take(name, limit, cost=2)).allowed


@pytest.mark.parametrize("cost", [0, -1, 6])
async def test_a_cost_that_could_never_be_paid_is_a_bug(limiter: RateLimiter, cost: int) -> None:
    with pytest.raises(ValueError, match="cost must be between 1 and the burst"):
        await limiter.take(bucket(), RateLimit(rate_per_s=1.0, burst=5), cost)


async def test_the_key_is_namespaced_and_expires_once_the_bucket_would_be_full(
    limiter: RateLimiter, redis: Redis
) -> None:
    name, limit = bucket(), RateLimit(rate_per_s=2.0, burst=4)
    await takes(limiter, name, limit, 3)  # 1 left: full again in 1.5 s
    ttl_ms = await redis.pttl(KEY_PREFIX + name)
    assert 1500 <= ttl_ms <= 1500 + 1100  # the refill time plus a second's slack, no more
    assert await redis.pttl(KEY_PREFIX + bucket()) == -2  # untouched buckets have no key at all


async def test_processes_with_their_own_clients_share_a_bucket(
    limiter: RateLimiter, service_urls: dict[str, str]
) -> None:
    name, limit = bucket(), RateLimit(rate_per_s=SLOW, burst=3)
    other = Redis.from_url(service_urls["redis"])
    try:
        assert await takes(limiter, name, limit, 2) == [True, True]
        assert await takes(RedisRateLimiter(other), name, limit, 2) == [True, False]
    finally:
        await other.aclose()


# -- ahead: allowed on the process's view of the bucket, Redis told afterwards ----------------------


def ahead(burst: int, rate_per_s: float = SLOW, fail_open: bool = False) -> RateLimit:
    return RateLimit(rate_per_s=rate_per_s, burst=burst, fail_open=fail_open, ahead=True)


async def balance(redis: Redis, name: str) -> float:
    return float(await redis.hget(KEY_PREFIX + name, "tokens"))


async def test_ahead_spends_exactly_the_burst_from_one_process_and_redis_holds_every_take(redis: Redis) -> None:
    limiter = RedisRateLimiter(redis)
    name, limit = bucket(), ahead(burst=5)
    decisions = [await limiter.take(name, limit) for _ in range(7)]
    assert [(d.allowed, d.remaining) for d in decisions[:5]] == [(True, 4), (True, 3), (True, 2), (True, 1), (True, 0)]
    assert [d.allowed for d in decisions[5:]] == [False, False]
    assert decisions[6].retry_after_s > 100  # Redis refused it: one token at SLOW is a long way off
    await limiter.drain()
    assert await balance(redis, name) == pytest.approx(0, abs=0.01)


async def test_ahead_concurrent_takes_never_overspend_one_process(redis: Redis) -> None:
    limiter = RedisRateLimiter(redis)
    name, limit = bucket(), ahead(burst=10)
    assert (await limiter.take(name, limit)).allowed  # now this process has a view of the bucket
    decisions = await asyncio.gather(*(limiter.take(name, limit) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 9
    await limiter.drain()
    assert await balance(redis, name) == pytest.approx(0, abs=0.01)


async def test_a_take_the_view_can_pay_does_not_wait_for_redis_and_redis_counts_it_later(
    redis: Redis, service_urls: dict[str, str]
) -> None:
    limiter = RedisRateLimiter(redis, timeout_s=0.3)
    name, limit = bucket(), ahead(burst=5)  # fails closed: only an answer without Redis can allow
    assert (await limiter.take(name, limit)).allowed
    admin = Redis.from_url(service_urls["redis"])
    try:
        await admin.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
        try:
            assert (await limiter.take(name, limit)).allowed  # on the view: Redis is not asked
            with capture_logs(), pytest.raises(RateLimiterUnavailable):
                await limiter.take(bucket(), limit)  # no view of this one: it waits, and times out
            with capture_logs(), pytest.raises(RateLimiterUnavailable):
                await limiter.take(name, limit, cost=5)  # more than the view holds: it gives up unsent
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
    finally:
        await admin.aclose()
    await limiter.drain()
    assert await balance(redis, name) == pytest.approx(3, abs=0.01)  # both takes are in Redis, not the third
    assert all(view.unanswered == 0 for view in limiter._known.values())  # nothing left owed


async def test_a_forgotten_view_waits_for_redis_again(
    redis: Redis, service_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("infra.ratelimit.KNOWN_BUCKETS", 2)
    limiter = RedisRateLimiter(redis, timeout_s=0.3)
    first, second, third, limit = bucket(), bucket(), bucket(), ahead(burst=5)
    for name in (first, second, third):  # the third pushes out the least recently answered
        assert (await limiter.take(name, limit)).allowed
    admin = Redis.from_url(service_urls["redis"])
    try:
        await admin.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
        try:
            assert (await limiter.take(third, limit)).allowed
            with capture_logs(), pytest.raises(RateLimiterUnavailable):
                await limiter.take(first, limit)
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
    finally:
        await admin.aclose()
    await limiter.drain()
    assert len(limiter._known) <= 2


async def test_what_a_stale_view_allows_is_debt_that_refuses_every_process_until_repaid(
    redis: Redis, service_urls: dict[str, str]
) -> None:
    name, limit = bucket(), ahead(burst=3, rate_per_s=1.0)
    other_redis = Redis.from_url(service_urls["redis"])
    here, there = RedisRateLimiter(redis), RedisRateLimiter(other_redis)
    try:
        assert (await here.take(name, limit)).allowed  # here's view: 2 left
        assert await takes(there, name, limit, 3) == [True, True, False]  # there emptied it
        # Here's view is stale: it still shows 2, and allows them; Redis takes them as debt.
        assert await takes(here, name, limit, 2) == [True, True]
        await here.drain()
        assert await balance(redis, name) == pytest.approx(-2, abs=0.2)
        for limiter in (here, there):
            refused = await limiter.take(name, limit)
            assert not refused.allowed and 2.5 < refused.retry_after_s <= 3.0  # repay 2, then earn 1
    finally:
        await other_redis.aclose()


async def test_every_take_allowed_on_stale_views_is_owed_however_many_processes(
    redis: Redis, service_urls: dict[str, str]
) -> None:
    name, limit = bucket(), ahead(burst=3, rate_per_s=1.0)
    clients = [Redis.from_url(service_urls["redis"]) for _ in range(4)]
    limiters = [RedisRateLimiter(client) for client in clients]
    try:
        for limiter in limiters:  # each learns the bucket when it is full: a view of 2 left
            assert (await limiter.take(name, limit)).allowed
            await redis.delete(KEY_PREFIX + name)
        for limiter in limiters:  # stale, all of them: each allows its 2 ahead
            assert await takes(limiter, name, limit, 2) == [True, True]
        for limiter in limiters:
            await limiter.drain()
        assert await balance(redis, name) == pytest.approx(3 - 8, abs=0.2)  # all 8 owed, none forgiven
        refused = await limiters[-1].take(name, limit)  # the last to hear from Redis knows of the debt
        assert not refused.allowed and refused.remaining == 0 and 5.5 < refused.retry_after_s <= 6.0
    finally:
        for client in clients:
            await client.aclose()


async def test_a_failed_settle_makes_the_next_take_wait_for_redis(redis: Redis) -> None:
    limiter = RedisRateLimiter(redis)
    name, limit = bucket(), ahead(burst=5)
    assert (await limiter.take(name, limit)).allowed
    await redis.set(KEY_PREFIX + name, "not a bucket")  # every take of it now fails in Redis
    with capture_logs() as logs:
        assert (await limiter.take(name, limit)).allowed  # on the view; its settle fails
        await limiter.drain()
        with pytest.raises(RateLimiterUnavailable):  # no view any more: Redis decides, and cannot
            await limiter.take(name, limit)
    assert [entry["event"] for entry in logs] == ["ratelimit.unavailable"]  # once a minute at most
    await redis.delete(KEY_PREFIX + name)


# -- Redis down ------------------------------------------------------------------------------------


@pytest.fixture
async def dead_redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    yield client
    await client.aclose()


async def test_redis_down_fails_open_when_the_limit_says_so_and_warns_once(dead_redis: Redis) -> None:
    limiter, limit = RedisRateLimiter(dead_redis), RateLimit(rate_per_s=1.0, burst=2, fail_open=True)
    with capture_logs() as logs:
        decisions = [await limiter.take(bucket(), limit) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    warnings = [entry for entry in logs if entry["event"] == "ratelimit.unavailable"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning" and warnings[0]["fail_open"] is True


async def test_redis_down_fails_closed_by_default(dead_redis: Redis) -> None:
    limiter = RedisRateLimiter(dead_redis)
    with capture_logs(), pytest.raises(RateLimiterUnavailable):
        await limiter.take(bucket(), RateLimit(rate_per_s=1.0, burst=2))


async def test_a_redis_that_hangs_is_down_after_the_timeout() -> None:
    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=30)
    try:
        limiter = RedisRateLimiter(client, timeout_s=0.2)
        started = time.monotonic()
        with capture_logs():
            assert (await limiter.take(bucket(), RateLimit(rate_per_s=1.0, burst=2, fail_open=True))).allowed
            with pytest.raises(RateLimiterUnavailable):
                await limiter.take(bucket(), RateLimit(rate_per_s=1.0, burst=2))
        assert time.monotonic() - started < 1.0
    finally:
        await client.aclose()
        server.close()
