"""What the command routes get from the composition root: the services they use, and who is calling.

The root (``hubbub/app.py``) makes one services object in the app's lifespan and puts it in
``app.state[STATE_KEY]``; ``Services`` says what the command side reads of it, so nothing here
imports the root. Routes get it either by dependency injection (``services``, ``shell``,
``settings``, ``pool``, ... and ``principal``, the caller, all provided by ``hubbub/deps.py``) or,
on the hottest routes, with ``services_of(request)`` and ``commands.auth.authenticate``: Litestar
resolves two or more dependencies of a route in an anyio task group, a task each, which cost
about 5% of a post.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from litestar import Request
from psycopg_pool import AsyncConnectionPool

from commands.shell import CommandShell
from commands.uploads import Reservations
from infra.blobs import BlobStore
from infra.images import Thumbnailer
from infra.presence import Presence
from infra.ratelimit import RateLimiter
from infra.settings import Settings
from projections.consistency import ReadConsistency
from projections.seqs import SeqLookup

STATE_KEY = "services"


@runtime_checkable  # a route may declare ``services: NamedDependency[Services]``: Litestar checks the type
class Services(Protocol):
    """What the command side reads of the root's services (``hubbub/deps.py``'s ``Services``)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def pool(self) -> AsyncConnectionPool: ...
    @property
    def shell(self) -> CommandShell: ...
    @property
    def consistency(self) -> ReadConsistency: ...
    @property
    def limiter(self) -> RateLimiter: ...
    @property
    def seqs(self) -> SeqLookup: ...
    @property
    def presence(self) -> Presence: ...
    @property
    def blobs(self) -> BlobStore: ...
    @property
    def thumbnailer(self) -> Thumbnailer: ...
    @property
    def uploads(self) -> Reservations: ...


def services_of(request: Request[Any, Any, Any]) -> Services:
    """The services without dependency injection, for the hottest routes (see the module docstring)."""
    return request.app.state[STATE_KEY]
