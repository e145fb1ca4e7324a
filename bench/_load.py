"""Load generators: ``wrk`` (C, closed loop) with a Lua script that rotates bearer tokens, and an
open-loop paced poster in separate Python processes (wrk cannot pace; Debian has no wrk2)."""

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


def run_wrk(base_url: str, workdir: Path, tokens: list[str], *, method: str, path: str, body: str = "",
            expected: int = 200, connections: int, threads: int, seconds: float, before_max: int = 0) -> dict:
    """Closed loop: ``connections`` connections on ``threads`` threads for ``seconds``."""
    script, token_file = workdir / "rotate.lua", workdir / f"tokens-{len(tokens)}-{hash(tuple(tokens))}.txt"
    script.write_text(WRK_LUA)
    token_file.write_text("\n".join(tokens) + "\n")
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:.0f}s", "--timeout", "10s",
            "-s", str(script), base_url, "--", str(token_file), str(threads), method, path, body, str(expected),
            str(before_max)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    out = json.loads(line[len("WRKJSON "):])
    wall = out["duration_us"] / 1e6
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out | {
        "requests_per_s": out["requests"] / wall, "seconds": wall, "connections": connections, "threads": threads,
        "ok_per_s": (out["requests"] - out["unexpected_status"]) / wall,
        "latency_ms": {k: out[f"{k}_us"] / 1000 for k in ("p50", "p90", "p99", "max", "mean")},
        "generator_cpu_pct_of_one_core": round(100 * cpu / wall, 1),
    }


# -- open loop, paced, in separate processes --------------------------------------------------------


IN_FLIGHT = 64  # per process; 32 clients' worth each, more than 500/s needs at 50 ms


def _paced_process(base_url: str, path: str, tokens: list[str], rate: float, start: float, seconds: float,
                   proc_no: int, cutoff_s: float, results) -> None:
    try:
        results.put(asyncio.run(_paced(base_url, path, tokens, rate, start, seconds, proc_no, cutoff_s)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put({"error": f"{type(exc).__name__}: {exc}"})


async def _paced(base_url: str, path: str, tokens: list[str], rate: float, start: float, seconds: float,
                 proc_no: int, cutoff_s: float) -> dict:
    import httpx

    # Bounded in flight: httpx's pool is quadratic in queued requests, so an overloaded server
    # would otherwise make the generator the bottleneck. Requests beyond the bound wait here, in
    # FIFO order, and their wait counts: latency is measured from when each was due.
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    gate = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        for tok in tokens[:4]:  # open a few connections before the clock starts
            await client.get("/healthz")
        count = int(rate * seconds)
        latencies: list[float] = []
        service: list[float] = []
        statuses: dict[int | str, int] = {}
        lag: list[float] = []

        async def one(i: int, due: float) -> None:
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            async with gate:
                sent = time.monotonic()
                lag.append(sent - due)
                try:
                    r = await client.post(path, json={"text": f"paced {proc_no}-{i}"}, headers=headers)
                    status: int | str = r.status_code
                except httpx.HTTPError as exc:  # counted, and its time too: a failure is no faster answer
                    status = type(exc).__name__
            done = time.monotonic()
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append((done - due) * 1000)  # from when it was due: no coordinated omission
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
    return {"latencies_ms": latencies, "service_ms": service, "statuses": statuses, "cpu_s": cpu, "wall_s": wall,
            "max_send_lag_ms": max(lag) * 1000 if lag else 0.0}


def run_paced_posts(base_url: str, path: str, tokens: list[str], rate: float, seconds: float, processes: int,
                    cutoff_s: float = 20) -> dict:
    """Open loop: ``rate`` posts/s in total, due at fixed times, from ``processes`` processes."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    start = time.monotonic() + 3.0  # after the children have imported httpx
    children = [ctx.Process(target=_paced_process,
                            args=(base_url, path, tokens[p::processes], rate / processes,
                                  start + p / rate, seconds, p, cutoff_s, results)) for p in range(processes)]
    for child in children:
        child.start()
    outs = [results.get(timeout=seconds + 120) for _ in children]
    for child in children:
        child.join(10)
    errors = [o["error"] for o in outs if "error" in o]
    if errors:
        raise RuntimeError(f"paced posters failed: {errors[0]}")
    lat = sorted(x for o in outs for x in o["latencies_ms"])
    svc = sorted(x for o in outs for x in o["service_ms"])
    statuses: dict[str, int] = {}
    for o in outs:
        for code, n in o["statuses"].items():
            if n:
                statuses[str(code)] = statuses.get(str(code), 0) + n
    return {
        "offered_per_s": rate, "seconds": seconds, "requests": len(lat), "processes": processes, "cutoff_s": cutoff_s,
        "statuses": statuses,
        "latency_ms": {"p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                       "max": lat[-1] if lat else float("nan")},
        "service_time_ms": {"p50": percentile(svc, 50), "p99": percentile(svc, 99)},
        "max_send_lag_ms": max(o["max_send_lag_ms"] for o in outs),
        "generator_cpu_pct_of_one_core": [round(100 * o["cpu_s"] / o["wall_s"], 1) for o in outs],
        "wall_s": max(o["wall_s"] for o in outs),
    }
