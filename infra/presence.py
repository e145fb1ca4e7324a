"""Presence: the ``Presence`` port and its Redis backend.

A person is ``online`` while any of their devices (one per session) is active, ``away`` while
every device left is away, and ``offline`` when no device is left: a device leaves at once on a
clean close (``gone``) or when its last sign of life is ``ttl_s`` old (a lost connection).
Every app process shares the state in Redis, and every change of a person's status is reported
exactly once, by the call that made it (``seen``, ``gone``) or by ``expire``, which any process
may run: a crashed gateway's devices still time out.

Keys, with ``{user}`` as a Redis Cluster hash tag so that one person's keys share a slot and one
script can change them together:
- ``hubbub:pr:{user}:exp``   zset, device -> expiry (ms)
- ``hubbub:pr:{user}:st``    hash, device -> active | away
- ``hubbub:pr:{user}:agg``   string, the status last reported (online | away | offline)
- ``hubbub:pr:{user}:seen``  string, last sign of life (ms)
- ``hubbub:pr:expiry``       zset, "{user} {device}" -> expiry (ms): what ``expire`` sweeps
Time comes from the Redis server, so processes with skewed clocks agree.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import msgspec
from redis.asyncio import Redis

PREFIX = "hubbub:pr:"
EXPIRY = PREFIX + "expiry"
DeviceStatus = Literal["active", "away"]
Status = Literal["online", "away", "offline"]


class Change(msgspec.Struct, frozen=True):
    """A person's status changed: what it is now and when they were last seen."""

    user_id: str
    status: Status
    last_seen_at: dt.datetime | None


class Seen(msgspec.Struct, frozen=True):
    status: Status
    last_seen_at: dt.datetime | None


@runtime_checkable
class Presence(Protocol):
    async def seen(self, user_id: str, device_id: str, status: DeviceStatus, ttl_s: float) -> Change | None:
        """The device is alive (``status``) for ``ttl_s`` more seconds; the change, if any."""
        ...

    async def gone(self, user_id: str, device_id: str) -> Change | None:
        """The device left (a clean close, a logout); the change, if any."""
        ...

    async def expire(self, limit: int = 1000) -> list[Change]:
        """Drop devices whose time is up (at most ``limit``); the changes they made."""
        ...

    async def statuses(self, user_ids: Sequence[str]) -> dict[str, Seen]:
        """Each person's status as last reported, and when they were last seen."""
        ...


# KEYS: exp, st, agg, seen. ARGV: device, status ('' = remove the device), ttl_ms.
# Returns {changed (0/1), status, last_seen_ms, device_expiry_ms or -1 if the device is gone}.
_UPDATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local device, status = ARGV[1], ARGV[2]
local expiry = -1
if status == '' then
  redis.call('ZREM', KEYS[1], device); redis.call('HDEL', KEYS[2], device)
elseif status == 'expire' then
  local score = redis.call('ZSCORE', KEYS[1], device)
  if score and tonumber(score) > now then expiry = tonumber(score) end
else
  expiry = now + tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], expiry, device); redis.call('HSET', KEYS[2], device, status)
  redis.call('SET', KEYS[4], now)
end
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], old); redis.call('HDEL', KEYS[2], old)
end
local agg = 'offline'
for _, s in ipairs(redis.call('HVALS', KEYS[2])) do
  if s == 'active' then agg = 'online'; break end
  agg = 'away'
end
local before = redis.call('GET', KEYS[3]) or 'offline'
if agg == 'offline' then
  redis.call('DEL', KEYS[3])
  if before ~= 'offline' then redis.call('SET', KEYS[4], now) end
else
  redis.call('SET', KEYS[3], agg)
