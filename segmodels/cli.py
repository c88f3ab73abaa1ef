"""The ``segmodels`` command: ``segmodels lakefs serve``, ``segmodels lakefs gc``, ``segmodels step <name>
[key=value ...]``, ``segmodels lineage <models:/... | lakefs://... | run id>``, ``segmodels compare A B`` and
``segmodels ui``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from embedded_lakefs.cli import add_commands as add_lakefs_commands
from segmodels.home import embedded_server_dir
from segmodels.pipeline import STEPS, run_step_cli


def show_lineage(args: argparse.Namespace) -> None:
    """Print the lineage chain of a model version, a lakeFS commit or a run (MLflow only, no lakeFS)."""
    from segmodels.redaction import redact_text, shown
    from segmodels.tracking.lineage_graph import LineageError, format_json, format_text, trace

    if redact_text(args.ref) != args.ref:
        print(
            f"segmodels lineage: error: {shown(args.ref)}: holds credentials (user info or a secret parameter); "
            "pass models:/<name>/<version>, lakefs://<repo>/<commit> or a run id",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:
        doc = trace(args.ref)
    except LineageError as error:  # the message names the argument: shown cut short, on one line
        message = str(error).replace(args.ref, shown(args.ref)) if args.ref else str(error)
        print(f"segmodels lineage: error: {redact_text(message)}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_json(doc) if args.json else format_text(doc))


def compare_refs(args: argparse.Namespace) -> None:
    """Print two runs, model versions or data commits side by side (``--html FILE``: also as a page)."""
    from segmodels.compare import run_cli

    run_cli(args.a, args.b, args.html)


def serve_ui(args: argparse.Namespace) -> None:
    """Serve the browser of data commits, images, diffs, runs and models until interrupted."""
    from segmodels.ui.app import serve

    serve(args.host, args.port, args.open)


def cache_command(args: argparse.Namespace) -> None:
    """``segmodels cache ls`` / ``gc [--dry-run] [--max-gb N]``: the local cache of lakeFS objects."""
    from segmodels.home import segmodels_home
    from segmodels.versioning import LakeFSError
    from segmodels.versioning.cache import ObjectCache, format_gc, format_listing

    try:
        cache = ObjectCache(segmodels_home() / "cache")
        if args.cache_command == "ls":
            print(format_listing(cache))
        else:
            max_bytes = None if args.max_gb is None else int(args.max_gb * 1e9)
            print(format_gc(cache.gc(max_bytes, dry_run=args.dry_run), args.dry_run))
    except LakeFSError as error:
        print(f"segmodels cache: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="segmodels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    lakefs = commands.add_parser("lakefs", help="the embedded lakeFS-compatible server")
    lakefs_commands = lakefs.add_subparsers(dest="lakefs_command", required=True)
    add_lakefs_commands(lakefs_commands, embedded_server_dir())  # embedded-lakefs' own serve and gc

    step = commands.add_parser("step", help="run a pipeline step outside MLflow Projects")
    step.add_argument("name", choices=STEPS)
    step.add_argument(
        "args", nargs=argparse.REMAINDER, help='Hydra overrides key=value, --<param> value, --overrides "..."'
    )
    step.set_defaults(handler=lambda args: run_step_cli(args.name, args.args))

    lineage = commands.add_parser("lineage", help="print the lineage chain of a model, commit or run (both ways)")
    lineage.add_argument(
        "ref",
        help="models:/<name>/<version>, models:/<name>@<alias>, "
        "lakefs://<repo>/<commit>[/path] (a commit id or >= 8 hex prefix) or a run id "
        "(or its first 8+ hex digits, as report.md shows it)",
    )
    lineage.add_argument("--json", action="store_true", help="print one JSON document (for tools)")
    lineage.set_defaults(handler=show_lineage)

    compare = commands.add_parser("compare", help="two runs, model versions or data commits side by side")
    compare.add_argument(
        "a", help="a run id, models:/<name>/<version>, models:/<name>@<alias> or lakefs://<repo>/<ref>"
    )
    compare.add_argument("b", help="the same kinds as A")
    compare.add_argument("--html", type=Path, default=None, metavar="FILE", help="also write the comparison as HTML")
    compare.set_defaults(handler=compare_refs)

    cache = commands.add_parser("cache", help="the local cache of lakeFS objects (<home>/cache)")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    cache_commands.add_parser("ls", help="views (commits downloaded), objects and bytes against the bound")
    cache_gc = cache_commands.add_parser("gc", help="free views not in use, least recently used first, to the bound")
    cache_gc.add_argument("--dry-run", action="store_true", help="print what would be freed, remove nothing")
    cache_gc.add_argument("--max-gb", type=float, default=None, help="free down to this (default: the bound)")
    cache.set_defaults(handler=cache_command)

    ui = commands.add_parser("ui", help="browse data commits, images with masks, diffs, runs and models locally")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    ui.add_argument("--open", action="store_true", help="open the page in a web browser")
    ui.set_defaults(handler=serve_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``segmodels`` console script."""
    args = build_parser().parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main(sys.argv[1:])
