"""Snapshots of long streams' folded states, so a cold load reads a row and a short tail.

A stream whose decider says ``snapshots=True`` (a workspace, a channel: one event per member; a
user's read markers: one per read) is loaded from the log in full the first time a process needs
it: 20,000 events for a 10,000-member workspace took 250-300 ms of one core here, during which
that worker's event loop, and every socket on it, waited. The shell (``commands/shell.py``)
writes the state it folded, with the version and positions it answers with, once it is
``EVERY`` events past the last snapshot it knows, in the background; a process without the
stream in its cache then starts from the snapshot and reads only the events after it.

A snapshot is a cache and never the truth: the log stays whole, and deleting any row of
``aggregate_snapshots`` is always safe. Each row carries the fingerprint of the code that folded it
(``fingerprint``: the running bytecode, fields and constants of the decider's module): a row folded
by other code is not used, and is dropped a day after that code wrote it last. After restoring the
log from a backup older than the database that holds the snapshots (KurrentDB as the log), delete
them, as the read models are rebuilt then. A state is only ever folded from the events of its stream
up to its version, whatever process wrote it, so two writers of the same stream's snapshot agree;
the row keeps the higher version (or the same version again: a row that could not be read is
replaced by the next fold that reaches it).

What a snapshot keeps besides the state is what the shell answers from: the first and last
positions, and the positions of the events whose ids are deterministic (UUID version 5: the
events of commands sent with an idempotency key), so that a repeat of such a command is still
answered as a repeat after its events were folded into a snapshot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import sys
import types
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import structlog
from psycopg_pool import AsyncConnectionPool

from domain.decider import Decider

log = structlog.get_logger(__name__)

S = TypeVar("S")

EVERY = 1_000
"""Events between a stream's snapshots (and the fewest a stream has before its first)."""


@dataclass(frozen=True)
class Snapshot(Generic[S]):
    state: S
    version: int
    first_position: int
    last_position: int
    keyed: dict[uuid.UUID, int]
    """Positions of the events with deterministic (version 5) ids."""


class _Body(msgspec.Struct, Generic[S]):
    state: S
    keyed: dict[uuid.UUID, int]


class SnapshotStore(Protocol):
    async def get_many(self, wanted: Sequence[tuple[Decider[Any, Any], str]]) -> list[Snapshot[Any] | None]: ...

    async def put(self, decider: Decider[Any, Any], stream_id: str, snapshot: Snapshot[Any]) -> None: ...


def fingerprint(decider: Decider[Any, Any]) -> str:
    """Names the code that folds the decider's states, as this process runs it: the bytecode of
    every function and method, the fields and defaults of every class, and the value of every
    constant defined in the decider's module (where its events, state, ``evolve`` and ``fold``
    live), with its name, its state type and the interpreter's bytecode tag. Not the source file:
    a deploy that replaces it under a running process must not let the old code write snapshots
    under the new code's name."""
    module = sys.modules[decider.evolve.__module__]
    state_type = type(decider.initial)
    parts = [decider.name, f"{state_type.__module__}.{state_type.__qualname__}", sys.implementation.cache_tag]
    for name, value in sorted(vars(module).items()):
        if name.startswith("__"):
            continue
        if inspect.isfunction(value) or inspect.isclass(value):
            if value.__module__ != module.__name__:
                continue  # imported: not this module's code
            if inspect.isfunction(value):
                parts.append(f"{name} {_code(value.__code__)}")
                continue
            parts.append(f"{name} {_fields(value)}")
            parts += [
                f"{name}.{attr} {_code(f.__code__)}" for attr, f in sorted(vars(value).items()) if inspect.isfunction(f)
            ]
        elif isinstance(value, str | int | float | bool | bytes | tuple | frozenset | type(None)):
            parts.append(f"{name} = {_constant(value)}")
        elif type(value).__module__ == "typing":  # aliases such as Kind = Literal[...]
            parts.append(f"{name} = {value!r}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _fields(cls: type) -> str:
    """A class's annotations and its fields' defaults (a default decides how old events decode)."""
    defaults: list[str] = []
    if dataclasses.is_dataclass(cls):
        defaults = [
            f"{f.name}={_constant(f.default)}" for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
        ]
    elif isinstance(cls, type) and issubclass(cls, msgspec.Struct):  # the defaults of the last fields
        fields, values = cls.__struct_fields__, cls.__struct_defaults__
        defaults = [f"{n}={_constant(v)}" for n, v in zip(fields[len(fields) - len(values) :], values, strict=True)]
    return f"{getattr(cls, '__annotations__', {})!r} {defaults}"


def _code(code: types.CodeType) -> str:
    """A code object's instructions, names and constants, the same in every process (no line
    numbers: a comment moved is not a change; sets sorted: their order follows string hashing)."""
    return f"{code.co_code.hex()} {code.co_names!r} [{', '.join(map(_constant, code.co_consts))}]"


def _constant(value: object) -> str:
    if isinstance(value, types.CodeType):
        return _code(value)
    if isinstance(value, frozenset | set):
        return "{" + ", ".join(sorted(map(_constant, value))) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_constant, value)) + ")"
    return repr(value)


