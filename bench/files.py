"""Files over HTTP: ``python -m bench.files [--quick]`` (``make bench-files``).

Measures, in one run, against a real ``hubbub serve`` (one worker; durable embedded PostgreSQL,
NATS and Redis in a temp dir; blobs on local disk in the same temp dir), the targets of issue 5
("Performance"):

1. peak RSS of the server while it takes a 500 MiB upload (``--quick``: 200 MiB), above its RSS
   just before: sampled every 5 ms from ``/proc``, and the kernel's high-water mark (``VmHWM``)
   as a cross-check;
2. upload throughput of that file against a bare fsspec ``put`` of the same file to the same
   disk, in the same run (the put is timed twice before the upload and once after; the median is
   the baseline). Both are flushed to disk before the clock stops (the server fsyncs each blob
   before it records it; the put is followed by ``os.sync()``). For context, not as the target's
   baseline: a bare sha256 of the same file, timed the same way, which the upload cannot beat
   (it must answer the sha256; one stream hashes on one core);
3. thumbnails of a 12-megapixel JPEG: the server's own timing of each (its ``file.thumbnailed``
   log line: reading the original back, decoding, 1,024 and 360 px, storing both), p50 / p99
   over 40 uploads (``--quick``: 15), while another thread sends ``GET /healthz`` every 20 ms:
   their latency p50 / p99 says whether the event loop kept serving.

The upload client sends the multipart body over one HTTP/1.1 connection, the file's bytes with
``sendfile`` from the page cache (as a lean client would; it never holds the file either). Table on stdout, progress on stderr, ``bench/results/files.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench._common import RESULTS_DIR, machine_facts, markdown_table, percentile, progress
from bench._server import Server, running_server

BOUNDARY = "hubbubbenchboundary"
CHUNK = 1 << 20


def request(srv: Server, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    host, port = srv.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None
    finally:
        conn.close()


def setup(srv: Server) -> tuple[dict[str, str], str]:
    status, body = request(
        srv,
        "POST",
        "/api/v1/auth/register",
        {"email": "bench@example.com", "password": "correct horse battery", "display_name": "Bench"},
    )
    assert status == 201, body
    auth = {"authorization": f"Bearer {body['token']}"}
    status, ws = request(srv, "POST", "/api/v1/workspaces", {"name": "Bench"}, auth)
    assert status == 201, ws
    return auth, ws["id"]


def multipart_body(path: Path, name: str) -> tuple[bytes, bytes, int]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head, tail, len(head) + path.stat().st_size + len(tail)


def upload(srv: Server, auth: dict[str, str], ws: str, path: Path) -> tuple[float, dict]:
    """Seconds from the first byte sent to the answer, and the answer."""
    head, tail, length = multipart_body(path, path.name)
    host, port = srv.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    try:
        started = time.perf_counter()
        conn.putrequest("POST", f"/api/v1/workspaces/{ws}/files")
        for key, value in {
            **auth,
            "content-type": f"multipart/form-data; boundary={BOUNDARY}",
            "content-length": str(length),
        }.items():
            conn.putheader(key, value)
        conn.endheaders()
        conn.send(head)
        with open(path, "rb") as source:
            conn.sock.sendfile(source)  # from the page cache, as a lean client sends a file
        conn.send(tail)
        response = conn.getresponse()
        body = json.loads(response.read())
        elapsed = time.perf_counter() - started
        assert response.status == 201, body
        return elapsed, body
    finally:
        conn.close()


def rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peak = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, rss(self.pid))
            time.sleep(self.every_s)


def bare_put(source: Path, target_dir: Path) -> float:
    import fsspec

    fs = fsspec.filesystem("file")
    target = target_dir / f"put-{time.monotonic_ns()}"
    started = time.perf_counter()
    fs.put(str(source), str(target))
    os.sync()  # like the upload, which the server answers after its writes: both include the flush below
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def bare_sha256(source: Path) -> float:
    """Seconds to hash the file alone (from the page cache, 1 MiB reads), as the server must: its answer
    and its event carry the sha256. One stream cannot be hashed in parallel, so this is the upload's
    ceiling, whatever else it does."""
    digest = hashlib.sha256()
    started = time.perf_counter()
    with open(source, "rb") as data:
        while block := data.read(CHUNK):
            digest.update(block)
    return time.perf_counter() - started


def phase_big_upload(srv: Server, auth: dict[str, str], ws: str, workdir: Path, size: int) -> dict:
    source = workdir / "big.bin"
    progress(f"writing a {size >> 20} MiB file of random bytes")
    digest = hashlib.sha256()
    with open(source, "wb") as out:
        for _ in range(size // CHUNK):
            block = os.urandom(CHUNK)
            digest.update(block)
            out.write(block)
    os.sync()
    puts = [bare_put(source, workdir), bare_put(source, workdir)]
    hashes = [bare_sha256(source), bare_sha256(source)]
    pid = srv.pids["server"]
    time.sleep(1.0)
    before, hwm_before = rss(pid), hwm(pid)
    sampler = Sampler(pid)
    sampler.start()
    progress("uploading it")
    elapsed, body = upload(srv, auth, ws, source)
    os.sync()
    sampler.stopping.set()
    sampler.join()
    hwm_after = hwm(pid)
    puts.append(bare_put(source, workdir))
    hashes.append(bare_sha256(source))
    assert body["sha256"] == digest.hexdigest() and body["size"] == size, body
    baseline = sorted(puts)[1]  # the median of three: before, before, after
    source.unlink()
    return {
        "size_mib": size >> 20,
        "upload_s": round(elapsed, 3),
        "upload_mib_s": round(size / 2**20 / elapsed, 1),
        "put_s": [round(p, 3) for p in puts],
        "put_mib_s": round(size / 2**20 / baseline, 1),
        "throughput_ratio": round(baseline / elapsed, 2),
        "sha256_s": [round(h, 3) for h in hashes],
        "sha256_mib_s": round(size / 2**20 / sorted(hashes)[1], 1),
        "sha256_ratio": round(baseline / sorted(hashes)[1], 2),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_peak_mib": round(sampler.peak / 2**20, 1),
        "rss_rise_mib": round((sampler.peak - before) / 2**20, 1),
        "hwm_rise_mib": round(max(hwm_after - max(before, hwm_before), 0) / 2**20, 1),
        "hwm_before_mib": round(hwm_before / 2**20, 1),
        "hwm_after_mib": round(hwm_after / 2**20, 1),
    }


def photo(workdir: Path) -> Path:
    """A 12-megapixel JPEG with detail everywhere (noise over gradients), quality 90, like a phone photo."""
    from PIL import Image

    width, height = 4000, 3000
    noise = Image.effect_noise((width, height), 40).convert("L")
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (noise, gradient, Image.blend(noise, gradient, 0.5)))
    path = workdir / "photo.jpg"
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(out, "JPEG", quality=90, exif=exif)
    path.write_bytes(out.getvalue())
    return path


class HealthProbe(threading.Thread):
    """GET /healthz every ``every_s`` on one keep-alive connection; the latencies in ms."""

    def __init__(self, srv: Server, every_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        host, port = srv.base_url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.every_s = every_s
        self.latencies: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.perf_counter()
            self.conn.request("GET", "/healthz")
            response = self.conn.getresponse()
            response.read()
            self.latencies.append((time.perf_counter() - started) * 1000)
            assert response.status == 200
            time.sleep(max(0.0, self.every_s - (time.perf_counter() - started)))

    def stop(self) -> list[float]:
        self.stopping.set()
        self.join()
        self.conn.close()
        return sorted(self.latencies)


def thumbnail_times(log_path: Path, keys: set[str]) -> list[float]:
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"file.thumbnailed"' not in line:
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if any(entry.get("key", "").startswith(k) for k in keys):
                assert entry.get("error") is None, entry
                found.append(float(entry["duration_ms"]))
    return sorted(found)


def phase_thumbnails(srv: Server, auth: dict[str, str], ws: str, workdir: Path, count: int) -> dict:
    source = photo(workdir)
    progress(f"12-megapixel JPEG of {source.stat().st_size / 2**20:.1f} MiB; health checks alone for 3 s")
    idle = HealthProbe(srv)
    idle.start()
    time.sleep(3)
    idle_latencies = idle.stop()
    probe = HealthProbe(srv)
    probe.start()
    uploads, keys = [], set()
    for i in range(count):
        elapsed, body = upload(srv, auth, ws, source)
        assert body.get("thumbnail_url") and (body["width"], body["height"]) == (3000, 4000), body
        uploads.append(elapsed * 1000)
        keys.add(f"{ws}/{body['id']}/")
        progress(f"thumbnail upload {i + 1}/{count}: {elapsed * 1000:.0f} ms")
    busy = probe.stop()
    time.sleep(0.5)  # the log line is written before the answer, but flushed by another process
    thumbs = thumbnail_times(srv.log_path, keys)
    assert len(thumbs) == count, (len(thumbs), count)
    uploads.sort()
    return {
        "count": count,
        "jpeg_mib": round(source.stat().st_size / 2**20, 2),
        "thumbnail_ms_p50": percentile(thumbs, 50),
        "thumbnail_ms_p99": percentile(thumbs, 99),
        "thumbnail_ms_max": thumbs[-1],
        "upload_ms_p50": round(percentile(uploads, 50), 1),
        "upload_ms_p99": round(percentile(uploads, 99), 1),
        "health_checks": len(busy),
        "health_ms_p50": round(percentile(busy, 50), 2),
        "health_ms_p99": round(percentile(busy, 99), 2),
        "health_ms_max": round(busy[-1], 2),
        "idle_health_ms_p50": round(percentile(idle_latencies, 50), 2),
        "idle_health_ms_p99": round(percentile(idle_latencies, 99), 2),
    }


def run(quick: bool) -> dict:
    size = (200 if quick else 500) << 20
    workdir = Path(tempfile.mkdtemp(prefix="hubbub-bench-files-"))
    overrides = {
        "HUBBUB_BLOB_URL": f"file://{workdir}/blobs",
        "HUBBUB_MAX_UPLOAD_BYTES": str(size + (1 << 20)),
        "HUBBUB_INSECURE_FAST_PASSWORDS": "true",
        "HUBBUB_LOG_LEVEL": "info",
    }
    try:
        with running_server(1, overrides) as srv:
            auth, ws = setup(srv)
            big = phase_big_upload(srv, auth, ws, workdir, size)
            thumbs = phase_thumbnails(srv, auth, ws, workdir, 15 if quick else 40)
        return {"quick": quick, "machine": machine_facts(), "big_upload": big, "thumbnails": thumbs}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _verdict(ok: bool) -> str:
    return "passes" if ok else "**fails**"


def report(results: dict) -> str:
    big, th = results["big_upload"], results["thumbnails"]
    rows = [
        (
            f"server peak RSS rise during a {big['size_mib']} MiB upload",
            f"{big['rss_rise_mib']} MiB (sampled every 5 ms; VmHWM rise {big['hwm_rise_mib']} MiB)",
            "< 64 MiB",
            _verdict(max(big["rss_rise_mib"], big["hwm_rise_mib"]) < 64),
        ),
        (
            "upload throughput vs bare fsspec `put` of the same file (local disk)",
            f"{big['upload_mib_s']} vs {big['put_mib_s']} MiB/s = {big['throughput_ratio']}",
            ">= 0.5",
            _verdict(big["throughput_ratio"] >= 0.5),
        ),
        (
            "context: sha256 alone of the same file (hashlib, page cache) vs that `put`: the upload's ceiling",
            f"{big['sha256_mib_s']} vs {big['put_mib_s']} MiB/s = {big['sha256_ratio']} "
            f"(upload = {round(big['upload_mib_s'] / big['sha256_mib_s'], 2)} of it)",
            "",
            "",
        ),
        (
            f"thumbnails of a 12-MP JPEG ({th['jpeg_mib']} MiB), server time, p50 / p99 ({th['count']} uploads)",
            f"{th['thumbnail_ms_p50']:.0f} / {th['thumbnail_ms_p99']:.0f} ms",
            "p99 < 1 s",
            _verdict(th["thumbnail_ms_p99"] < 1000),
        ),
        (
            "`GET /healthz` meanwhile, p50 / p99 (every 20 ms)",
            f"{th['health_ms_p50']} / {th['health_ms_p99']} ms (idle: {th['idle_health_ms_p50']} / {th['idle_health_ms_p99']})",
            "p99 < 20 ms",
            _verdict(th["health_ms_p99"] < 20),
        ),
        (
            "whole upload of that JPEG (sent, stored, thumbnailed, appended), p50 / p99",
            f"{th['upload_ms_p50']} / {th['upload_ms_p99']} ms",
            "",
            "",
        ),
    ]
    return markdown_table(["what (issue 5 target)", "measured", "target", ""], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 MiB instead of 500, 15 thumbnails instead of 40")
    args = parser.parse_args(argv)
    results = run(args.quick)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "files.json").write_text(json.dumps(results, indent=2))
    print(report(results))
    print(f"\nmachine: {results['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
