"""``python -m embedded_lakefs``: the ``embedded-lakefs`` command (see :mod:`embedded_lakefs.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
