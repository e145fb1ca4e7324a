"""Where the services come from: ``HUBBUB_*_URL`` when set, else the embedded ones in the data dir."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

from infra.embedded import EmbeddedServices
from infra.settings import Settings

_URL_FIELDS = {"postgres": "database_url", "nats": "nats_url", "redis": "redis_url"}


@contextlib.contextmanager
def resolved(settings: Settings, *, need: tuple[str, ...] = ("postgres", "nats", "redis")) -> Iterator[Settings]:
    """Settings with every URL in ``need`` filled in, starting (and afterwards stopping) the
    embedded servers for those left unset. Servers already running for this data dir are reused."""
    missing = tuple(name for name in need if getattr(settings, _URL_FIELDS[name]) is None)
    if not missing:
        yield settings
        return
    embedded = EmbeddedServices(Path(settings.data_dir), want=missing)
    started = embedded.start()
    try:
        yield msgspec.structs.replace(settings, **{_URL_FIELDS[n]: s.url for n, s in started.items()})
    finally:
        embedded.stop()
