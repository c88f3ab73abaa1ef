"""The ``embedded-lakefs`` command: ``serve`` and ``gc`` over a data directory.

Other command lines (``segmodels lakefs serve|gc``) add the same two commands to their own parser with
:func:`add_commands`, giving their own default data directory. Without a command, ``embedded-lakefs --data-dir DIR``
serves on a free port with the data directory's keys: how programs start it in the background.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from .datadir import CREDENTIALS_FILE
from .gc import DEFAULT_RETENTION_DAYS

ACCESS_KEY_VARIABLE = "LAKECTL_CREDENTIALS_ACCESS_KEY_ID"
SECRET_KEY_VARIABLE = "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"
DEFAULT_PORT = 8000  # lakeFS' own


def add_commands(commands: argparse._SubParsersAction, data_dir: Path | None = None) -> None:
    """Add ``serve`` and ``gc`` to ``commands`` (what ``add_subparsers`` returned). ``data_dir`` is their default
    data directory; None makes ``--data-dir`` required. Each sets ``handler(args)``, which exits non-zero on error."""
    serve = commands.add_parser("serve", help="serve the lakeFS REST API from a local data directory")
    add_serve_arguments(serve, data_dir, DEFAULT_PORT)
    serve.set_defaults(handler=serve_command, keys_from_env=True, prog=serve.prog)
    gc = commands.add_parser(
        "gc", help="delete blobs, commits and tree data nothing live references (safe while the server runs)"
    )
    add_data_dir_argument(gc, data_dir)
    gc.add_argument(
        "--retention-days",
        type=float,
        default=DEFAULT_RETENTION_DAYS,
        help=f"keep unreachable commits and unreferenced blobs younger than this (default {DEFAULT_RETENTION_DAYS:g})",
    )
    gc.add_argument("--dry-run", action="store_true", help="report what would be freed, delete nothing")
    gc.set_defaults(handler=gc_command, prog=gc.prog)


def add_data_dir_argument(parser: argparse.ArgumentParser, default: Path | None, required: bool = True) -> None:
    shown = f"default: {default}" if default is not None else "required" if required else "serve with no command"
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default,
        required=required and default is None,
        help=f"metadata and objects ({shown})",
    )


def add_serve_arguments(
    parser: argparse.ArgumentParser, data_dir: Path | None, port: int, required: bool = True
) -> None:
    add_data_dir_argument(parser, data_dir, required)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port}; 0 picks a free one)")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        help="exit after this many seconds without requests and without connected client processes (0: never)",
    )
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync (faster, not power-loss safe)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedded-lakefs", description=__doc__)
    add_serve_arguments(parser, None, 0, required=False)  # the command-less form
    parser.set_defaults(handler=serve_command, keys_from_env=False, prog=parser.prog)
    add_commands(parser.add_subparsers(dest="command", metavar="{serve,gc}"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``embedded-lakefs`` console script and of ``python -m embedded_lakefs``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error("give a command (serve, gc) or --data-dir DIR")
    args.handler(args)
    return 0


def fail(args: argparse.Namespace, reason: str, status: int = 1) -> None:
    print(f"{args.prog}: error: {reason}", file=sys.stderr)
    raise SystemExit(status)


def serve_command(args: argparse.Namespace) -> None:
    """Serve in the foreground until SIGTERM or Ctrl-C (or the idle timeout); one line says where and with which
    keys, never the secret. With ``keys_from_env``, lakectl's key variables, when set, give the keys."""
    from .server import create_server, serve_until_stopped

    keys = [os.environ.get(ACCESS_KEY_VARIABLE), os.environ.get(SECRET_KEY_VARIABLE)] if args.keys_from_env else []
    if any(keys) and not all(keys):
        fail(args, f"set both {ACCESS_KEY_VARIABLE} and {SECRET_KEY_VARIABLE}, or neither", 2)
    keys = keys if any(keys) else []
    data_dir = args.data_dir.resolve()
    created = not data_dir.exists()
    try:
        server = create_server(data_dir, args.host, args.port, *keys, fsync=not args.no_fsync)
    except (RuntimeError, OSError, ValueError, OverflowError) as error:  # dir locked or unusable, port busy
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        if isinstance(error, OSError) and error.filename is not None:
            fail(args, f"{error.filename}: {error.strerror or error}")
        if isinstance(error, OSError):
            fail(args, f"cannot listen on {args.host}:{args.port}: {error.strerror or error}")
        fail(args, str(error))
    if keys:
        where_keys = f"keys from {ACCESS_KEY_VARIABLE} and {SECRET_KEY_VARIABLE}"
    else:
        where_keys = f"access key id {server.access_key_id}, secret in {data_dir / CREDENTIALS_FILE}"
    print(f"lakeFS-compatible server on {server.endpoint} (data in {data_dir}; {where_keys})", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_until_stopped(server, data_dir, args.idle_timeout)


def gc_command(args: argparse.Namespace) -> None:
    """Collect the data directory's garbage (see :mod:`~.gc`) and print what was freed."""
    from .gc import collect_garbage

    if args.retention_days < 0:
        fail(args, f"--retention-days {args.retention_days}: must not be negative", 2)
    try:
        report = collect_garbage(args.data_dir, args.retention_days, dry_run=args.dry_run)
    except (OSError, RuntimeError) as error:
        fail(args, str(error))
    print(f"{args.prog}: {report.summary()} in {args.data_dir}")
