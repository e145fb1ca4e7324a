"""Rate limits: the ``RateLimiter`` port and its Redis token-bucket backend.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; an action takes ``cost``
tokens or is refused with the time until enough have refilled. Every app process shares the
buckets in Redis, so a limit holds for the whole deployment, not per worker.

A limit may let a process decide *ahead* of Redis (``RateLimit.ahead``): see ``RedisRateLimiter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import Protocol, runtime_checkable

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

log = structlog.get_logger(__name__)

KEY_PREFIX = "hubbub:rl:"
WARN_EVERY_S = 60.0


class RateLimit(msgspec.Struct, frozen=True):
    """``burst`` tokens at most, refilled at ``rate_per_s``.

    ``fail_open`` says what ``take`` does when the backend cannot decide (Redis down): allow the
    action, or raise ``RateLimiterUnavailable``. Closed is the default, so a limit is never
    silently unenforced unless its caller chose that.

    ``ahead`` lets a take that the process's own view of the bucket can pay be allowed at once,
    with Redis told afterwards (``RedisRateLimiter``): exact over time, but a bucket shared by
    several processes may briefly overspend, and the overspend is refused later (debt). For limits on
    people's own actions (posting), not for guessing defences (login).
    """

    rate_per_s: float
    burst: int
    fail_open: bool = False
    ahead: bool = False


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    retry_after_s: float  # 0 when allowed; else seconds until ``cost`` tokens have refilled
    remaining: int  # whole tokens left after this take


class RateLimiterUnavailable(Exception):
    """The backend could not decide, and the limit fails closed."""


@runtime_checkable  # handlers declare it as a dependency, and Litestar checks the type
class RateLimiter(Protocol):
    async def take(self, bucket: str, limit: RateLimit, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``bucket`` if it has them, atomically across processes.

        A refused take spends nothing. Raises ``ValueError`` if ``cost`` could never be paid
        (``< 1`` or ``> limit.burst``), and ``RateLimiterUnavailable`` if the backend is down and
        ``limit.fail_open`` is false.
        """
        ...


# One hash per bucket: {tokens, ts}. Time comes from the Redis server, so app processes with
# skewed clocks still agree; a clock that steps back refills nothing rather than going negative.
# The key expires once the bucket would be full again: a missing bucket and a full one are the
# same, so idle buckets cost no memory. ARGV[4] = '1' takes even what the bucket does not hold (a
# take a process already allowed ahead): the bucket goes into debt, and refuses until it has
# refilled past it. The last value is the exact balance, for that process.
_TAKE = """
if redis.replicate_commands then redis.replicate_commands() end
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local forced = ARGV[4] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(saved[1]), tonumber(saved[2])
if tokens == nil or ts == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, retry = 0, (cost - tokens) / rate
if tokens >= cost then
  tokens, allowed, retry = tokens - cost, 1, 0
elseif forced then
  tokens = tokens - cost
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((burst - tokens) / rate * 1000) + 1000))
return {allowed, tostring(retry), math.floor(tokens), tostring(tokens)}
"""
KNOWN_BUCKETS = 100_000
"""Buckets of ``ahead`` limits whose balance a process remembers (the least recently answered go first)."""


class _Known(msgspec.Struct):
    """What this process knows of an ``ahead`` bucket: its balance in Redis after the last take
    Redis answered (None: unknown, ask Redis), when that answer came, and the cost of this
    process's takes Redis has not answered yet."""

    tokens: float | None = None
    at: float = 0.0
    unanswered: int = 0

    def left(self, now: float, limit: RateLimit) -> float | None:
        if self.tokens is None:
            return None
        return min(float(limit.burst), self.tokens + (now - self.at) * limit.rate_per_s) - self.unanswered


class _Take(msgspec.Struct):
    key: str
    args: list[float | int | str]
    answer: asyncio.Future[list[bytes]] | None  # None: allowed ahead, nobody waits for Redis
    known: _Known | None  # the process's view of the bucket, for ``ahead`` limits


