"""Rejections the domain raises. The HTTP layer maps them to problem responses in one place
(``hubbub/problems.py``), by the ``status`` each class carries, so a new rule needs no new handler.

Subclass the nearest one: ``class ChannelArchived(Conflict)``. ``detail`` is shown to the client,
so it says what was wrong and how to fix it, and never reveals what the caller may not see.
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """A command broke a rule of the model (422 unless a subclass says otherwise)."""

    status: ClassVar[int] = 422
    title: ClassVar[str] = "The request breaks a rule"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(DomainError):
    """Missing, or not visible to the caller: both look the same from outside."""

    status = 404
    title = "Not found"


class Forbidden(DomainError):
    """The caller may see the thing but not do this to it."""

    status = 403
    title = "Not allowed"


class Conflict(DomainError):
    """The request clashes with the current state (a taken name, an archived channel)."""

    status = 409
    title = "Conflict"


class NotYet(DomainError):
    """The log has it, the read models do not yet (they are catching up): retry shortly."""

    status = 503
    title = "Not ready yet"

    def __init__(self, detail: str, *, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_s)}
