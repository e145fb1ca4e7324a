"""Idempotency keys, scoped to the caller and tied to the request they came with.

A key is the caller's own: ``Idempotency-Key: k`` from two people is two keys, each executed
(Stripe keys are per account the same way). Under a key the command shell appends, with the
request's events and in the same atomic append, the key's *record*: ``idempotency.key_used`` on
the caller's ``idempotency-`` stream (``domain/idempotency.py``), expected empty. Every event id
of the request, the record's included, is ``uuid5(stream, record, fingerprint, i)``, where the
fingerprint is of the operation (the route's ``operation_id``), its path parameters and its
decoded body. So, on the next request under the key:

- the record holds this request's id: the same request again; its first answer is repeated and
  nothing is appended, even if deciding again would now say something else;
- the record exists without it: another request (route, path or body) under a used key: 422;
- no record: the key is new (or its first request changed nothing, so nothing recorded it).

Why the log and not a table: the record and the request's events are one append, so neither
exists without the other (a table beside the log would need the log's transaction, which a
KurrentDB log does not share). Why the fingerprint in the ids: two different requests racing
under one key then never share an id, so the log cannot take the second for a repeat of the
first (it answers an append whose ids are all stored with the first append's result); both
expect the record's stream empty, one append wins, the other is refused, reloads and finds the
record: 422. Two racing copies of one request share every id: the second is a repeat.

A post's ``client_msg_id`` is a key whose record is the message it names: the message id is
``uuid5(channel, author, client_msg_id)``, so the message stream is the record, and a post that
reuses a ``client_msg_id`` in the same channel with another body is 422 the same way.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from domain.errors import DomainError
from domain.idempotency import key_stream

IDEMPOTENCY_NAMESPACE = uuid.UUID("0b5f3c1e-6a56-4f7e-9d1e-2f3a7c0d9b11")

_ENCODER = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True, slots=True)
class Key:
    """An idempotency key as the shell uses it (see the module docstring)."""

    record: str
    """The stream whose existence says the key is used: the caller's ``idempotency-`` stream, or
    a stream the key itself names (a post's message, under ``client_msg_id``)."""
    request: str
    """The fingerprint of the request that carries the key (``fingerprint``)."""
    operation: str
    """The route's ``operation_id``, written in the record."""
    name: str = "Idempotency-Key"
    field: str | None = None
    """The body field that carried the key, if it came in the body (``client_msg_id``)."""


def fingerprint(operation: str, params: Mapping[str, object], body: object) -> str:
    """What makes two requests the same one: the operation, its path parameters and its body as
    decoded (a Struct, a dict, or None), so a retry that re-encodes the same JSON still matches."""
    digest = hashlib.sha256(_ENCODER.encode([operation, params]))
    digest.update(b"\0")
    digest.update(_ENCODER.encode(body))
    return digest.hexdigest()[:32]


def keyed(actor_id: str | None, key: str, operation: str, params: Mapping[str, object], body: object) -> Key:
    """An ``Idempotency-Key`` header's key: recorded on the caller's own stream."""
    return Key(key_stream(actor_id, key), fingerprint(operation, params, body), operation)


def nth_id(stream_id: str, key: Key, index: int) -> uuid.UUID:
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{stream_id}\n{key.record}\n{key.request}\n{index}")


def event_ids(stream_id: str, key: Key | None, count: int) -> list[uuid.UUID]:
    """Random ids, or, under a key, the same ids for the same stream, key and request."""
    if key is None:
        return [uuid.uuid4() for _ in range(count)]
    return [nth_id(stream_id, key, i) for i in range(count)]


class KeyReused(DomainError):
    """A key sent with another request than the one that first used it."""

    title = "Idempotency key reused"

    def __init__(self, key: Key, used_by: str | None = None) -> None:
        by = f" ({used_by})" if used_by and used_by != key.operation else ""
        super().__init__(
            f"this {key.name} was used with another request{by}; a key repeats only the same "
            f"request (same route, path and body): send a new {key.name} for a new request",
            field=key.field,
        )
