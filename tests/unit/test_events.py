from __future__ import annotations

import datetime as dt

import msgspec

from domain.events import Event, EventCodec, EventMeta, UnknownEvent, known_event_types


class Said(Event, frozen=True, tag="test.said"):
    text: str
    loud: bool = False


def test_events_encode_with_their_stable_tag() -> None:
    codec = EventCodec()
    assert msgspec.json.decode(codec.encode(Said(text="hi"))) == {"type": "test.said", "text": "hi", "loud": False}
    assert Said(text="x").type_name == "test.said"


def test_decoding_picks_the_class_by_tag() -> None:
    codec = EventCodec()
    assert codec.decode("test.said", b'{"type":"test.said","text":"hi"}') == Said(text="hi")


def test_an_older_shape_without_a_newer_field_still_decodes() -> None:
    # Shapes evolve only by adding fields with defaults: an event written before `loud` existed.
    assert EventCodec().decode("test.said", '{"type":"test.said","text":"old"}') == Said(text="old", loud=False)


def test_an_event_type_from_a_newer_build_decodes_as_unknown() -> None:
    event = EventCodec().decode("test.from_the_future", b'{"type":"test.from_the_future","x":1}')
    assert event == UnknownEvent(type="test.from_the_future", data=b'{"type":"test.from_the_future","x":1}')


def test_a_class_imported_after_the_first_decode_is_found() -> None:
    codec = EventCodec()
    codec.decode("test.said", b'{"type":"test.said","text":"a"}')

    class Whispered(Event, frozen=True, tag="test.whispered"):
        text: str

    assert codec.decode("test.whispered", b'{"type":"test.whispered","text":"b"}') == Whispered(text="b")
    assert "test.whispered" in known_event_types()


def test_metadata_round_trips_and_omits_what_is_unset() -> None:
    codec = EventCodec()
    meta = EventMeta(actor_id="u1", occurred_at=dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC))
    raw = codec.encode_meta(meta)
    assert b"correlation_id" not in raw
    assert codec.decode_meta(raw) == meta
