"""Interactive selection (segmodels.pipeline.interactive): real pseudo-terminals and real no-terminal stdins
in child processes, plus formatting and parsing rules on in-memory streams."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from segmodels.pipeline import StepError
from segmodels.pipeline.interactive import choose, format_table

PARAM = "run_id=<id>"
PROMPT = "Choose 1-3 (q to quit): "
NO_TTY = f"ERROR: interactive=true needs a terminal to read a choice from; pass {PARAM} instead"
OVERALL_TIMEOUT = 60.0

CHILD = f"""
import sys, time
from segmodels.pipeline import StepError
from segmodels.pipeline.interactive import choose
rows = [("run-a", 0.91, None), ("run-b", 0.87, "cnn"), ("run-c", 0.5, "unet")]
start = time.monotonic()
try:
    index = choose("Train runs", ["run_id", "iou", "arch"], rows, {PARAM!r})
except StepError as exc:
    print(f"ELAPSED={{time.monotonic() - start:.3f}}", flush=True)
    print(f"ERROR: {{exc}}", flush=True)
    sys.exit(2)
print(f"INDEX={{index}}", flush=True)
"""


@pytest.fixture
def pty_child(pty_process):
    return pty_process([sys.executable, "-c", CHILD])


def test_pty_pick_second_row(pty_child):
    pty_child.expect(PROMPT)
    table = pty_child.output
    assert "Train runs" in table
    assert re.search(r"#\s+run_id\s+iou\s+arch", table)
    assert re.search(r"1\s+run-a\s+0\.91\s+-", table)
    assert re.search(r"3\s+run-c\s+0\.5\s+unet", table)
    pty_child.send("2\n")
    assert pty_child.finish() == 0
    assert "chosen: #2 run-b" in pty_child.output
    assert "INDEX=1" in pty_child.output


def test_pty_invalid_then_valid(pty_child):
    pty_child.expect(PROMPT)
    pty_child.send("9\n")
    pty_child.expect(PROMPT, 2)
    pty_child.send("abc\n")
    pty_child.expect(PROMPT, 3)
    pty_child.send("3\n")
    assert pty_child.finish() == 0
    assert "9 is out of range 1-3" in pty_child.output
    assert "'abc' is not a number" in pty_child.output
    assert "INDEX=2" in pty_child.output


@pytest.mark.parametrize("answer", ["q\n", "quit\n", "\x04"], ids=["q", "quit", "eof"])
def test_pty_quit_or_eof(pty_child, answer):
    pty_child.expect(PROMPT)
    pty_child.send(answer)
    assert pty_child.finish() == 2
    assert "ERROR: no choice made\n" in pty_child.output
    assert "INDEX=" not in pty_child.output


def _check_no_terminal(stdout: str, returncode: int) -> None:
    """The child refused at once: exit 2, nothing printed before the one-line error, within a second."""
    assert returncode == 2, stdout
    elapsed_line, error_line = stdout.splitlines()
    assert error_line == NO_TTY
    assert float(elapsed_line.removeprefix("ELAPSED=")) < 1.0


def test_no_terminal_devnull():
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=OVERALL_TIMEOUT
    )
    _check_no_terminal(proc.stdout, proc.returncode)


def test_no_terminal_open_pipe_does_not_block():
    """A pipe that stays open and is never written to: reading it would block forever."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD], stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        os.close(read_end)
        try:
            stdout, stderr = proc.communicate(timeout=OVERALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("choose() blocked on a stdin that is not a terminal") from None
    finally:
        os.close(write_end)
    _check_no_terminal(stdout, proc.returncode)


class TTYStringIO(io.StringIO):
    """An in-memory stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def _choose(answers: str, rows, columns=("name", "score")) -> tuple[int, str]:
    out = io.StringIO()
    return choose("Title", list(columns), rows, PARAM, stdin=TTYStringIO(answers), stdout=out), out.getvalue()


def test_table_alignment_none_and_truncation():
    long_value = "x" * 100
    lines = format_table(["name", "score"], [("a", None), (long_value, 0.5), ("multi\nline", 12)])
    assert lines[0] == "#  " + "name".ljust(40) + "  score"
    assert lines[1] == "1  " + "a".ljust(40) + "  -"
    assert lines[2] == "2  " + "x" * 37 + "...  0.5"
    assert lines[3] == "3  " + "multi line".ljust(40) + "  12"


def test_number_column_right_aligned():
    lines = format_table(["v"], [(i,) for i in range(10)])
    assert lines[1] == " 1  0"
    assert lines[10] == "10  9"


def test_single_row_empty_line_picks_it():
    index, out = _choose("\n", [("only", 1)])
    assert index == 0
    assert out.endswith("Choose 1-1 (q to quit): chosen: #1 only\n")


def test_empty_line_with_several_rows_is_invalid():
    index, out = _choose("\n 2 \n", [("a", 1), ("b", 2)])
    assert index == 1
    assert "invalid choice: empty answer" in out


def test_three_invalid_answers_give_up():
    with pytest.raises(StepError, match=r"^no valid choice after 3 attempts$"):
        _choose("0\n-1\nx\n2\n", [("a", 1), ("b", 2)])


@pytest.mark.parametrize("answers", ["", "Q\n", "x\nquit\n"])
def test_eof_or_quit(answers):
    with pytest.raises(StepError, match=r"^no choice made$"):
        _choose(answers, [("a", 1), ("b", 2)])


def test_no_rows():
    with pytest.raises(StepError, match=r"^no candidates to choose from \(Title\)$"):
        _choose("1\n", [])


@pytest.mark.parametrize("stdin", [io.StringIO("1\n"), None], ids=["not-a-tty", "sys.stdin-none"])
def test_no_terminal_prints_nothing(stdin, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)
    out = io.StringIO()
    with pytest.raises(StepError, match=r"^interactive=true needs a terminal .*; pass run_id=<id> instead$"):
        choose("Title", ["name"], [("a",)], PARAM, stdin=stdin, stdout=out)
    assert out.getvalue() == ""


def test_closed_terminal_stream():
    stdin = TTYStringIO("1\n")
    stdin.close()
    with pytest.raises(StepError, match="needs a terminal"):
        choose("Title", ["name"], [("a",)], PARAM, stdin=stdin, stdout=io.StringIO())


def test_row_shape_mismatch():
    with pytest.raises(ValueError, match="one value per column"):
        _choose("1\n", [("a",)])
