"""Real processes for the fault tests, each one killable with SIGKILL as a crash or the OOM killer
ends it: a NATS cluster on loopback and ``hubbub serve`` gateways.

The cluster's nodes share one token, read from a 0600 config file as ``infra/embedded.py`` does
(argv is readable by every local user); the routes between them are loopback only.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg

from infra.embedded import _nats_bin, free_port, write_private
from infra.leader import LOCK_CLASS, lock_key

HUBBUB = str(Path(sys.executable).parent / "hubbub")
START_TIMEOUT_S = 60.0


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@dataclass
class NatsNode:
    name: str
    client_port: int
    cluster_port: int
    monitor_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def monitor(self, endpoint: str) -> dict:
        response = httpx.get(f"http://127.0.0.1:{self.monitor_port}/{endpoint}", timeout=2)
        response.raise_for_status()
        return response.json()


class NatsCluster:
    """``size`` nats-server processes routed to each other (a full mesh of explicit routes)."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root, self.token = root, secrets.token_hex(16)
        self.nodes = [
            NatsNode(f"n{i + 1}", free_port(), free_port(), free_port(), root / f"n{i + 1}.log") for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node's client URL with the token, comma-separated, as ``HUBBUB_NATS_URL`` takes it."""
        return ",".join(f"nats://{self.token}@127.0.0.1:{n.client_port}" for n in self.nodes)

    def start(self) -> None:
        conf = self.root / "nats.conf"
        write_private(conf, f'authorization {{ token: "{self.token}" }}\n')
        for node in self.nodes:
            routes = ",".join(f"nats://127.0.0.1:{o.cluster_port}" for o in self.nodes if o is not node)
            argv = [
                _nats_bin(),
                "-c",
                str(conf),
                "-n",
                node.name,
                "-a",
                "127.0.0.1",
                "-p",
                str(node.client_port),
                "-m",
                str(node.monitor_port),
                "--cluster_name",
                "hubbub-faults",
                "--cluster",
                f"nats://127.0.0.1:{node.cluster_port}",
                "--routes",
                routes,
            ]
            with open(node.log, "ab") as out:
                node.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_for_mesh()

    def _wait_for_mesh(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                peers = [{r["remote_name"] for r in node.monitor("routez")["routes"] or ()} for node in self.nodes]
                if all(len(p) == len(self.nodes) - 1 for p in peers):
                    return
            except httpx.HTTPError:
                pass
            for node in self.nodes:
                assert node.proc is not None and node.proc.poll() is None, f"{node.name} exited:\n{_tail(node.log)}"
            assert time.monotonic() < deadline, "the NATS cluster did not form:\n" + _tail(self.nodes[0].log)
            time.sleep(0.05)

    def serving(self, pid: int, client_name: str) -> NatsNode:
        """The node that process ``pid``'s NATS connection named ``client_name`` is on."""
        ports = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr}
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                clients = node.monitor("connz")["connections"] or ()
                if any(c.get("name") == client_name and c["port"] in ports for c in clients):
                    return node
        raise AssertionError(f"process {pid} has no NATS connection named {client_name!r}")

    def kill(self, node: NatsNode) -> None:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(5)


class GatewayProcess:
    """``hubbub serve`` on a free port of 127.0.0.1, with ``env`` as its only HUBBUB_* settings."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name, self.log, self.port = name, log, free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")} | env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [HUBBUB, "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        async with httpx.AsyncClient(timeout=2) as http:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                assert self.alive, f"gateway {self.name} exited at start:\n{_tail(self.log)}"
                try:
                    if (await http.get(f"http://{self.address}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"gateway {self.name} not ready:\n{_tail(self.log)}"
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def tail(self) -> str:
        return f"--- gateway {self.name} ---\n{_tail(self.log)}"


async def wait_for_leader(database_url: str, name: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until some process holds the advisory lock that makes it ``name``'s leader (publisher, projection)."""
    query = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::bigint = %s AND objid::bigint = %s
               AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout_s
        while True:
            row = await (await conn.execute(query, (LOCK_CLASS, lock_key(name)))).fetchone()
            if row and row[0]:
                return
            assert time.monotonic() < deadline, f"nobody leads {name!r} after {timeout_s:g} s"
            await asyncio.sleep(0.05)
