"""Validation report and the error raised when a source holds bad data."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

SURROGATES = range(0xDC80, 0xDD00)  # undecodable bytes of a file name (os.fsdecode's surrogateescape)


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

    def to_text(self) -> str:
        lines = [f"{len(self.issues)} bad file(s) in {self.checked} sample(s) checked ({self.accepted} accepted)"]
        lines += [f"  {issue}" for issue in self.issues]
        return "\n".join(lines)

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


class DataValidationError(ValueError):
    """A source failed validation; `.report` lists every bad file and its reason."""

    def __init__(self, message: str, report: ValidationReport | None = None):
        message = printable(message)
        self.report = report if report is not None else ValidationReport()
        details = "".join(f"\n  {issue}" for issue in self.report.issues)
        super().__init__(message + details)
        self.summary = message
