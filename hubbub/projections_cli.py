"""``hubbub projections status|rebuild``: see how far each read model is, rebuild one from the log."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator

import psycopg

from infra.db import open_pool
from infra.eventstore.factory import open_event_store
from infra.eventstore.port import EventStore
from infra.migrations import migrate
from infra.settings import load_settings
from projections import checkpoints
from projections.rebuild import Progress, RebuildError, RebuildResult, TableDiff
from projections.rebuild import rebuild as rebuild_projection
from projections.registry import all_projections, by_name
from projections.runtime import Projection


@contextlib.contextmanager
def database_url(args: argparse.Namespace) -> Iterator[str]:
    """The database URL (embedded PostgreSQL of the data dir when none is set), migrated."""
    from hubbub.services import resolved

    with resolved(load_settings(data_dir=getattr(args, "data_dir", None)), need=("postgres",)) as settings:
        assert settings.database_url is not None
        asyncio.run(migrate(settings.database_url))
        yield settings.database_url


@contextlib.asynccontextmanager
async def opened_store(url: str) -> AsyncIterator[EventStore]:
    pool = await open_pool(url, 1, 4)
    store = open_event_store(load_settings(), pool, url)
    try:
        yield store
    finally:
        await store.close()
        await pool.close()


# -- status ------------------------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    with database_url(args) as url:
        rows, registered = asyncio.run(_status_rows(url))
    if rows:
        print(_format_table(["NAME", "POSITION", "HEAD", "LAG", "UPDATED", "LIVE"], rows))
    if load_settings().event_store != "postgres":
        print("note: HEAD and LAG are read from PostgreSQL's events table, not from the configured log")
    never = sorted(registered - {r[0] for r in rows})
    for name in never:
        print(f"{name}: never run (no checkpoint yet; it starts with the app)")
    return 0


async def _status_rows(url: str) -> tuple[list[list[str]], set[str]]:
    registered = {p.name for p in all_projections()}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        names = sorted(registered | await checkpoints.names(conn))
        found = await checkpoints.status(conn, names)
    rows = [
        [name, str(pos), str(head), str(lag), f"{updated:%Y-%m-%d %H:%M:%S%z}", f"yes (pid {pid})" if pid else "no"]
        for name, pos, head, lag, updated, pid in found
    ]
    return rows, registered


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


# -- rebuild -----------------------------------------------------------------------------------


def rebuild(args: argparse.Namespace) -> int:
    projection = by_name(args.name)
    if projection is None:
        known = ", ".join(p.name for p in all_projections())
        print(f"hubbub: no projection named {args.name!r}; known projections: {known}", file=sys.stderr)
        return 2
    with database_url(args) as url:
        progress = ProgressLine()
        try:
            result = asyncio.run(_rebuild(url, projection, args.verify, progress))
        except RebuildError as exc:
            progress.end()
            print(f"hubbub: {exc}", file=sys.stderr)
            return 1
    progress.end()
    _report(result, args.verify)
    return 0 if result.swapped else 1


async def _rebuild(url: str, projection: Projection, verify: bool, progress: ProgressLine) -> RebuildResult:
    async with opened_store(url) as store:
        return await rebuild_projection(url, store, projection, verify=verify, progress=progress)


class ProgressLine:
    """Progress on stderr: one line rewritten in place on a terminal (ten times a second at
    most), a plain line every few seconds when stderr goes to a file or a pipe."""

    def __init__(self, label: str = "replayed") -> None:
        self.label = label
        self.inplace = sys.stderr.isatty()
        self.every_s = 0.1 if self.inplace else 2.0
        self.shown_at = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.shown_at < self.every_s and p.done < p.total:
            return
        self.shown_at = now
        eta = f", ETA {p.eta_s:.0f} s" if p.eta_s is not None else ""
        pct = 100 * p.done / p.total if p.total else 100
        text = f"{self.label} {p.done:,} / {p.total:,} events ({pct:.0f}%), {p.rate:,.0f} events/s{eta}"
        if self.inplace:
            print(f"\r{text}\x1b[K", end="", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.inplace:
            print("", file=sys.stderr)


def _report(result: RebuildResult, verify: bool) -> None:
    print(
        f"{result.name}: replayed {result.events:,} events up to position {result.position} in {result.elapsed_s:.1f} s"
    )
    if verify and not result.had_live:
        print("verify: there were no live tables to compare with")
    for diff in result.diffs:
        _print_diff(diff)
    if result.swapped:
        print(f"swapped in: {result.name} now reads from the rebuilt tables")
    else:
        kept = ", ".join(f"{d.table}__rebuild" for d in result.diffs)
        print(
            f"NOT swapped: the rebuilt tables differ from the live ones; kept {kept} "
            f"(at position {result.position}) for inspection with SQL"
        )


def _print_diff(diff: TableDiff) -> None:
    if not diff.differs:
        print(f"verify {diff.table}: identical ({diff.live_rows:,} rows)")
        return
    print(
        f"verify {diff.table}: DIFFERENT: live has {diff.live_rows:,} rows, rebuilt {diff.rebuilt_rows:,}; "
        f"{diff.only_live:,} only in live, {diff.only_rebuilt:,} only in rebuilt"
    )
    print("  columns: " + ", ".join(diff.columns))
    for row in diff.live_samples:
        print(f"  only in live:    {row}")
    for row in diff.rebuilt_samples:
        print(f"  only in rebuilt: {row}")
