"""Rate limits: the ``RateLimiter`` port and its Redis token-bucket backend.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; an action takes ``cost``
tokens or is refused with the time until enough have refilled. Every app process shares the
buckets in Redis, so a limit holds for the whole deployment, not per worker.
"""

from __future__ import annotations

import asyncio
import time
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
    """

    rate_per_s: float
    burst: int
    fail_open: bool = False


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
# same, so idle buckets cost no memory.
_TAKE = """
if redis.replicate_commands then redis.replicate_commands() end
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(saved[1]), tonumber(saved[2])
if tokens == nil or ts == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, retry = 0, (cost - tokens) / rate
if tokens >= cost then
  tokens, allowed, retry = tokens - cost, 1, 0
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((burst - tokens) / rate * 1000) + 1000))
return {allowed, tostring(retry), math.floor(tokens)}
"""


class RedisRateLimiter:
    """Token buckets in Redis, one Lua script per take (atomic: concurrent takes never overspend).

    Keys are ``hubbub:rl:{bucket}``. The takes that arrive while one round trip is out go
    together in the next, pipelined (each still its own script call on its own key, so buckets
    may live on any node of a Redis Cluster): at a thousand posts a second a take costs a few
    microseconds of this process instead of a round trip's worth. When Redis is unreachable, slow
    (over ``timeout_s``) or refuses the write, the limit's ``fail_open`` decides: open allows the
    action, closed raises ``RateLimiterUnavailable``. Either way a warning is logged at most once
    per minute.
    """

    def __init__(self, redis: Redis, *, timeout_s: float = 1.0) -> None:
        self._redis = redis
        self._script = redis.register_script(_TAKE)
        self._timeout_s = timeout_s
        self._warned_at: float | None = None
        self._unwarned = 0
        self._waiting: list[tuple[str, list[float | int], asyncio.Future[list[bytes]]]] = []
        self._sending = False

    async def take(self, bucket: str, limit: RateLimit, cost: int = 1) -> Decision:
        if not 1 <= cost <= limit.burst:
            raise ValueError(f"cost must be between 1 and the burst ({limit.burst}), not {cost}")
        answer: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self._waiting.append((KEY_PREFIX + bucket, [limit.rate_per_s, limit.burst, cost], answer))
        if not self._sending:
            self._sending = True
            asyncio.get_running_loop().create_task(self._send())
        try:
            async with asyncio.timeout(self._timeout_s):
                allowed, retry, remaining = await asyncio.shield(answer)
        except (RedisError, OSError, TimeoutError) as exc:
            answer.cancel()  # not sent any more if it still waits: its request has been answered
            return self._unavailable(bucket, limit, cost, exc)
        finally:
            del answer  # an error set on it must not make a cycle with this frame (see eventstore/postgres.py)
        return Decision(allowed=bool(allowed), retry_after_s=float(retry), remaining=int(remaining))

    async def _send(self) -> None:
        """Round trips until no take waits: each carries every take that arrived during the last."""
        try:
            while self._waiting:
                takes = [take for take in self._waiting if not take[2].done()]
                self._waiting = []
                if not takes:
                    continue
                try:
                    results = await self._call(takes)
                except Exception as exc:  # noqa: BLE001 - every waiting take gets it
                    results = [exc] * len(takes)
                for (_, _, answer), result in zip(takes, results, strict=True):
                    if answer.done():
                        continue
                    if isinstance(result, BaseException):
                        answer.set_exception(result)
                    else:
                        answer.set_result(result)
        finally:
            self._sending = False

    async def _call(self, takes: list[tuple[str, list[float | int], asyncio.Future[list[bytes]]]]) -> list:
        if len(takes) == 1:
            key, args, _ = takes[0]
            return [await self._script(keys=[key], args=args)]
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, args, _ in takes:
                    pipe.evalsha(self._script.sha, 1, key, *args)
                results = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                await self._redis.script_load(_TAKE)  # Redis restarted or flushed its scripts
                continue
            return results
        return results

    def _unavailable(self, bucket: str, limit: RateLimit, cost: int, exc: Exception) -> Decision:
        self._warn(bucket, limit, exc)
        if not limit.fail_open:
            raise RateLimiterUnavailable(f"rate limiter unavailable: {exc!r}") from exc
        return Decision(allowed=True, retry_after_s=0.0, remaining=limit.burst - cost)

    def _warn(self, bucket: str, limit: RateLimit, exc: Exception) -> None:
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < WARN_EVERY_S:
            self._unwarned += 1
            return
        log.warning("ratelimit.unavailable", bucket=bucket, fail_open=limit.fail_open,
                    error=repr(exc), suppressed_since_last=self._unwarned)
        self._warned_at, self._unwarned = now, 0
