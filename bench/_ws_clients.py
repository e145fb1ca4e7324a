"""WebSocket clients for the realtime benchmark: processes of their own, each holding many
sockets with the ``websockets`` asyncio client, driven by the parent over a pipe.

Each socket says hello with its user's token, waits for ``ready``, heartbeats like a real client
(every ``heartbeat_s`` from ``ready``, spread over the interval) and reads every frame. While
recording, a frame is timestamped with ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for
every process on the machine) and, without parsing the JSON, matched by its message text
``rt:<key>`` (which the poster chose) or counted as a ``presence.changed`` frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import random
import time
from collections import Counter

from bench._ws_http import raise_nofile

MARK = b'"text":"rt:'
PRESENCE = b'"presence.changed"'
HEARTBEAT = '{"op":"heartbeat"}'


class _Holder:
    """The sockets of one process (runs in the child)."""

    def __init__(self, url: str, tokens: dict[int, str], compression: bool) -> None:
        self.url, self.tokens, self.compression = url, tokens, compression
        self.sockets: dict = {}
        self.ports: dict[int, int] = {}
        self.recording = False
        self.records: list[tuple[str, int, float]] = []
        self.presence: dict[int, list[tuple[float, int]]] = {}
        self.frames = self.presence_frames = self.presence_bytes = 0
        self.closed: Counter[str] = Counter()
        self.heartbeat_s = 30.0
        self._readers: set[asyncio.Task] = set()

    async def serve(self, pipe) -> None:
        beats = asyncio.create_task(self._heartbeats())
        while True:
            cmd, args = await asyncio.to_thread(pipe.recv)
            if cmd == "exit":
                beats.cancel()
                pipe.send({"ok": True})
                return
            try:
                pipe.send(await getattr(self, f"do_{cmd}")(**args))
            except Exception as exc:  # noqa: BLE001 - the parent reports it
                pipe.send({"error": f"{cmd}: {type(exc).__name__}: {exc}"})

    async def do_connect(self, indices: list[int], concurrency: int) -> dict:
        from websockets.asyncio.client import connect

        gate = asyncio.Semaphore(concurrency)
        failed: Counter[str] = Counter()
        took: list[float] = []

        async def one(idx: int) -> None:
            async with gate:
                began = time.monotonic()
                try:
                    ws = await connect(self.url, compression="deflate" if self.compression else None, proxy=None,
                                       ping_interval=None, open_timeout=120, close_timeout=5, max_queue=64)
                    await ws.send(json.dumps({"op": "hello", "token": self.tokens[idx], "resume_from": None}))
                    async with asyncio.timeout(120):
                        while (frame := json.loads(await ws.recv()))["op"] != "ready":
                            if frame["op"] == "error":
                                raise RuntimeError(f"error frame {frame.get('code')}")
                except Exception as exc:  # noqa: BLE001 - counted by kind
                    code = getattr(getattr(exc, "rcvd", None), "code", None)
                    failed[f"{type(exc).__name__}{f' {code}' if code else ''}"] += 1
                    return
                took.append(time.monotonic() - began)
                self.heartbeat_s = float(frame.get("heartbeat_s", self.heartbeat_s))
                self.sockets[idx] = ws
                self.ports[idx] = ws.local_address[1]
                task = asyncio.create_task(self._read(idx, ws))
                self._readers.add(task)
                task.add_done_callback(self._readers.discard)

        began = time.monotonic()
        await asyncio.gather(*(one(i) for i in indices))
        return {"ok": len(took), "failed": dict(failed), "seconds": time.monotonic() - began,
                "connect_s": took, "ports": {i: self.ports[i] for i in indices if i in self.ports}}

    async def _read(self, idx: int, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            while True:
                raw = await ws.recv(decode=False)  # bytes: no UTF-8 decoding of frames we only search
                t = time.monotonic()
                self.frames += 1
                if (i := raw.find(MARK, 0, 800)) >= 0:  # message objects have their text near the start
                    if self.recording:
                        i += len(MARK)
                        self.records.append((raw[i:raw.find(b'"', i)].decode(), idx, t))
                elif raw.find(PRESENCE, 0, 120) >= 0:
                    self.presence_frames += 1
                    self.presence_bytes += len(raw)
                    if self.recording:
                        self.presence.setdefault(idx, []).append((t, len(raw)))
        self.sockets.pop(idx, None)
        self.closed[f"{ws.close_code} {ws.close_reason or ''}".strip()] += 1

    async def _heartbeats(self) -> None:
        """Each socket once per 0.8 ``heartbeat_s``, spread over the interval by deadline (a busy
        loop sends late ones at once, never stretching the round), and never waiting on a send."""
        await asyncio.sleep(random.random())
        pending: set[asyncio.Task] = set()
        while True:
            socks, began = list(self.sockets.values()), time.monotonic()
            gap = 0.8 * self.heartbeat_s / max(1, len(socks))
            if not socks:
                await asyncio.sleep(1)
            for i, ws in enumerate(socks):
                if (delay := began + i * gap - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(_beat(ws))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if (rest := began + 0.8 * self.heartbeat_s - time.monotonic()) > 0:
                await asyncio.sleep(rest)

    async def do_record(self, on: bool) -> dict:
        out = {"records": self.records, "presence": self.presence} if not on else {}
        self.recording, self.records, self.presence = on, [], {}
        return out

    async def do_count(self) -> dict:
        return {"records": len(self.records)}

    async def do_storm(self, rate: float, start: float, seconds: float) -> dict:
        """``{"op":"presence"}`` at ``rate``/s from this process's sockets in turn (by index), away on
        the first pass, active on the second, and so on; when each was sent."""
        order = sorted(self.sockets)
        sent: list[tuple[int, str, float, float]] = []
        cpu0 = time.process_time()
        for j in range(int(rate * seconds)):
            due = start + j / rate
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            idx = order[j % len(order)]
            status = "away" if (j // len(order)) % 2 == 0 else "active"
            if (ws := self.sockets.get(idx)) is None:
                continue
            t = time.monotonic()
            with contextlib.suppress(Exception):
                await ws.send(f'{{"op":"presence","status":"{status}"}}')
                sent.append((idx, status, t, due))
        return {"sent": sent, "cpu_s": time.process_time() - cpu0}

    async def do_stats(self) -> dict:
        return {"open": len(self.sockets), "frames": self.frames, "closed": dict(self.closed),
                "presence_frames": self.presence_frames, "presence_bytes": self.presence_bytes,
                "cpu_s": time.process_time()}

    async def do_close(self) -> dict:
        socks = list(self.sockets.values())
        began = time.monotonic()
        await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)
        await asyncio.gather(*list(self._readers), return_exceptions=True)
        return {"closed": len(socks), "seconds": time.monotonic() - began}


async def _beat(ws) -> None:
    with contextlib.suppress(Exception):
        await ws.send(HEARTBEAT)


def _child(pipe, url: str, tokens: dict[int, str], compression: bool) -> None:
    raise_nofile()
    asyncio.run(_Holder(url, tokens, compression).serve(pipe))


class Fleet:
    """``processes`` client processes; user ``i``'s socket lives in process ``i % processes``."""

    def __init__(self, ws_url: str, tokens: list[str], processes: int, compression: bool) -> None:
        ctx = mp.get_context("spawn")
        self.n = processes
        self.pipes, self.procs = [], []
        for p in range(processes):
            mine, theirs = ctx.Pipe()
            mapping = {i: tokens[i] for i in range(p, len(tokens), processes)}
            proc = ctx.Process(target=_child, args=(theirs, ws_url, mapping, compression), daemon=True)
            proc.start()
            self.pipes.append(mine)
            self.procs.append(proc)
        self.ports: dict[int, int] = {}

    @property
    def pids(self) -> dict[str, int]:
        return {f"clients-{i}": p.pid for i, p in enumerate(self.procs)}

    def _all(self, cmd: str, args: list[dict]) -> list[dict]:
        for pipe, a in zip(self.pipes, args, strict=True):
            pipe.send((cmd, a))
        outs = [pipe.recv() for pipe in self.pipes]
        if errors := [o["error"] for o in outs if "error" in o]:
            raise RuntimeError(f"client process failed: {errors[0]}")
        return outs

    def connect(self, indices: range | list[int], concurrency: int = 32) -> dict:
        outs = self._all("connect", [{"indices": [i for i in indices if i % self.n == p], "concurrency": concurrency}
                                     for p in range(self.n)])
        failed: Counter[str] = Counter()
        for o in outs:
            failed.update(o["failed"])
            self.ports.update(o["ports"])
        took = sorted(t for o in outs for t in o["connect_s"])
        return {"ok": sum(o["ok"] for o in outs), "failed": dict(failed), "seconds": max(o["seconds"] for o in outs),
                "connect_s_sorted": took}

    def record(self, on: bool) -> tuple[list[tuple[str, int, float]], dict[int, list[tuple[float, int]]]]:
        outs = self._all("record", [{"on": on}] * self.n)
        if on:
            return [], {}
        presence: dict[int, list[tuple[float, int]]] = {}
        for o in outs:
            presence.update(o["presence"])
        return [r for o in outs for r in o["records"]], presence

    def count(self) -> int:
        return sum(o["records"] for o in self._all("count", [{}] * self.n))

    def storm(self, rate: float, seconds: float, lead_s: float = 1.0) -> tuple[list[tuple[int, str, float, float]], list[float]]:
        """Presence changes at ``rate``/s in total over every open socket; (what was sent, CPU s per process)."""
        start = time.monotonic() + lead_s
        outs = self._all("storm", [{"rate": rate / self.n, "start": start + p / rate, "seconds": seconds}
                                   for p in range(self.n)])
        return [x for o in outs for x in o["sent"]], [o["cpu_s"] for o in outs]

    def stats(self) -> dict:
        outs = self._all("stats", [{}] * self.n)
        closed: Counter[str] = Counter()
        for o in outs:
            closed.update(o["closed"])
        return {"open": sum(o["open"] for o in outs), "frames": sum(o["frames"] for o in outs), "closed": dict(closed),
                "presence_frames": sum(o["presence_frames"] for o in outs),
                "presence_bytes": sum(o["presence_bytes"] for o in outs)}

    def close(self) -> dict:
        outs = self._all("close", [{}] * self.n)
        return {"closed": sum(o["closed"] for o in outs), "seconds": max(o["seconds"] for o in outs)}

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send(("exit", {}))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
