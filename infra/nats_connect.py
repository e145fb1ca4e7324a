"""How every NATS client of the app connects: to all the servers named, with the token given
explicitly.

A cluster tells its clients about its other nodes without credentials, and nats-py logs in to
a node it learned that way with no token, so with the token only inside the URL a client
whose node died could never reconnect ("Authorization Violation"): the publisher and gateways
stuck. Passed as ``token=``, it is used for every server, given or learned.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit


def connect_options(urls: str | list[str]) -> dict[str, Any]:
    """``servers`` without credentials and the ``token`` (the first URL's user part, if any)."""
    servers, token = [], None
    for url in [urls] if isinstance(urls, str) else urls:
        parts = urlsplit(url)
        if token is None and parts.username and not parts.password:
            token = parts.username
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        if parts.username and parts.password:  # user:password is nats-py's to use as is
            netloc = f"{parts.username}:{parts.password}@{netloc}"
        servers.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))
    return {"servers": servers, **({"token": token} if token else {})}
