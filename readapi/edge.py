"""What the query routes get from the composition root: the services they use, and who is calling.

The root (``hubbub/app.py``) makes one services object in the app's lifespan and puts it in
``app.state[STATE_KEY]``; ``Services`` says what the query side reads of it, so nothing here
imports the root or the command side. Routes get it either by dependency injection (``pool``,
``consistency``, ``services``, ... and ``principal``, the caller, all provided by
``hubbub/deps.py``) or, on the hottest reads, with ``services_of(request)`` and
``services.authenticate``: Litestar resolves two or more dependencies of a route in an anyio task
group, a task each, which a hot read should not pay for.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, runtime_checkable

from litestar import Request
from psycopg_pool import AsyncConnectionPool

from domain.session import Principal
from infra.blobs import BlobStore
from infra.settings import Settings
from projections.consistency import ReadConsistency

STATE_KEY = "services"


@runtime_checkable  # a route may declare ``services: NamedDependency[Services]``: Litestar checks the type
class Services(Protocol):
    """What the query side reads of the root's services (``hubbub/deps.py``'s ``Services``)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def pool(self) -> AsyncConnectionPool: ...
    @property
    def consistency(self) -> ReadConsistency: ...
    @property
    def blobs(self) -> BlobStore: ...

    def authenticate(self, authorization: str | None) -> Awaitable[Principal]:
        """The caller named by an ``Authorization`` header; ``SessionGone`` (401) if none is."""
        ...


def services_of(request: Request[Any, Any, Any]) -> Services:
    """The services without dependency injection, for the hottest reads (see the module docstring)."""
    return request.app.state[STATE_KEY]
