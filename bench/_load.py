"""Load generators: ``wrk`` (C, closed loop) with a Lua script that rotates bearer tokens, and an
open-loop paced poster in a process of its own (wrk cannot pace; Debian has no wrk2): raw
keep-alive HTTP/1.1 on uvloop with every request rendered before the clock starts."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import resource
import shutil
import subprocess
import time
from pathlib import Path

from bench._common import percentile

# Each wrk thread takes every n-th token (its own users) and rotates through them, one per
# request; with as many tokens as connections, each user has about one request in flight.
WRK_LUA = r"""
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  local nthreads, all = tonumber(args[2]), {}
  for line in io.lines(args[1]) do all[#all + 1] = line end
  mine = {}
  for i, tok in ipairs(all) do
    if (i - 1) % nthreads == tid then mine[#mine + 1] = "Bearer " .. tok end
  end
  if #mine == 0 then mine = {"Bearer " .. all[1]} end
  method, path, body, expected, before_max = args[3], args[4], args[5], tonumber(args[6]), tonumber(args[7])
  if body == "" then body = nil end
  n, bad, nullseq = 0, 0, 0
  math.randomseed(os.time() + tid * 7919)
end
function request()
  n = n + 1
  local p = path
  if before_max > 51 then p = p .. "&before=" .. math.random(51, before_max) end
  local headers = {["Authorization"] = mine[(n % #mine) + 1]}
  if body then headers["Content-Type"] = "application/json" end
  return wrk.format(method, p, headers, body)
end
function response(status, headers, body)
  if status ~= expected then bad = bad + 1 end
  if method == "POST" and body and string.find(body, '"seq":null', 1, true) then nullseq = nullseq + 1 end
end
function done(summary, latency, requests)
  local b, ns = 0, 0
  for _, t in ipairs(threads) do b = b + t:get("bad"); ns = ns + t:get("nullseq") end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"unexpected_status":%d,"seq_null":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, b, ns, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def wrk_available() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    base_url: str,
    workdir: Path,
    tokens: list[str],
    *,
    method: str,
    path: str,
    body: str = "",
    expected: int = 200,
    connections: int,
    threads: int,
    seconds: float,
    before_max: int = 0,
) -> dict:
    """Closed loop: ``connections`` connections on ``threads`` threads for ``seconds``."""
    script, token_file = workdir / "rotate.lua", workdir / f"tokens-{len(tokens)}-{hash(tuple(tokens))}.txt"
    script.write_text(WRK_LUA)
    token_file.write_text("\n".join(tokens) + "\n")
    argv = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds:.0f}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base_url,
        "--",
        str(token_file),
        str(threads),
        method,
        path,
        body,
        str(expected),
        str(before_max),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    out = json.loads(line[len("WRKJSON ") :])
    wall = out["duration_us"] / 1e6
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out | {
        "requests_per_s": out["requests"] / wall,
        "seconds": wall,
        "connections": connections,
        "threads": threads,
        "ok_per_s": (out["requests"] - out["unexpected_status"]) / wall,
        "latency_ms": {k: out[f"{k}_us"] / 1000 for k in ("p50", "p90", "p99", "max", "mean")},
        "generator_cpu_pct_of_one_core": round(100 * cpu / wall, 1),
    }


# -- open loop, paced ------------------------------------------------------------------------------


IN_FLIGHT = 64  # connections; more than 500/s needs at 50 ms each


class _Conn:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for the pacer:
    pre-rendered requests out, status line + headers + a Content-Length body in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Conn:
        return cls(*await asyncio.open_connection(host, port))

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def _render(host: str, path: str, token: str, text: str) -> bytes:
    body = json.dumps({"text": text}).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _paced_process(
    base_url: str, path: str, tokens: list[str], rate: float, start: float, seconds: float, cutoff_s: float, results
) -> None:
    try:
        import uvloop

        results.put(uvloop.run(_paced(base_url, path, tokens, rate, start, seconds, cutoff_s)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put({"error": f"{type(exc).__name__}: {exc}"})


async def _paced(
    base_url: str, path: str, tokens: list[str], rate: float, start: float, seconds: float, cutoff_s: float
) -> dict:
    """Posts due at ``start + i / rate``, each sent on an idle connection of a fixed set of
    ``IN_FLIGHT``; a post that finds none waits (FIFO) and its wait counts: latency is measured
    from when it was due (no coordinated omission). Requests are rendered before the clock starts,
    so the generator costs a few tens of microseconds per post."""
    host, port = base_url.removeprefix("http://").split(":")
    count = int(rate * seconds)
    requests = [_render(f"{host}:{port}", path, tokens[i % len(tokens)], f"paced {i}") for i in range(count)]
    idle: asyncio.Queue[_Conn] = asyncio.Queue()
    for _ in range(IN_FLIGHT):
        idle.put_nowait(await _Conn.open(host, int(port)))
    latencies: list[float] = []
    service: list[float] = []
    statuses: dict[int | str, int] = {}
    lag: list[float] = []

    async def one(i: int, due: float) -> None:
        conn = await idle.get()
        sent = time.monotonic()
        lag.append(sent - due)
        try:
            status: int | str = await conn.exchange(requests[i])
            idle.put_nowait(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:  # counted, and its time too
            status = type(exc).__name__
            conn.close()
            idle.put_nowait(await _Conn.open(host, int(port)))
        done = time.monotonic()
        statuses[status] = statuses.get(status, 0) + 1
        latencies.append((done - due) * 1000)
        service.append((done - sent) * 1000)

    cpu0, began = time.process_time(), time.monotonic()
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    # An overloaded server must not stretch the phase without bound: whatever is unanswered
    # ``cutoff_s`` after the last was due is cancelled and counted with its wait so far (a lower bound).
    _, late = await asyncio.wait(tasks, timeout=max(0.0, start + seconds + cutoff_s - time.monotonic()))
    cut = time.monotonic()
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    statuses["unanswered"] = len(late)
    latencies += [(cut - (start + i / rate)) * 1000 for i in range(count - len(late), count)]
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - max(start, began)
    while not idle.empty():
        idle.get_nowait().close()
    return {
        "latencies_ms": latencies,
        "service_ms": service,
        "statuses": statuses,
        "cpu_s": cpu,
        "wall_s": wall,
        "max_send_lag_ms": max(lag) * 1000 if lag else 0.0,
    }


def run_paced_posts(
    base_url: str, path: str, tokens: list[str], rate: float, seconds: float, cutoff_s: float = 20
) -> dict:
    """Open loop: ``rate`` posts/s, due at fixed times, from one generator process of its own."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    start = time.monotonic() + 3.0  # after the child has started and rendered its requests
    child = ctx.Process(target=_paced_process, args=(base_url, path, tokens, rate, start, seconds, cutoff_s, results))
    child.start()
    out = results.get(timeout=seconds + cutoff_s + 120)
    child.join(10)
    if "error" in out:
        raise RuntimeError(f"paced poster failed: {out['error']}")
    lat, svc = sorted(out["latencies_ms"]), sorted(out["service_ms"])
    statuses = {str(code): n for code, n in out["statuses"].items() if n}
    return {
        "offered_per_s": rate,
        "seconds": seconds,
        "requests": len(lat),
        "processes": 1,
        "cutoff_s": cutoff_s,
        "statuses": statuses,
        "latency_ms": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "max": lat[-1] if lat else float("nan"),
        },
        "service_time_ms": {"p50": percentile(svc, 50), "p99": percentile(svc, 99)},
        "max_send_lag_ms": out["max_send_lag_ms"],
        "generator_cpu_pct_of_one_core": round(100 * out["cpu_s"] / out["wall_s"], 1),
        "wall_s": out["wall_s"],
    }