class RedisRateLimiter:
    """Token buckets in Redis, one Lua script per take (atomic: concurrent takes never overspend).

    Keys are ``hubbub:rl:{bucket}``. The takes that arrive while one round trip is out go
    together in the next, pipelined (each still its own script call on its own key, so buckets
    may live on any node of a Redis Cluster): at a thousand posts a second a take costs a few
    microseconds of this process instead of a round trip's worth. When Redis is unreachable, slow
    (over ``timeout_s``) or refuses the write, the limit's ``fail_open`` decides: open allows the
    action, closed raises ``RateLimiterUnavailable``. Either way a warning is logged at most once
    per minute.

    An ``ahead`` limit's take is allowed without waiting for Redis when this process's view of
    the bucket can pay it: the balance Redis gave with its last answer, refilled since, less what
    this process took that Redis has not answered yet. Redis is told in the next round trip, as a
    forced take. A view is stale when other processes took from the bucket since its last answer;
    what it then allows beyond the bucket (at most a burst per process) Redis keeps as debt, and
    the bucket refuses everyone until it has refilled past it. So over time the rate is exact,
    and a burst can overshoot by what other processes' views still showed. A bucket this process
    has no view of (its first take here, or any since an error) waits for Redis, as does every
    take its view cannot pay: a refusal is always Redis's. Under 32 closed-loop posters on two
    cores the take was 3 ms of the 13 ms a post spent in the server, all of it waiting for this
    busy loop's turn, not for Redis.
    """

    def __init__(self, redis: Redis, *, timeout_s: float = 1.0) -> None:
        self._redis = redis
        self._script = redis.register_script(_TAKE)
        self._timeout_s = timeout_s
        self._warned_at: float | None = None
        self._unwarned = 0
        self._waiting: list[_Take] = []
        self._sending = False
        self._task: asyncio.Task[None] | None = None  # held, or the loop may drop it half-way
        self._idle = asyncio.Event()
        self._idle.set()
        self._known: OrderedDict[str, _Known] = OrderedDict()  # the most recently answered last

    async def take(self, bucket: str, limit: RateLimit, cost: int = 1) -> Decision:
        if not 1 <= cost <= limit.burst:
            raise ValueError(f"cost must be between 1 and the burst ({limit.burst}), not {cost}")
        loop = asyncio.get_running_loop()
        key = KEY_PREFIX + bucket
        known = self._view(key) if limit.ahead else None
        if known is not None:
            left = known.left(loop.time(), limit)
            if left is not None and left >= cost:
                self._queue(_Take(key, [limit.rate_per_s, limit.burst, cost, "1"], None, known), cost)
                return Decision(allowed=True, retry_after_s=0.0, remaining=int(left - cost))
        answer: asyncio.Future[list[bytes]] = loop.create_future()
        self._queue(_Take(key, [limit.rate_per_s, limit.burst, cost, "0"], answer, known), cost)
        try:
            async with asyncio.timeout(self._timeout_s):
                allowed, retry, remaining, *_ = await asyncio.shield(answer)
        except (RedisError, OSError, TimeoutError) as exc:
            answer.cancel()  # not sent any more if it still waits: its request has been answered
            return self._unavailable(bucket, limit, cost, exc)
        finally:
            del answer  # an error set on it must not make a cycle with this frame (see eventstore/postgres.py)
        return Decision(allowed=bool(allowed), retry_after_s=float(retry), remaining=max(0, int(remaining)))

    def _view(self, key: str) -> _Known:
        known = self._known.get(key)
        if known is None:
            while len(self._known) >= KNOWN_BUCKETS:
                self._known.popitem(last=False)
            known = self._known[key] = _Known()
        return known

    def _queue(self, take: _Take, cost: int) -> None:
        if take.known is not None:
            take.known.unanswered += cost
        self._waiting.append(take)
        if not self._sending:
            self._sending, self._task = True, asyncio.get_running_loop().create_task(self._send())
            self._idle.clear()

    async def _send(self) -> None:
        """Round trips until no take waits: each carries every take that arrived during the last."""
        try:
            while self._waiting:
                takes, self._waiting = self._waiting, []
                gone = [take for take in takes if take.answer is not None and take.answer.done()]
                for take in gone:  # its caller gave up before it was sent: it spends nothing
                    self._answered(take, None)
                takes = [take for take in takes if take.answer is None or not take.answer.done()]
                if not takes:
                    continue
                try:
                    results = await self._call(takes)
                except Exception as exc:  # noqa: BLE001 - every waiting take gets it
                    results = [exc] * len(takes)
                except BaseException:  # cancelled (the loop is closing): what was sent may not count
                    stopped = RedisError("the rate limiter stopped before Redis answered")
                    for take in [*takes, *self._waiting]:
                        self._answered(take, stopped)
                        if take.answer is not None and not take.answer.done():
                            take.answer.set_exception(stopped)
                    self._waiting = []
                    raise
                for take, result in zip(takes, results, strict=True):
                    self._answered(take, result)
                    if take.answer is None or take.answer.done():
                        continue
                    if isinstance(result, BaseException):
                        take.answer.set_exception(result)
                    else:
                        take.answer.set_result(result)
        finally:
            self._sending = False
            self._idle.set()

    async def drain(self) -> None:
        """Wait (``timeout_s`` at most) until Redis has answered every take sent or queued, so
        that the takes allowed ahead are counted before the app closes its Redis client."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout_s):
                await self._idle.wait()

    def _answered(self, take: _Take, result: list[bytes] | BaseException | None) -> None:
        """Keep the process's view of an ``ahead`` bucket: Redis's balance after this take, or
        unknown after an error (the next take waits for Redis). A forced take Redis could not
        fail is an error only here: its action already happened."""
        known = take.known
        if known is None:
            return
        known.unanswered -= int(take.args[2])
        if result is None:
            return
        if isinstance(result, BaseException):
            known.tokens = None
            if take.answer is None:
                self._warn(take.key.removeprefix(KEY_PREFIX), result, allowed_ahead=True)
            return
        known.tokens, known.at = float(result[3]), asyncio.get_running_loop().time()
        if self._known.get(take.key) is known:  # not forgotten meanwhile (``KNOWN_BUCKETS``)
            self._known.move_to_end(take.key)

    async def _call(self, takes: list[_Take]) -> list:
        if len(takes) == 1:
            return [await self._script(keys=[takes[0].key], args=takes[0].args)]
        results = await self._pipelined(takes)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:  # Redis restarted or flushed its scripts: again, only the takes it did not run
            await self._redis.script_load(_TAKE)
            for i, result in zip(missing, await self._pipelined([takes[i] for i in missing]), strict=True):
                results[i] = result
        return results

    async def _pipelined(self, takes: list[_Take]) -> list:
        async with self._redis.pipeline(transaction=False) as pipe:
            for take in takes:
                pipe.evalsha(self._script.sha, 1, take.key, *take.args)
            return await pipe.execute(raise_on_error=False)

    def _unavailable(self, bucket: str, limit: RateLimit, cost: int, exc: Exception) -> Decision:
        self._warn(bucket, exc, fail_open=limit.fail_open)
        if not limit.fail_open:
            raise RateLimiterUnavailable(f"rate limiter unavailable: {exc!r}") from exc
        return Decision(allowed=True, retry_after_s=0.0, remaining=limit.burst - cost)

    def _warn(self, bucket: str, exc: BaseException, **fields: bool) -> None:
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < WARN_EVERY_S:
            self._unwarned += 1
            return
        log.warning(
            "ratelimit.unavailable", bucket=bucket, **fields, error=repr(exc), suppressed_since_last=self._unwarned
        )
        self._warned_at, self._unwarned = now, 0
