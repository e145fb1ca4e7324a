"""``hubbub events tail|export``: read the log as a human (tail) or as a file (export)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import IO, Any

import msgspec

from domain.events import EventMeta, RecordedEvent, UnknownEvent
from hubbub.projections_cli import ProgressLine, database_url, opened_store
from infra.eventstore.port import EventStore
from projections.rebuild import Progress

TAIL_DATA_CHARS = 300  # a line per event stays readable; `export` has the full data


class ExportedEvent(msgspec.Struct, frozen=True):
    position: int
    stream_id: str
    version: int
    event_id: uuid.UUID
    type: str
    data: Any
    metadata: EventMeta
    recorded_at: dt.datetime


_encoder = msgspec.json.Encoder()


def event_data(event: RecordedEvent) -> Any:
    """The event's fields without its type tag, the same whether or not this build knows the
    type (an unknown one is the stored JSON)."""
    if isinstance(event.event, UnknownEvent):
        data = msgspec.json.decode(event.event.data)
    else:
        data = msgspec.to_builtins(event.event)
    if isinstance(data, dict):
        data.pop("type", None)
    return data


def utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- tail --------------------------------------------------------------------------------------


def tail(args: argparse.Namespace) -> int:
    with database_url(args) as url:
        try:
            asyncio.run(_tail(url, max(0, args.n), follow=not args.no_follow))
        except KeyboardInterrupt:
            pass  # Ctrl-C is how one stops following: not an error
        except BrokenPipeError:
            _quiet_stdout()  # `hubbub events tail | head`: the reader has had enough
    return 0


def _quiet_stdout() -> None:
    # Python would otherwise report the broken pipe again when it flushes stdout at exit.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


async def _tail(url: str, n: int, follow: bool) -> None:
    async with opened_store(url) as store:
        head = await store.head()
        last = head
        for event in await last_events(store, n, head):
            print(tail_line(event))
            last = event.position
        sys.stdout.flush()
        if follow:
            async for batch in store.subscribe(after=last):
                print("\n".join(tail_line(e) for e in batch), flush=True)


async def last_events(store: EventStore, n: int, head: int) -> list[RecordedEvent]:
    """The last ``n`` events up to ``head``; positions may have gaps, so widen until found."""
    if n == 0:
        return []
    after = max(0, head - n)
    while True:
        events = [e async for e in store.read_all(after) if e.position <= head]
        if len(events) >= n or after == 0:
            return events[-n:]
        after = max(0, after - 2 * (n - len(events)))


def tail_line(event: RecordedEvent) -> str:
    data = _encoder.encode(event_data(event)).decode()
    if len(data) > TAIL_DATA_CHARS:
        data = data[: TAIL_DATA_CHARS - 1] + "…"
    return f"{event.position}  {utc(event.recorded_at)}  {event.stream_id}  v{event.version}  {event.type}  {data}"


# -- export ------------------------------------------------------------------------------------


def export(args: argparse.Namespace) -> int:
    with database_url(args) as url:
        try:
            count, position = asyncio.run(_export(url, args.out, args.after))
        except KeyboardInterrupt:
            print("\nhubbub: export interrupted; the output file was not written", file=sys.stderr)
            return 130
        except BrokenPipeError:
            _quiet_stdout()
            return 0
    if args.out != "-":
        print(
            f"exported {count:,} events to {args.out} (after position {args.after}, up to {position})", file=sys.stderr
        )
    return 0


async def _export(url: str, out: str, after: int) -> tuple[int, int]:
    async with opened_store(url) as store:
        if out == "-":
            return await write_lines(store, after, sys.stdout.buffer, None)
        # Written aside and renamed at the end: a file named `out` is always a complete export.
        partial = f"{out}.partial"
        try:
            progress = ProgressLine("exported")
            with open(partial, "wb") as f:  # noqa: ASYNC230 - a CLI's one file; writes go through write_lines
                result = await write_lines(store, after, f, progress)
            progress.end()
            os.replace(partial, out)
        finally:
            if os.path.exists(partial):  # noqa: ASYNC240 - the CLI's last step, nothing else runs
                os.remove(partial)
        return result


async def write_lines(
    store: EventStore, after: int, out: IO[bytes], progress: Callable[[Progress], None] | None
) -> tuple[int, int]:
    """One JSON object per event, from ``after`` up to the head when called; memory stays
    bounded by the store's page size. Returns (events written, last position)."""
    head = await store.head()
    started, count, position = time.monotonic(), 0, after
    async for event in store.read_all(after):
        out.write(_encoder.encode(_exported(event)) + b"\n")
        count, position = count + 1, event.position
        if progress is not None and count % 1000 == 0:
            progress(Progress(count, count + max(0, head - position), time.monotonic() - started))
    if progress is not None:
        progress(Progress(count, count, time.monotonic() - started))
    return count, position


def _exported(event: RecordedEvent) -> ExportedEvent:
    return ExportedEvent(
        event.position,
        event.stream_id,
        event.version,
        event.event_id,
        event.type,
        event_data(event),
        event.meta,
        event.recorded_at,
    )
