"""WebSocket clients for the realtime benchmark: processes of their own, each holding many
sockets with the ``websockets`` asyncio client, driven by the parent over a pipe.

Each socket says hello with its user's token, waits for ``ready``, heartbeats like a real client
(every ``heartbeat_s`` from ``ready``, spread over the interval) and reads every frame. The
handshake is the ``websockets`` client's; after it a lean protocol of our own reads the frames
(``_Lean``: parsed where they arrive, no task per socket or per frame), so that the generators,
on the server's cores, spend less of them per frame than ``websockets`` did (the server's frames
are unmasked and unfragmented; the client's are masked, as RFC 6455 wants). While
recording, a frame is timestamped with ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for
every process on the machine) and, without parsing the JSON, matched by its message text
``rt:<key>`` (which the poster chose) or counted as a ``presence.changed`` frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import time
from collections import Counter

from bench._ws_http import raise_nofile

MARK = b'"text":"rt:'
PRESENCE = b'"presence.changed"'
POSITION = b'"position":'
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
        self.trails: dict[int, list[tuple[str, int, float]]] = {}
        """Followed sockets' message frames: (text key, position, when), across their resumes."""
        self.drops: dict[int, int] = {}
        """Sockets to drop once their trail is this long (then resume ``gap_s`` later)."""
        self.gap_s = 0.0
        self.resumes: dict[int, dict] = {}
        self._tasks: set[asyncio.Task] = set()

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
        gate = asyncio.Semaphore(concurrency)
        failed: Counter[str] = Counter()
        took: list[float] = []

        async def one(idx: int) -> None:
            async with gate:
                began = time.monotonic()
                try:
                    ws, _ = await self._open(idx, None)
                except Exception as exc:  # noqa: BLE001 - counted by kind
                    code = getattr(getattr(exc, "rcvd", None), "code", None)
                    failed[f"{type(exc).__name__}{f' {code}' if code else ''}"] += 1
                    return
                took.append(time.monotonic() - began)
                ws.reading = True

        began = time.monotonic()
        await asyncio.gather(*(one(i) for i in indices))
        return {
            "ok": len(took),
            "failed": dict(failed),
            "seconds": time.monotonic() - began,
            "connect_s": took,
            "ports": {i: self.ports[i] for i in indices if i in self.ports},
        }

    async def _open(self, idx: int, resume_from: int | None) -> tuple[_Lean, dict]:
        """Socket ``idx`` after hello and ready (not reading yet); the ready frame."""
        from websockets.asyncio.client import connect

        handshake = await connect(
            self.url,
            compression="deflate" if self.compression else None,
            proxy=None,
            ping_interval=None,
            open_timeout=120,
            close_timeout=5,
        )
        if handshake.protocol.extensions:
            raise RuntimeError("the server negotiated an extension; _Lean reads plain frames only")
        ws = _Lean(self, idx, handshake)
        await ws.send(json.dumps({"op": "hello", "token": self.tokens[idx], "resume_from": resume_from}))
        async with asyncio.timeout(120):
            while (frame := json.loads(await ws.first()))["op"] != "ready":
                if frame["op"] == "error":
                    raise RuntimeError(f"error frame {frame.get('code')}")
        self.heartbeat_s = float(frame.get("heartbeat_s", self.heartbeat_s))
        self.sockets[idx] = ws
        self.ports[idx] = ws.local_port
        return ws, frame

    def frame(self, idx: int, raw: bytes | bytearray, start: int, end: int) -> None:
        """A text frame ``raw[start:end]`` of socket ``idx`` arrived (``_Lean``)."""
        t = time.monotonic()
        self.frames += 1
        if (i := raw.find(MARK, start, min(end, start + 800))) >= 0:  # message objects have their text near the start
            if self.recording:
                i += len(MARK)
                self.records.append((bytes(raw[i : raw.find(b'"', i, end)]).decode(), idx, t))
            if self.trails and (trail := self.trails.get(idx)) is not None:
                self._follow(idx, trail, raw, start, end, t)
        elif raw.find(PRESENCE, start, min(end, start + 120)) >= 0:
            self.presence_frames += 1
            self.presence_bytes += end - start
            if self.recording:
                self.presence.setdefault(idx, []).append((t, end - start))

    def _follow(self, idx: int, trail: list, raw: bytes | bytearray, start: int, end: int, t: float) -> None:
        i = raw.find(MARK, start, end) + len(MARK)
        j = raw.find(POSITION, start, min(end, start + 60)) + len(POSITION)
        trail.append((bytes(raw[i : raw.find(b'"', i, end)]).decode(), int(raw[j : raw.find(b",", j, end)]), t))
        if len(trail) == self.drops.get(idx):
            del self.drops[idx]
            self.sockets.pop(idx).drop()  # now: frames later in this read are not this client's any more
            task = asyncio.get_running_loop().create_task(self._resume(idx, trail[-1][1], t))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _resume(self, idx: int, position: int, dropped_at: float) -> None:
        await asyncio.sleep(self.gap_s)
        hello_at = time.monotonic()
        try:
            ws, ready = await self._open(idx, position)
        except Exception as exc:  # noqa: BLE001 - reported with the trails
            self.resumes[idx] = {"error": f"{type(exc).__name__}: {exc}"}
            return
        for payload in ws.unread():  # what came with ready, before reading was on
            self.frame(idx, payload, 0, len(payload))
        ws.reading = True
        self.resumes[idx] = {
            "dropped_at": dropped_at,
            "hello_at": hello_at,
            "ready_at": time.monotonic(),
            "resumed": ready.get("resumed"),
        }

    def lost(self, idx: int, ws: _Lean) -> None:
        if self.sockets.get(idx) is ws:
            del self.sockets[idx]
        if ws.dropped:
            return  # we left it: not a close by the server
        self.closed[f"{ws.close_code} {ws.close_reason}".strip()] += 1

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
        return {"records": len(self.records), "trailed": sum(map(len, self.trails.values()))}

    async def do_follow(self, indices: list[int], drop: list[int], after: int, gap_s: float) -> dict:
        """Keep the message frames of ``indices`` with their positions; each of ``drop`` leaves its
        socket once it has ``after`` of them (close sent, not waited for: ``_Lean.drop``) and
        resumes ``gap_s`` later from the last position it had."""
        self.trails, self.resumes, self.gap_s = {i: [] for i in indices}, {}, gap_s
        self.drops = dict.fromkeys(drop, after)
        return {}

    async def do_trails(self) -> dict:
        out = {"trails": self.trails, "resumes": self.resumes, "not_dropped": list(self.drops)}
        self.trails, self.drops, self.resumes = {}, {}, {}
        return out

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
        return {
            "open": len(self.sockets),
            "frames": self.frames,
            "closed": dict(self.closed),
            "presence_frames": self.presence_frames,
            "presence_bytes": self.presence_bytes,
            "cpu_s": time.process_time(),
        }

    async def do_close(self) -> dict:
        socks = list(self.sockets.values())
        began = time.monotonic()
        await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)
        return {"closed": len(socks), "seconds": time.monotonic() - began}


