"""An aggregate as three pure pieces (Chassaing's Decider): ``initial`` state, ``evolve`` to fold
an event into the state, and ``decide`` to turn a command into events (or raise a DomainError).
The command shell (``commands/shell.py``) loads, folds, decides and appends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from domain.events import Event

S = TypeVar("S")
C = TypeVar("C")


@dataclass(frozen=True)
class Decider(Generic[S, C]):
    name: str
    initial: S
    evolve: Callable[[S, Event], S]
    decide: Callable[[S, C], Sequence[Event]]
