"""Idempotency keys: which request first used a caller's key. Stream ``idempotency-{uuid}``, one
per (caller, key), named by ``key_stream``.

The command shell (``commands/shell.py``) appends ``idempotency.key_used`` to it in the same
atomic append as the request's own events, expecting the stream to be empty, and gives that event
an id made from the request's fingerprint. So the stream existing means the key is used, and
holding the id of this request's fingerprint means it was used by this very request: the shell
answers a repeat of it, and refuses any other request under the key (422). The data says which
operation used it, for that refusal's detail; nothing here reads it otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from domain.decider import Decider
from domain.events import Event

KEYS_NAMESPACE = uuid.UUID("5c0f8a3e-91d2-4b6f-8e7a-3d2c1b0a9f84")


class KeyUsed(Event, frozen=True, tag="idempotency.key_used"):
    operation: str
    """The ``operation_id`` of the route that first used the key (``archiveChannel``)."""


@dataclass(frozen=True)
class UseKey:
    operation: str


def key_stream(actor_id: str | None, key: str) -> str:
    """The stream that records the caller's key: keys are the caller's own, so another caller's
    same key is another stream."""
    return "idempotency-" + str(uuid.uuid5(KEYS_NAMESPACE, f"{actor_id}\n{key}"))


def evolve(state: str | None, event: Event) -> str | None:
    return event.operation if isinstance(event, KeyUsed) else state


def decide(state: str | None, command: UseKey) -> Sequence[Event]:
    return [] if state is not None else [KeyUsed(operation=command.operation)]


KEYS: Decider[str | None, UseKey] = Decider("idempotency", None, evolve, decide)
