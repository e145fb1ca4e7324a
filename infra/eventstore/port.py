"""The event log port. Every backend passes ``tests/contract/test_eventstore.py``.

Guarantees:
- per-stream optimistic concurrency (``expected_version``) and idempotent event ids;
- ``append_many`` writes several streams all-or-none, with the same checks for each;
- ``expect``: an append can also require streams it does not write to be at given versions
  (what its decision read: the caller's session, the channel, the workspace), so a decision
  made on a cached state is fenced against a change that happened meanwhile;
- one global order of ``position``s, and no reader ever skips an event: once a reader has seen
  position p, no event below p can appear later;
- ``subscribe`` wakes within milliseconds of a commit, not by polling.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import msgspec

from domain.events import NewEvent, RecordedEvent

ANY = None
"""``expected_version=ANY``: append whatever the stream's version."""
NO_STREAM = 0
"""``expected_version=NO_STREAM``: the stream must not exist yet (versions start at 1)."""


class AppendResult(msgspec.Struct, frozen=True):
    position: int
    """Global position of the last event appended (or of the original append, for a repeat)."""
    version: int
    """Stream version after the append: the version of its last event."""


class StreamAppend(msgspec.Struct, frozen=True):
    """One stream's part of an ``append_many``."""

    stream_id: str
    events: Sequence[NewEvent]
    expected_version: int | None = ANY


class EventStoreError(Exception):
    pass


class WrongExpectedVersion(EventStoreError):
    def __init__(self, stream_id: str, expected: int | None, actual: int) -> None:
        super().__init__(f"stream {stream_id!r} is at version {actual}, expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class DuplicateEventId(EventStoreError):
    """Some, not all, of an append's event ids exist already, or exist in another stream."""


class EventStore(Protocol):
    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None = ANY,
        *,
        expect: Sequence[tuple[str, int]] = (),
    ) -> AppendResult:
        """Append all of ``events`` or none. Repeating an append with the same event ids returns
        the first result and appends nothing. ``expect``: as in ``append_many``."""
        ...

    async def append_many(
        self, appends: Sequence[StreamAppend], *, expect: Sequence[tuple[str, int]] = ()
    ) -> list[AppendResult]:
        """Append to several streams atomically: all of ``appends`` or none, one result each.

        ``expect``: ``(stream_id, version)`` of streams not written here that must be at exactly
        that version, or nothing is appended and ``WrongExpectedVersion`` names the first that
        is not (PostgreSQL: checked in the same statement as the append; KurrentDB: read just
        before it). A repeat (all ids stored) answers its first results whatever they are now.

        A wrong expected version in any entry raises ``WrongExpectedVersion`` for the first such
        entry. Repeating an ``append_many`` whose event ids all exist as it wrote them returns the
        first results; some ids existing raises ``DuplicateEventId``. Either way nothing is
        appended. ``ValueError`` for no entries, an entry without events, or a stream twice."""
        ...

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """The stream's events with version > ``after_version``, in version order."""
        ...

    async def read_streams(self, tails: Sequence[tuple[str, int]]) -> list[list[RecordedEvent]]:
        """``read_stream`` of each ``(stream_id, after_version)``, in that order, in one read
        where the backend can (a command that needs several streams pays one round trip)."""
        ...

    def read_all(self, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        """Events with position > ``after``, in log order, up to the head when called."""
        ...

    def subscribe(self, after: int = 0, batch_size: int = 500) -> AsyncIterator[Sequence[RecordedEvent]]:
        """Catch up from ``after``, then follow live; yields non-empty batches in log order forever."""
        ...

    async def head(self) -> int:
        """Position of the newest event (0 for an empty log)."""
        ...

    async def close(self) -> None: ...


MAX_STREAM_ID = 200


class InvalidEvent(EventStoreError, ValueError):
    """An event the log cannot hold (e.g. a NUL character in its data); nothing was appended."""


def check_appends(appends: Sequence[StreamAppend], expect: Sequence[tuple[str, int]] = ()) -> None:
    """The caller bugs every backend refuses before writing anything, so that one bad append
    can never fail the others it would have shared a database call with."""
    if not appends:
        raise ValueError("append_many needs at least one StreamAppend")
    written = {entry.stream_id for entry in appends}
    for stream_id, version in expect:
        if stream_id in written or not 0 <= version < 2**31:
            raise ValueError(f"expect: {stream_id!r} at {version}: a stream not written here, at 0 <= n < 2**31")
    if len({stream_id for stream_id, _ in expect}) != len(expect):
        raise ValueError("expect: a stream appears twice")
    streams: set[str] = set()
    ids: set[uuid.UUID] = set()
    for entry in appends:
        if not entry.events:
            raise ValueError(f"append: the entry for {entry.stream_id!r} has no events")
        if not 0 < len(entry.stream_id) <= MAX_STREAM_ID or "\x00" in entry.stream_id:
            raise ValueError(
                f"stream ids are 1 to {MAX_STREAM_ID} characters without NUL, not {entry.stream_id[:40]!r}"
            )
        if entry.expected_version is not None and not 0 <= entry.expected_version < 2**31:
            raise ValueError(f"expected_version must be ANY or 0 <= n < 2**31, not {entry.expected_version}")
        if entry.stream_id in streams:
            raise ValueError(f"append_many: stream {entry.stream_id!r} appears twice; merge its events into one entry")
        streams.add(entry.stream_id)
        entry_ids = {e.event_id for e in entry.events}
        if len(entry_ids) != len(entry.events) or not ids.isdisjoint(entry_ids):
            raise DuplicateEventId(f"append_many repeats an event id within itself (at {entry.stream_id!r})")
        ids |= entry_ids


class AppendOutcomeUnknown(EventStoreError):
    """The append may or may not have been written: the connection broke during it. Retry with the
    same event ids (over HTTP: the same ``Idempotency-Key``); a repeat that was written is answered
    with the first result and appends nothing."""