end
local seen = tonumber(redis.call('GET', KEYS[4]) or '-1')
return {before ~= agg and 1 or 0, agg, seen, expiry}
"""
# KEYS: the expiry index. ARGV: member, expiry ms: drop the member unless it was renewed since.
_FORGET = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""


BATCH = 500
"""``seen`` / ``gone`` calls sent in one pipeline."""
_Call = tuple[str, str, str, int, "asyncio.Future[Change | None]"]


def _keys(user_id: str) -> list[str]:
    return [f"{PREFIX}{{{user_id}}}:{name}" for name in ("exp", "st", "agg", "seen")]


def _time(ms: int) -> dt.datetime | None:
    return None if ms < 0 else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class RedisPresence:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._update = redis.register_script(_UPDATE)
        self._forget = redis.register_script(_FORGET)
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None

    async def seen(self, user_id: str, device_id: str, status: DeviceStatus, ttl_s: float) -> Change | None:
        if status not in ("active", "away"):
            raise ValueError(f"a device is active or away, not {status!r}")
        return await self._batched(user_id, device_id, status, int(ttl_s * 1000))

    async def gone(self, user_id: str, device_id: str) -> Change | None:
        return await self._batched(user_id, device_id, "", 0)

    async def _batched(self, user_id: str, device_id: str, status: str, ttl_ms: int) -> Change | None:
        # Thousands of sockets' heartbeats and status changes a second: at one round trip per
        # command (two per call) redis-py did ~1,000 calls/s here, and the pool ran dry
        # (bench/realtime.py at 10,000 sockets). Calls queue and go in pipelines, in order (a
        # close right after a heartbeat must not be undone by it), one pipeline in flight.
        future: asyncio.Future[Change | None] = asyncio.get_running_loop().create_future()
        self._queue.append((user_id, device_id, status, ttl_ms, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())
        try:
            return await future
        finally:
            del future  # an error set on it must not make a cycle with this frame (see eventstore/postgres.py)

    async def _send(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
            try:
                results = await self._apply(batch)
            except Exception as exc:  # noqa: BLE001 - each caller gets the error
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:
                for *_, future in batch:
                    future.cancel()
                raise
            for (*_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _apply(self, batch: list[_Call]) -> list[Change | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, device_id, status, ttl_ms, _ in batch:
                await self._update(keys=_keys(user_id), args=[device_id, status, ttl_ms], client=pipe)
            replies = await pipe.execute()
        index: dict[str, int | None] = {}  # member -> expiry, None: removed (the last call's)
        out: list[Change | None] = []
        for (user_id, device_id, status, _, _), (changed, agg, seen, expiry) in zip(batch, replies, strict=True):
            index[f"{user_id} {device_id}"] = expiry if status else None
            out.append(Change(user_id, agg.decode(), _time(seen)) if changed else None)
        async with self._redis.pipeline(transaction=False) as pipe:
            if adds := {member: expiry for member, expiry in index.items() if expiry is not None}:
                pipe.zadd(EXPIRY, adds)
            if removes := [member for member, expiry in index.items() if expiry is None]:
                pipe.zrem(EXPIRY, *removes)
            await pipe.execute()
        return out

    async def expire(self, limit: int = 1000) -> list[Change]:
        seconds, micros = await self._redis.time()
        now = seconds * 1000 + micros // 1000
        due = await self._redis.zrangebyscore(EXPIRY, "-inf", now, start=0, num=limit, withscores=True)
        changes = []
        for member, score in due:
            user_id, _, device_id = member.decode().partition(" ")
            changed, agg, seen, expiry = await self._update(keys=_keys(user_id), args=[device_id, "expire", 0])
            if expiry >= 0:  # renewed after we read the index: it holds the new time already
                continue
            await self._forget(keys=[EXPIRY], args=[member, int(score)])
            if changed:
                changes.append(Change(user_id, agg.decode(), _time(seen)))
        return changes

    async def statuses(self, user_ids: Sequence[str]) -> dict[str, Seen]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                _, _, agg, seen = _keys(user_id)
                pipe.get(agg)
                pipe.get(seen)
            values = await pipe.execute()
        out = {}
        for i, user_id in enumerate(user_ids):
            agg, seen = values[2 * i], values[2 * i + 1]
            out[user_id] = Seen(agg.decode() if agg else "offline", _time(int(seen)) if seen else None)
        return out
