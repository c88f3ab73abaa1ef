"""Validation report and the error raised when a source holds bad data."""

from __future__ import annotations

import csv
import io
import re
import reprlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SURROGATES = range(0xDC80, 0xDD00)  # undecodable bytes of a file name (os.fsdecode's surrogateescape)
SHOWN_ISSUES = 5  # issue lines a message shows; the rest are in the report file it names
SHOWN_CHARS = 80  # characters of a user's value a message shows at most


def clipped(value, limit: int = SHOWN_CHARS) -> str:
    """repr of a user's value for a message, at most `limit` characters: built bounded (a huge nested value is
    never formatted whole), then cut with ``...``."""
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother = 3, limit, limit
    shown.maxlist = shown.maxdict = shown.maxtuple = shown.maxset = 6
    text = shown.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text) -> str:
    """`text` as one printable line: undecodable file-name bytes as \\xNN, control and other non-printable
    characters (newlines, escape sequences) escaped, so a hostile name can neither break a line nor a terminal."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif ord(char) in SURROGATES:
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


@dataclass(frozen=True)
class Issue:
    """One bad file and why it was refused."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"

    @property
    def kind(self) -> str:
        """The reason's class, its words before any detail: ``size mismatch``, ``missing mask``, ..."""
        return re.split(r"[:(\[{'\"]", self.reason, maxsplit=1)[0].strip() or self.reason


@dataclass
class ValidationReport:
    """Every problem found while reading a source, in the order found."""

    issues: list[Issue] = field(default_factory=list)
    checked: int = 0
    accepted: int = 0

    def add(self, file: str, reason: str) -> None:
        self.issues.append(Issue(printable(file), printable(reason)))

    def __bool__(self) -> bool:
        return bool(self.issues)

    def __len__(self) -> int:
        return len(self.issues)

    def kinds(self) -> Counter:
        """Issues per reason class (see :attr:`Issue.kind`), most frequent first when iterated with most_common."""
        return Counter(issue.kind for issue in self.issues)

    def to_text(self, full_list: Path | None = None) -> str:
        """A count line, then the first issues and where the full list is when there are more."""
        lines = [f"{len(self.issues)} bad file(s) in {self.checked} sample(s) checked ({self.accepted} accepted)"]
        return "\n".join(lines + issue_lines(self.issues, full_list))

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "reason"])
        writer.writerows((issue.file, issue.reason) for issue in self.issues)
        return buffer.getvalue()

    def to_dict(self) -> dict:
        return {
            "checked": self.checked,
            "accepted": self.accepted,
            "issues": [{"file": issue.file, "reason": issue.reason} for issue in self.issues],
        }


def issue_lines(issues: list[Issue], full_list: Path | None = None) -> list[str]:
    """Indented lines for the first :data:`SHOWN_ISSUES` issues, then one saying how many more and where all are."""
    lines = [f"  {issue}" for issue in issues[:SHOWN_ISSUES]]
    if len(issues) > SHOWN_ISSUES:
        where = f"; full list in {full_list}" if full_list else ""
        lines.append(f"  ... {len(issues) - SHOWN_ISSUES} more{where}")
    return lines


class DataValidationError(ValueError):
    """A source failed validation; `.report` lists every bad file and its reason, `.report_file` (when set) is the
    CSV holding them all. The message is the summary line, then the first few bad files."""

    def __init__(self, message: str, report: ValidationReport | None = None, report_file: Path | None = None):
        message = printable(message)
        self.report = report if report is not None else ValidationReport()
        self.report_file = report_file
        super().__init__("\n".join([message, *issue_lines(self.report.issues, report_file)]))
        self.summary = message