KEYED_KEPT = 10_000
"""The most keyed event positions a snapshot keeps, the latest: a repeat of an older keyed
command (10,000 keyed events later on the same stream) is decided again, and if that decision
makes the same events, the log answers it by their ids as the first append."""


def keyed_positions(positions: dict[uuid.UUID, int]) -> dict[uuid.UUID, int]:
    """The positions a snapshot keeps: those of deterministic ids (see the module docstring)."""
    keyed = [(position, event_id) for event_id, position in positions.items() if event_id.version == 5]
    if len(keyed) > KEYED_KEPT:
        keyed = sorted(keyed)[-KEYED_KEPT:]
    return {event_id: position for position, event_id in keyed}


_GET = """
SELECT w.i, s.version, s.first_position, s.last_position, s.body
  FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS w(decider, stream_id, fingerprint, i)
  JOIN aggregate_snapshots s ON s.decider = w.decider AND s.stream_id = w.stream_id AND s.fingerprint = w.fingerprint
"""
# One row per stream and fingerprint: during a rolling deploy, old and new code each keep their
# own instead of replacing each other's; another fingerprint's row is dropped once a day old.
_PUT = """
WITH superseded AS (
    DELETE FROM aggregate_snapshots
     WHERE decider = %(decider)s AND stream_id = %(stream_id)s AND fingerprint <> %(fingerprint)s
       AND taken_at < now() - interval '1 day'
)
INSERT INTO aggregate_snapshots AS s (decider, stream_id, version, fingerprint, first_position, last_position, body)
VALUES (%(decider)s, %(stream_id)s, %(version)s, %(fingerprint)s, %(first)s, %(last)s, %(body)s)
ON CONFLICT (decider, stream_id, fingerprint) DO UPDATE
   SET version = excluded.version, first_position = excluded.first_position,
       last_position = excluded.last_position, body = excluded.body, taken_at = now()
 WHERE s.version <= excluded.version
"""


class PostgresSnapshots:
    """``aggregate_snapshots`` in the read models' database (whichever backend holds the log)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._fingerprints: dict[str, str] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        self._encoder = msgspec.json.Encoder()

    async def get_many(self, wanted: Sequence[tuple[Decider[Any, Any], str]]) -> list[Snapshot[Any] | None]:
        found: list[Snapshot[Any] | None] = [None] * len(wanted)
        if not wanted:
            return found
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                _GET, ([d.name for d, _ in wanted], [s for _, s in wanted], [self._fingerprint(d) for d, _ in wanted])
            )
            rows = await cur.fetchall()
        for i, version, first, last, body in rows:
            decider, stream_id = wanted[i - 1]
            try:
                decoded = self._decoder(decider).decode(body)
            except msgspec.MsgspecError as exc:  # same fingerprint, yet unreadable: fold the log instead
                log.warning(
                    "snapshot.unreadable",
                    decider=decider.name,
                    stream_id=stream_id,
                    error=str(exc),
                    hint="the row is ignored and replaced by the next snapshot; deleting it is safe",
                )
                continue
            found[i - 1] = Snapshot(decoded.state, version, first, last, decoded.keyed)
        return found

    async def put(self, decider: Decider[Any, Any], stream_id: str, snapshot: Snapshot[Any]) -> None:
        body = self._encoder.encode(_Body(snapshot.state, snapshot.keyed))
        async with self._pool.connection() as conn:
            await conn.execute(
                _PUT,
                {
                    "decider": decider.name,
                    "stream_id": stream_id,
                    "version": snapshot.version,
                    "fingerprint": self._fingerprint(decider),
                    "first": snapshot.first_position,
                    "last": snapshot.last_position,
                    "body": body,
                },
            )

    def _fingerprint(self, decider: Decider[Any, Any]) -> str:
        if decider.name not in self._fingerprints:
            self._fingerprints[decider.name] = fingerprint(decider)
        return self._fingerprints[decider.name]

    def _decoder(self, decider: Decider[Any, Any]) -> msgspec.json.Decoder[Any]:
        if decider.name not in self._decoders:
            self._decoders[decider.name] = msgspec.json.Decoder(_Body[type(decider.initial)])  # type: ignore[misc]
        return self._decoders[decider.name]
