"""HTTP for the realtime benchmark's load generators: a small HTTP/1.1 keep-alive client and an
open-loop pacer that runs in processes of its own.

Why not httpx: on this 2-core machine the generators share the cores with the server, and httpx
spends several times the CPU per request of a bare ``asyncio`` stream exchange. The client below
speaks only what Hubbub answers (Content-Length or chunked bodies, keep-alive).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import resource
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (every generator process calls it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class HttpError(Exception):
    pass


class Http:
    """At most ``size`` requests in flight, each on a kept-alive connection of its own."""

    def __init__(self, base_url: str, size: int = 32) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._gate = asyncio.Semaphore(size)

    async def request(
        self, method: str, path: str, token: str | None = None, body: bytes | None = None
    ) -> tuple[int, bytes]:
        status, data, _ = await self.timed(method, path, token, body)
        return status, data

    async def timed(
        self, method: str, path: str, token: str | None = None, body: bytes | None = None
    ) -> tuple[int, bytes, float]:
        """status, body, and the ``time.monotonic()`` the request was written (after waiting for a slot)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        raw = head.encode() + b"\r\n" + (body or b"")
        async with self._gate:
            for attempt in range(2):
                reused = attempt == 0 and bool(self._idle)  # a retry always takes a fresh connection
                conn = self._idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
                sent = time.monotonic()
                try:
                    status, data, keep = await _exchange(conn, raw)
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    conn[1].close()
                    # A kept-alive connection the server had closed meanwhile: nothing was read, try a fresh one.
                    if reused and (not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial):
                        continue
                    raise HttpError(f"{method} {path}: {type(exc).__name__}") from exc
                except BaseException:
                    conn[1].close()
                    raise
                (self._idle.append(conn) if keep else conn[1].close())
                return status, data, sent
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], raw: bytes) -> tuple[int, bytes, bool]:
    reader, writer = conn
    writer.write(raw)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    if "content-length" in headers:
        data = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        data = b"".join(chunks)
    else:
        data = b""
    return status, data, headers.get("connection", "").lower() != "close"


# -- open loop, paced ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One request, due at ``start + index / rate``."""

    index: int
    method: str
    path: str
    token: str
    body: bytes | None


@dataclass(frozen=True)
class Done:
    index: int
    due: float
    sent: float
    done: float
    status: int | str
    """HTTP status, or the name of the failure."""


def _pacer(base_url: str, jobs: list[Job], rate: float, start: float, in_flight: int, cutoff_s: float, out) -> None:
    raise_nofile()
    try:
        out.send(asyncio.run(_pace(base_url, jobs, rate, start, in_flight, cutoff_s)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.send({"error": f"{type(exc).__name__}: {exc}"})


async def _pace(base_url: str, jobs: list[Job], rate: float, start: float, in_flight: int, cutoff_s: float) -> dict:
    http = Http(base_url, in_flight)
    for _ in range(min(in_flight, 8)):  # a few connections open before the clock starts
        await http.request("GET", "/healthz")
    done: list[Done] = []

    async def one(job: Job, due: float) -> None:
        sent = time.monotonic()  # a failure before writing keeps this
        try:
            status, _, sent = await http.timed(job.method, job.path, job.token, job.body)
        except (HttpError, OSError) as exc:
            status = str(exc)[:100] if isinstance(exc, HttpError) else type(exc).__name__
        done.append(Done(job.index, due, sent, time.monotonic(), status))

    cpu0 = time.process_time()
    tasks = []
    for job in jobs:
        due = start + job.index / rate
        if (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(job, due)))
    last_due = start + (jobs[-1].index / rate if jobs else 0)
    _, late = await asyncio.wait(tasks, timeout=max(1.0, last_due + cutoff_s - time.monotonic())) if tasks else ((), ())
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    await http.close()
    # ``sent`` is when the request was written to its socket; waiting for a free slot counts as send lag.
    return {
        "done": done,
        "unanswered": len(late),
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.monotonic() - start,
    }


class Pacers:
    """``jobs`` offered at ``rate``/s in total from ``processes`` processes (job i goes to i % processes)."""

    def __init__(
        self,
        base_url: str,
        jobs: list[Job],
        rate: float,
        processes: int = 1,
        in_flight: int = 64,
        cutoff_s: float = 10.0,
        lead_s: float = 2.0,
    ) -> None:
        ctx = mp.get_context("spawn")
        self.start = time.monotonic() + lead_s  # after the children have imported what they need
        self._pipes, self.procs = [], []
        for p in range(processes):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_pacer,
                args=(
                    base_url,
                    [j for j in jobs if j.index % processes == p],
                    rate,
                    self.start,
                    in_flight,
                    cutoff_s,
                    theirs,
                ),
                daemon=True,
            )
            proc.start()
            self._pipes.append(mine)
            self.procs.append(proc)

    @property
    def pids(self) -> dict[str, int]:
        return {f"pacer-{i}": p.pid for i, p in enumerate(self.procs)}

    def wait(self) -> dict:
        outs = [pipe.recv() for pipe in self._pipes]
        for proc in self.procs:
            proc.join(10)
        if errors := [o["error"] for o in outs if "error" in o]:
            raise RuntimeError(f"pacer failed: {errors[0]}")
        done = sorted((d for o in outs for d in o["done"]), key=lambda d: d.index)
        return {
            "done": done,
            "unanswered": sum(o["unanswered"] for o in outs),
            "generator_cpu_pct_of_one_core": [round(100 * o["cpu_s"] / o["wall_s"], 1) for o in outs],
        }
