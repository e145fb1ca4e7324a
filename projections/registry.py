"""The production projections, in the order the app starts them."""

from __future__ import annotations

from projections.accounts import Accounts
from projections.files import Files
from projections.messages import Messages
from projections.notifications import Notifications
from projections.runtime import Projection
from projections.search import Search
from projections.streams import StreamCatalog
from projections.workspaces import Workspaces


def all_projections() -> list[Projection]:
    """A fresh list (projections may keep per-instance state)."""
    return [StreamCatalog(), Accounts(), Messages(), Workspaces(), Notifications(), Files(), Search()]


def by_name(name: str) -> Projection | None:
    return next((p for p in all_projections() if p.name == name), None)
