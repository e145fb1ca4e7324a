"""``streams``: the catalog of every stream in the log, for auditors and analysts with SQL.

Reads: the envelope of every event (stream, version, position, recorded_at), whatever its type,
including types this build does not know; it never looks at event data.
Writes: one row per stream in ``streams``: its category (the prefix before the first ``-``), its
version, the positions of its first and last events, how many events it has, and when its
first and last events were recorded (so a rebuild reproduces the rows exactly).
Idempotency: the runtime commits rows and checkpoint together, so each event is applied once.
Independently of that, a row only moves forward: events at or below the stored version are
skipped, so replaying a batch that was already applied changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import psycopg

from domain.events import RecordedEvent
from infra.db import Statement, run_statements

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams{s} (
    stream_id      text        NOT NULL,
    category       text        NOT NULL,
    version        integer     NOT NULL,
    first_position bigint      NOT NULL,
    last_position  bigint      NOT NULL,
    event_count    bigint      NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT streams{s}_pkey PRIMARY KEY (stream_id)
);
CREATE INDEX IF NOT EXISTS streams{s}_category_idx ON streams{s} (category, stream_id);
"""

# event_count grows by the batch's events above the stored version: a batch holds a stream's
# events as one contiguous run of versions, so that is least(batch count, new version - stored).
_UPSERT = """
INSERT INTO streams{s} AS s (stream_id, category, version, first_position, last_position,
                             event_count, created_at, updated_at)
SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(stream_id text, category text, version int, first_position bigint,
                                              last_position bigint, event_count bigint, created_at timestamptz,
                                              updated_at timestamptz)
ON CONFLICT (stream_id) DO UPDATE SET
    version = excluded.version,
    last_position = excluded.last_position,
    event_count = s.event_count + least(excluded.event_count, excluded.version - s.version),
    updated_at = excluded.updated_at
WHERE excluded.version > s.version
"""


_FIELDS = (
    "stream_id",
    "category",
    "version",
    "first_position",
    "last_position",
    "event_count",
    "created_at",
    "updated_at",
)
_JSON = msgspec.json.Encoder()


def category(stream_id: str) -> str:
    return stream_id.split("-", 1)[0]


def _summaries(events: Sequence[RecordedEvent]) -> dict[str, list]:
    """Per stream: [category, version, first_position, last_position, count, created, updated]."""
    rows: dict[str, list] = {}
    for e in events:
        row = rows.get(e.stream_id)
        if row is None:
            rows[e.stream_id] = [
                category(e.stream_id),
                e.version,
                e.position,
                e.position,
                1,
                e.recorded_at,
                e.recorded_at,
            ]
        else:
            row[1], row[3], row[6] = e.version, e.position, e.recorded_at
            row[4] += 1
    return rows


class StreamCatalog:
    name = "streams"
    tables: Sequence[str] = ("streams",)

    def schema(self, suffix: str = "") -> str:
        return _SCHEMA.format(s=suffix)

    async def handle(self, conn: psycopg.AsyncConnection, events: Sequence[RecordedEvent], suffix: str = "") -> None:
        await run_statements(conn, self.statements(events, suffix))

    def statements(self, events: Sequence[RecordedEvent], suffix: str = "") -> list[Statement]:
        rows = _summaries(events)
        if not rows:
            return []
        # One JSON parameter: dumping eight arrays element by element cost more than the statement.
        records = [dict(zip(_FIELDS, [stream, *row], strict=True)) for stream, row in rows.items()]
        return [(_UPSERT.format(s=suffix), (_JSON.encode(records).decode(),))]