class _Lean(asyncio.Protocol):
    """A socket after its handshake: frames parsed as they arrive and handed to the holder."""

    def __init__(self, holder: _Holder, idx: int, handshake) -> None:
        self.holder, self.idx = holder, idx
        self.transport = handshake.transport
        self.local_port = handshake.local_address[1]
        self.buf = bytearray()
        self.reading = False  # until ready: frames go to ``first``
        self.pending: asyncio.Queue[bytes] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason = ""
        self.closing = False  # we sent close: the server's close is the reply, not to be echoed
        self.dropped = False  # left by its client (``drop``): what still arrives is not read
        self.gone = asyncio.get_running_loop().create_future()
        self.transport.set_protocol(self)  # nothing arrives before hello: no bytes are left behind

    async def first(self) -> bytes:
        return await self.pending.get()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        i, n = 0, len(buf)
        while n - i >= 2:
            size, head = buf[i + 1] & 0x7F, 2
            if size == 126:
                if n - i < 4:
                    break
                size, head = int.from_bytes(buf[i + 2 : i + 4], "big"), 4
            elif size == 127:
                if n - i < 10:
                    break
                size, head = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
            if n - i < head + size:
                break
            opcode, start = buf[i] & 0x0F, i + head
            i = start + size
            if opcode == 0x1:
                if self.reading:
                    self.holder.frame(self.idx, buf, start, i)
                elif not self.dropped:
                    self.pending.put_nowait(bytes(buf[start:i]))
            elif opcode == 0x8:
                self._closed_by_server(bytes(buf[start:i]))
            elif opcode == 0x9:
                self._write(0x8A, bytes(buf[start:i]))  # pong
        del buf[:i]

    def _closed_by_server(self, payload: bytes) -> None:
        self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        self.close_reason = payload[2:].decode(errors="replace")
        if not self.transport.is_closing():
            if not self.closing:
                self._write(0x88, payload[:2])
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = 1006
        if not self.gone.done():
            self.gone.set_result(None)
        self.pending.put_nowait(b'{"op":"error","code":"closed"}')
        self.holder.lost(self.idx, self)

    def _write(self, first: int, payload: bytes) -> None:
        if self.transport.is_closing():
            raise ConnectionError("closed")
        mask = os.urandom(4)
        size = len(payload)
        head = bytes((first, 0x80 | size)) if size < 126 else bytes((first, 0xFE)) + size.to_bytes(2, "big")
        self.transport.write(head + mask + bytes(b ^ mask[k & 3] for k, b in enumerate(payload)))

    async def send(self, text: str) -> None:
        self._write(0x81, text.encode())

    def unread(self) -> list[bytes]:
        """Text frames that came before ``reading`` was on (after ready: a resume's replay)."""
        out = []
        while not self.pending.empty():
            out.append(self.pending.get_nowait())
        return out

    def drop(self) -> None:
        """Leave as a client that reconnects at once does: a close frame, not waited for (a client
        that waits must read to the server's reply, behind the frames in flight); nothing that
        arrives after it is read."""
        self.reading, self.dropped = False, True
        if not self.transport.is_closing():
            self.closing = True
            self._write(0x88, (1000).to_bytes(2, "big"))

    async def close(self) -> None:
        if not self.transport.is_closing() and not self.closing:
            self.closing = True
            self._write(0x88, (1000).to_bytes(2, "big"))
        async with asyncio.timeout(5):
            await self.gone


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
        outs = self._all(
            "connect",
            [{"indices": [i for i in indices if i % self.n == p], "concurrency": concurrency} for p in range(self.n)],
        )
        failed: Counter[str] = Counter()
        for o in outs:
            failed.update(o["failed"])
            self.ports.update(o["ports"])
        took = sorted(t for o in outs for t in o["connect_s"])
        return {
            "ok": sum(o["ok"] for o in outs),
            "failed": dict(failed),
            "seconds": max(o["seconds"] for o in outs),
            "connect_s_sorted": took,
        }

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

    def trailed(self) -> int:
        return sum(o["trailed"] for o in self._all("count", [{}] * self.n))

    def follow(self, indices: list[int], drop: list[int], after: int, gap_s: float) -> None:
        """See ``_Holder.do_follow``."""
        self._all(
            "follow",
            [
                {
                    "indices": [i for i in indices if i % self.n == p],
                    "drop": [i for i in drop if i % self.n == p],
                    "after": after,
                    "gap_s": gap_s,
                }
                for p in range(self.n)
            ],
        )

    def trails(self) -> tuple[dict[int, list[tuple[str, int, float]]], dict[int, dict], list[int]]:
        """The followed sockets' trails, their resumes, and those never dropped (too few frames)."""
        outs = self._all("trails", [{}] * self.n)
        return (
            {i: t for o in outs for i, t in o["trails"].items()},
            {i: r for o in outs for i, r in o["resumes"].items()},
            [i for o in outs for i in o["not_dropped"]],
        )

    def storm(
        self, rate: float, seconds: float, lead_s: float = 1.0
    ) -> tuple[list[tuple[int, str, float, float]], list[float]]:
        """Presence changes at ``rate``/s in total over every open socket; (what was sent, CPU s per process)."""
        start = time.monotonic() + lead_s
        outs = self._all(
            "storm", [{"rate": rate / self.n, "start": start + p / rate, "seconds": seconds} for p in range(self.n)]
        )
        return [x for o in outs for x in o["sent"]], [o["cpu_s"] for o in outs]

    def stats(self) -> dict:
        outs = self._all("stats", [{}] * self.n)
        closed: Counter[str] = Counter()
        for o in outs:
            closed.update(o["closed"])
        return {
            "open": sum(o["open"] for o in outs),
            "frames": sum(o["frames"] for o in outs),
            "closed": dict(closed),
            "presence_frames": sum(o["presence_frames"] for o in outs),
            "presence_bytes": sum(o["presence_bytes"] for o in outs),
        }

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
