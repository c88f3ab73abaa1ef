"""The ``segmodels`` command: ``segmodels lakefs serve``, ``segmodels lakefs gc``, ``segmodels step <name>
[key=value ...]``, ``segmodels lineage <models:/... | lakefs://... | run id>``, ``segmodels compare A B`` and
``segmodels ui``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from embedded_lakefs.gc import DEFAULT_RETENTION_DAYS
from segmodels.home import embedded_server_dir
from segmodels.pipeline import STEPS, run_step_cli


def serve_lakefs(args: argparse.Namespace) -> None:
    """Run the embedded lakeFS-compatible server in the foreground until interrupted."""
    from embedded_lakefs import create_server, serve_until_stopped

    # keys from lakectl's variables when set, else those kept in (or created for) the data dir
    data_dir = args.data_dir or embedded_server_dir()
    try:
        server = create_server(
            data_dir,
            host=args.host,
            port=args.port,
            access_key_id=os.environ.get("LAKECTL_CREDENTIALS_ACCESS_KEY_ID"),
            secret_access_key=os.environ.get("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"),
        )
    except (RuntimeError, OSError, ValueError, OverflowError) as error:  # dir locked / unusable, port busy
        if isinstance(error, OSError) and error.filename is not None:
            reason = f"{error.filename}: {error.strerror or error}"
        elif isinstance(error, OSError):
            reason = f"cannot listen on {args.host}:{args.port}: {error.strerror or error}"
        else:
            reason = str(error)
        print(f"segmodels lakefs serve: error: {reason}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"lakeFS-compatible server on {server.endpoint} (data in {data_dir.resolve()})")
    print("point segmodels, lakectl or any lakeFS client at it with:")
    print(f"  export LAKECTL_SERVER_ENDPOINT_URL={server.endpoint}")
    print(f"  export LAKECTL_CREDENTIALS_ACCESS_KEY_ID={server.access_key_id}")
    print(f"  export LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY={server.secret_access_key}", flush=True)
    serve_until_stopped(server, data_dir)


def collect_lakefs_garbage(args: argparse.Namespace) -> None:
    """Delete what no branch, tag, staging area or recent commit of the embedded server references."""
    from embedded_lakefs.gc import collect_garbage

    data_dir = args.data_dir or embedded_server_dir()
    if args.retention_days < 0:
        print(
            f"segmodels lakefs gc: error: --retention-days {args.retention_days}: must not be negative", file=sys.stderr
        )
        raise SystemExit(2)
    try:
        report = collect_garbage(data_dir, args.retention_days, dry_run=args.dry_run)
    except (OSError, RuntimeError) as error:
        print(f"segmodels lakefs gc: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"segmodels lakefs gc: {report.summary()} in {data_dir}")


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


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="segmodels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    lakefs = commands.add_parser("lakefs", help="the embedded lakeFS-compatible server")
    lakefs_commands = lakefs.add_subparsers(dest="lakefs_command", required=True)
    serve = lakefs_commands.add_parser("serve", help="serve the lakeFS REST API from a local folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where metadata and objects live (default: <segmodels home>/lakefs, the steps' own)",
    )
    serve.set_defaults(handler=serve_lakefs)
    gc = lakefs_commands.add_parser(
        "gc", help="delete blobs, commits and tree data nothing live references (safe while the server runs)"
    )
    gc.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the server's data directory (default: <segmodels home>/lakefs, the steps' own)",
    )
    gc.add_argument(
        "--retention-days",
        type=float,
        default=DEFAULT_RETENTION_DAYS,
        help=f"keep unreachable commits and unreferenced blobs younger than this (default {DEFAULT_RETENTION_DAYS:g})",
    )
    gc.add_argument("--dry-run", action="store_true", help="report what would be freed, delete nothing")
    gc.set_defaults(handler=collect_lakefs_garbage)

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
