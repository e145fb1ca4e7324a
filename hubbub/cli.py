"""The ``hubbub`` command line. Each subcommand lives in the module that owns its room."""

from __future__ import annotations

import argparse
import asyncio
import sys

from infra.settings import SettingsError, load_settings


def _migrate(args: argparse.Namespace) -> int:
    from hubbub.services import resolved
    from infra.migrations import migrate

    with resolved(load_settings(data_dir=args.data_dir), need=("postgres",)) as settings:
        assert settings.database_url is not None
        applied = asyncio.run(migrate(settings.database_url))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hubbub import devserver, events_cli, projections_cli

    parser = argparse.ArgumentParser(prog="hubbub", description="Hubbub team chat server")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", default=None, help="where embedded services keep their data (default .hubbub)")

    dev = command("dev", "run the server with embedded PostgreSQL, NATS and Redis (no set-up needed)", devserver.dev)
    dev.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=None, help="port to listen on (default 8000)")
    data_dir(dev)

    serve = command("serve", "run the server against external services named by HUBBUB_* URLs", devserver.serve)
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")

    migrate = command("migrate", "apply pending database migrations", _migrate)
    data_dir(migrate)

    projections = command("projections", "inspect and rebuild read models", lambda a: projections.print_help() or 2)
    psub = projections.add_subparsers(dest="action", metavar="ACTION")
    status = psub.add_parser("status", help="each projection's position and lag behind the log")
    status.set_defaults(func=projections_cli.status)
    data_dir(status)
    rebuild = psub.add_parser("rebuild", help="replay the log into fresh tables and swap them in")
    rebuild.add_argument("name", help="projection name (see `hubbub projections status`)")
    rebuild.add_argument(
        "--verify", action="store_true", help="compare the rebuilt tables with the live ones before swapping"
    )
    rebuild.set_defaults(func=projections_cli.rebuild)
    data_dir(rebuild)

    events = command("events", "read the event log", lambda a: events.print_help() or 2)
    esub = events.add_subparsers(dest="action", metavar="ACTION")
    tail = esub.add_parser("tail", help="print the newest events, then follow new ones")
    tail.add_argument("-n", type=int, default=10, help="how many recent events to print first (default 10)")
    tail.add_argument("--no-follow", action="store_true", help="print and exit instead of following")
    tail.set_defaults(func=events_cli.tail)
    data_dir(tail)
    export = esub.add_parser("export", help="write the log as JSON lines, for auditors and backups")
    export.add_argument("--out", default="-", help="file to write (default: standard output)")
    export.add_argument("--after", type=int, default=0, help="start after this position (default 0)")
    export.set_defaults(func=events_cli.export)
    data_dir(export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
