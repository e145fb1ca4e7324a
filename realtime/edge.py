"""What realtime's HTTP routes (presence, ``realtime/presence.py``) get from the composition root.

The root (``hubbub/app.py``) puts its services object in ``app.state[STATE_KEY]``; ``Services``
says what realtime reads of it, so nothing here imports the root. The caller comes as the
``principal`` dependency (``hubbub/deps.py``). The WebSocket gateway gets what it needs when the
root starts it (``realtime/service.py``'s ``running``: pool, store, NATS, an ``authenticate``
callable, presence).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from litestar import Request

from infra.presence import Change, Presence
from infra.settings import Settings

STATE_KEY = "services"


class Reports(Protocol):
    def report(self, change: Change) -> None:
        """Pass a presence change on (``realtime/presence.py``'s ``PresenceFanout``)."""
        ...


@runtime_checkable
class Services(Protocol):
    """What realtime's routes read of the root's services (``hubbub/deps.py``'s ``Services``)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def presence(self) -> Presence: ...
    @property
    def presence_fanout(self) -> Reports: ...


def services_of(request: Request[Any, Any, Any]) -> Services:
    return request.app.state[STATE_KEY]
