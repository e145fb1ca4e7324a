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
    fold: Callable[[S, Sequence[Event]], S] | None = None
    """``evolve`` over many events at once, where that can be done faster than one at a time
    (an immutable member set copied per join makes loading a 10,000-member stream quadratic);
    it must give exactly what ``evolve`` would."""
    snapshots: bool = False
    """Its streams grow without bound (one event per member, per read...): the command shell keeps
    snapshots of their states (``commands/snapshots.py``), so a cold load reads a short tail.
    Its ``evolve`` and ``fold`` must then use only code of their own module (and the standard
    library): a snapshot is trusted while that module's code is unchanged."""

    def evolve_all(self, state: S, events: Sequence[Event]) -> S:
        if self.fold is not None:
            return self.fold(state, events)
        for event in events:
            state = self.evolve(state, event)
        return state
