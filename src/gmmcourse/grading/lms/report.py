"""The import's report: every problem with one entry of the zip, printed and saved, never a
traceback; and `show`, which makes an untrusted name safe to print."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ..spec import GradingError


class LMSImportError(GradingError):
    """The zip or the roster cannot be used at all (printed as one line; exit status 2)."""


@dataclass
class Problem:
    kind: str       # unmapped | rejected | missing | failed | kept | duplicate | renamed | ignored | roster | note
    entry: str      # zip entry name (or roster line), already escaped for printing
    message: str
    student: str | None = None

    @property
    def severe(self) -> bool:
        """Something a student handed in that is not graded (exit status 1)."""
        return self.kind in ("unmapped", "rejected", "failed", "missing")


@dataclass
class ImportReport:
    zip: str
    assignment: str
    lms: str
    imported: list[tuple[str, str, str]] = field(default_factory=list)  # student, action, entry
    problems: list[Problem] = field(default_factory=list)
    folder: Path | None = None

    def add(self, kind: str, entry: str, message: str, student: str | None = None) -> None:
        self.problems.append(Problem(kind, show(entry), message, student))

    @property
    def exit_code(self) -> int:
        return 1 if any(p.severe for p in self.problems) else 0

    def students(self) -> list[str]:
        return sorted({s for s, _, _ in self.imported})

    def text(self) -> str:
        counts: dict[str, int] = {}
        for _, action, _ in self.imported:
            counts[action] = counts.get(action, 0) + 1
        head = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing imported"
        lines = [f"LMS import of {self.zip} for assignment {self.assignment!r} ({self.lms}): {head}"]
        for s, action, entry in sorted(self.imported):
            lines.append(f"  {action:9} {show(s)}  <- {entry}")
        titles = {
            "unmapped": "Not imported: names that map to no student (add them to the roster, then re-import)",
            "rejected": "Rejected entries (unsafe or unreadable; nothing was extracted from them)",
            "missing": "Not imported: no notebook to grade (none, or several with other names)",
            "failed": "Not imported: could not be written",
            "kept": "Kept the submission already in the course (it is newer than the zip's)",
            "duplicate": "Older or extra copies (the newest notebook was imported)",
            "renamed": "Imported under the assignment's notebook name",
            "ignored": "Ignored (not notebooks, or another assignment's)",
            "roster": "Roster problems",
            "note": "Notes",
        }
        for kind, title in titles.items():
            items = [p for p in self.problems if p.kind == kind]
            if not items:
                continue
            lines.append(f"{title}: {len(items)}")
            for p in items:
                who = f" [{show(p.student)}]" if p.student else ""
                lines.append(f"  - {p.entry}{who}: {p.message}")
        if self.folder is not None:
            lines.append(f"report: {self.folder / 'report.txt'}")
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "zip": self.zip, "assignment": self.assignment, "lms": self.lms,
            "imported": [{"student": s, "action": a, "entry": e} for s, a, e in self.imported],
            "problems": [{"kind": p.kind, "entry": p.entry, "message": p.message, "student": p.student}
                         for p in self.problems],
            "exit_code": self.exit_code,
        }


def show(name: str | None) -> str:
    """An untrusted name, printable and short (control characters, bidi marks escaped)."""
    text = "" if name is None else str(name)
    out = ascii(text)[1:-1] if any(not ch.isprintable() or unicodedata.category(ch) == "Cf" for ch in text) else text
    return out if len(out) <= 200 else out[:197] + "..."
