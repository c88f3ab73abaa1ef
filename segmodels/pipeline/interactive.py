"""Pick one of several candidates from a terminal (the ``interactive=true`` mode of ``register`` and ``infer``).

:func:`choose` prints the candidates as a numbered table and reads the user's pick from stdin. It refuses at
once, before printing anything, when stdin is not a terminal, so a step run from a script, CI or ``mlflow run``
without a tty fails with a hint instead of waiting for input that never comes.
"""

from __future__ import annotations

import sys
from typing import Sequence, TextIO

from segmodels.pipeline import StepError

MAX_CELL_WIDTH = 40  # longer values are cut to this many characters, ending in ELLIPSIS
ELLIPSIS = "..."
MAX_ATTEMPTS = 3
QUIT_WORDS = ("q", "quit")
INSTEAD = {"register": "run_id=<id>", "infer": "model_uri=<uri>"}  # what a step takes instead of interactive=true


def _is_terminal(stream: TextIO | None) -> bool:
    """Whether ``stream`` is an open stream on a terminal (never raises)."""
    if stream is None or getattr(stream, "closed", False):
        return False
    try:
        return bool(stream.isatty())
    except (OSError, ValueError):
        return False


def require_terminal(param: str, stdin: TextIO | None = None) -> None:
    """Raise :class:`StepError` (one line naming ``param``, what to pass instead) unless stdin is a terminal."""
    if not _is_terminal(sys.stdin if stdin is None else stdin):
        raise StepError(f"interactive=true needs a terminal to read a choice from; pass {param} instead")


def timestamp(milliseconds: int | None) -> str:
    """``YYYY-MM-DD HH:MM`` (local time) of an MLflow timestamp."""
    import datetime

    return (
        "-" if milliseconds is None else datetime.datetime.fromtimestamp(milliseconds / 1000).strftime("%Y-%m-%d %H:%M")
    )


def _cell(value: object) -> str:
    """``value`` as one line of table text: ``-`` for None, runs of whitespace (newlines too) as one space."""
    return "-" if value is None else " ".join(str(value).split())


def _truncate(text: str, width: int = MAX_CELL_WIDTH) -> str:
    """``text`` cut to ``width`` characters, the last of them an ellipsis, when it is longer."""
    return text if len(text) <= width else text[: width - len(ELLIPSIS)] + ELLIPSIS


def format_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """The lines of a plain aligned table: a header (``#`` and ``columns``), then rows numbered from 1."""
    table = [["#", *(_truncate(_cell(c)) for c in columns)]]
    table += [[str(n), *(_truncate(_cell(v)) for v in row)] for n, row in enumerate(rows, start=1)]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return [
        "  ".join([line[0].rjust(widths[0]), *(c.ljust(w) for c, w in zip(line[1:], widths[1:]))]).rstrip()
        for line in table
    ]


def _parse(answer: str, count: int) -> int | str:
    """The 0-based index that ``answer`` picks among ``count`` rows, or the reason it picks none."""
    text = answer.strip()
    if not text:
        return 0 if count == 1 else "empty answer: type a number"
    try:
        number = int(text)
    except ValueError:
        return f"{text!r} is not a number"
    if not 1 <= number <= count:
        return f"{number} is out of range 1-{count}"
    return number - 1


def choose(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    param: str,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Show ``rows`` as a numbered table under ``title`` and return the 0-based index the user picks.

    ``param`` is the parameter the user can pass instead (e.g. ``run_id=<id>``); it is named in the error
    raised when stdin is not a terminal. Raises :class:`StepError` (one line) without a terminal, without
    rows, on EOF or ``q``/``quit``, and after :data:`MAX_ATTEMPTS` invalid answers. An empty answer picks
    the only row when there is one.
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    require_terminal(param, stdin)
    if not rows:
        raise StepError(f"no candidates to choose from ({title})")
    if not columns or any(len(row) != len(columns) for row in rows):
        raise ValueError(f"every row needs one value per column ({len(columns)}): {title}")

    print(title, file=stdout)
    for line in format_table(columns, rows):
        print(line, file=stdout)
    for _ in range(MAX_ATTEMPTS):
        stdout.write(f"Choose 1-{len(rows)} (q to quit): ")
        stdout.flush()
        answer = stdin.readline()
        if not answer or answer.strip().lower() in QUIT_WORDS:
            raise StepError("no choice made")
        picked = _parse(answer, len(rows))
        if isinstance(picked, int):
            print(f"chosen: #{picked + 1} {_cell(rows[picked][0])}", file=stdout, flush=True)
            return picked
        print(f"invalid choice: {picked}", file=stdout)
    raise StepError(f"no valid choice after {MAX_ATTEMPTS} attempts")
