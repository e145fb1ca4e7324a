"""given(events).when(command).then(events) for deciders (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Any

import pytest

from domain.decider import Decider
from domain.events import Event


class Scenario:
    def __init__(self, decider: Decider[Any, Any], history: Sequence[Event]) -> None:
        self.decider = decider
        self.state = reduce(decider.evolve, history, decider.initial)
        self.result: Sequence[Event] | Exception | None = None

    def when(self, command: Any) -> Scenario:
        try:
            self.result = self.decider.decide(self.state, command)
        except Exception as exc:  # noqa: BLE001 - kept for then_rejects
            self.result = exc
        return self

    def then(self, *events: Event) -> None:
        if isinstance(self.result, Exception):
            raise AssertionError(f"rejected: {self.result!r}")
        assert list(self.result or ()) == list(events)

    def then_rejects(self, error: type[Exception], field: str | None = None, match: str = "") -> None:
        assert isinstance(self.result, error), f"expected {error.__name__}, got {self.result!r}"
        if field is not None:
            assert getattr(self.result, "field", None) == field
        if match:
            assert match in str(self.result)


def given(decider: Decider[Any, Any], *history: Event) -> Scenario:
    return Scenario(decider, history)


__all__ = ["given", "pytest"]
