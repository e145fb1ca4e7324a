from infra.eventstore.port import (
    ANY,
    NO_STREAM,
    AppendResult,
    DuplicateEventId,
    EventStore,
    EventStoreError,
    WrongExpectedVersion,
)

__all__ = [
    "ANY",
    "NO_STREAM",
    "AppendResult",
    "DuplicateEventId",
    "EventStore",
    "EventStoreError",
    "WrongExpectedVersion",
]
