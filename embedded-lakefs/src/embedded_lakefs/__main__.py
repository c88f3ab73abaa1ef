"""``python -m embedded_lakefs --data-dir DIR [--host H] [--port P] [--idle-timeout S]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .server import create_server, serve_until_stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embedded-lakefs", description=__doc__)
    parser.add_argument("--data-dir", required=True, type=Path, help="metadata and object store directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        help="exit after this many seconds without requests and without connected client processes (0: never)",
    )
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync (faster, not power-loss safe)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = create_server(args.data_dir, args.host, args.port, fsync=not args.no_fsync)
    except (RuntimeError, OSError, ValueError, OverflowError) as exc:
        print(f"embedded_lakefs: {exc}", file=sys.stderr)
        return 1
    serve_until_stopped(server, args.data_dir, args.idle_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
