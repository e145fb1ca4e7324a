"""Event vocabulary shared by every aggregate: the base class, metadata, and the codec.

Events are frozen msgspec Structs tagged by ``type`` (explicit, stable, past tense:
``tag="message.posted"``). Each aggregate module declares its own subclasses; the codec knows
every subclass that has been imported and builds one decoder for their union, once.
A changed meaning is a new event type; shapes evolve only by adding fields with defaults.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Union

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every domain event. Subclasses set ``tag="aggregate.happened"``."""

    @property
    def type_name(self) -> str:
        return type(self).__struct_config__.tag  # type: ignore[return-value]


class UnknownEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event whose type this build does not know (written by a newer version).

    Projections skip it; it is never re-appended.
    """

    type: str
    data: bytes


class EventMeta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who did it, why, and when. ``occurred_at`` comes in with the command (domain has no clock)."""

    actor_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    occurred_at: dt.datetime | None = None


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event about to be appended. ``event_id`` makes the append idempotent."""

    event: Event
    event_id: uuid.UUID
    meta: EventMeta = EventMeta()


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as the log holds it: its global ``position`` and its ``version`` in its stream."""

    position: int
    stream_id: str
    version: int
    event_id: uuid.UUID
    event: Event | UnknownEvent
    meta: EventMeta
    recorded_at: dt.datetime

    @property
    def type(self) -> str:
        event = self.event
        return event.type if isinstance(event, UnknownEvent) else event.type_name


def known_event_types() -> dict[str, type[Event]]:
    """Every imported Event subclass with an explicit dotted tag, by tag."""
    found: dict[str, type[Event]] = {}
    pending: list[type[Event]] = list(Event.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        tag = cls.__struct_config__.tag
        if isinstance(tag, str) and "." in tag:
            found[tag] = cls
    return found


class EventCodec:
    """JSON encoding of events and metadata; one decoder for the union of all known events.

    Types unknown to this build decode to ``UnknownEvent`` instead of failing the reader.
    """

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._meta_decoder = msgspec.json.Decoder(EventMeta)
        self._decoder: msgspec.json.Decoder[Any] | None = None
        self._known: dict[str, type[Event]] = {}

    def encode(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    def encode_meta(self, meta: EventMeta) -> bytes:
        return self._encoder.encode(meta)

    def decode(self, type_name: str, data: bytes | str) -> Event | UnknownEvent:
        if type_name not in self._known:
            self._refresh()
            if type_name not in self._known:
                raw = data.encode() if isinstance(data, str) else data
                return UnknownEvent(type=type_name, data=raw)
        assert self._decoder is not None
        event: Event = self._decoder.decode(data)
        return event

    def decode_meta(self, data: bytes | str) -> EventMeta:
        return self._meta_decoder.decode(data)

    def _refresh(self) -> None:
        # Rebuilt only when an event class was imported after the last build.
        known = known_event_types()
        if known.keys() == self._known.keys():
            return
        classes = tuple(known.values())
        union = classes[0] if len(classes) == 1 else Union[classes]  # noqa: UP007
        self._decoder = msgspec.json.Decoder(union)
        self._known = known
