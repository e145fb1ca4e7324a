"""``hubbub serve`` with uvicorn's multi-worker listening socket made as IPPROTO_TCP, for
``bench.post --nodelay-fix`` only: a measurement of what the fix for uvicorn issue #3149 buys.

uvicorn's ``Config.bind_socket`` creates the listener with ``proto=0``; accepted sockets inherit
it, and asyncio sets ``TCP_NODELAY`` only when ``proto == IPPROTO_TCP``. So under ``--workers N``
Nagle stays on, and every keep-alive response that leaves in two writes (headers, then body)
waits ~40 ms for the client's delayed ACK. The shipped server is unchanged by this module.
"""

from __future__ import annotations

import socket
import sys

import uvicorn.config


def _bind_socket(self: uvicorn.config.Config) -> socket.socket:
    family = socket.AF_INET6 if self.host and ":" in self.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((self.host, self.port))
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    uvicorn.config.Config.bind_socket = _bind_socket  # type: ignore[method-assign]
    from hubbub.cli import main

    sys.exit(main(sys.argv[1:]))
