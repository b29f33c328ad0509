"""Student feedback (HTML) and the instructor's autograded notebook.

The autograded notebook holds the student's cells made inert (`sanitize_student_notebook`):
an instructor opening it in formgrader runs none of the student's HTML or JavaScript.

Feedback shows, per autograded part, the description, the points and the checker's message,
plus what happened while running the notebook (time limits, crashes). It never contains the
source of hidden tests, the exports or the checks.
"""

from __future__ import annotations

import copy
import html
import os
import re
from pathlib import Path
from typing import Any

import nbformat

__all__ = ["feedback_html", "autograded_notebook", "stage_file", "with_instructor_grades"]


def stage_file(path: Path, text: str) -> Path:
    """Write `text` next to `path` (a temporary name); the caller renames it into place.
    Nothing is left behind when the write fails (a full disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp



_CSS = """
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4rem .6rem;vertical-align:top}
th{background:#f3f3f3;text-align:left}.full{background:#e9f7ec}.part{background:#fff6dd}.zero{background:#fdeaea}
.events li{margin:.2rem 0}.total{font-size:1.2rem;font-weight:600}
"""


def feedback_html(
    *,
    student: str,
    assignment: str,
    notebook: str,
    parts: list[dict[str, Any]],
    score: float,
    max_score: float,
    events: list[str],
    reason: str | None = None,
    manual: list[str] = (),
) -> str:
    """``parts``: dicts with description, grade_id, points, score, message."""
    e = html.escape
    rows = []
    for p in parts:
        cls = "full" if p["score"] >= p["points"] > 0 else ("zero" if p["score"] <= 0 else "part")
        rows.append(
            f'<tr class="{cls}"><td>{e(p["grade_id"])}</td><td>{e(p.get("description") or "")}</td>'
            f'<td>{p["score"]:g} / {p["points"]:g}</td><td>{e(p.get("message") or "")}</td></tr>'
        )
    ev = "".join(f"<li>{e(x)}</li>" for x in events)
    out = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>Feedback: {e(assignment)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Feedback: {e(assignment)}</h1>",
        f"<p>Student: <b>{e(student)}</b> &middot; notebook <code>{e(notebook)}</code></p>",
        f'<p class="total">Autograded score: {score:g} / {sum(p["points"] for p in parts):g}</p>',
    ]
    if reason:
        out.append(f'<p class="zero"><b>Your submission could not be graded:</b> {e(reason)}</p>')
    if rows:
        out.append(
            "<table><tr><th>Part</th><th>What</th><th>Points</th><th>Feedback</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    if manual:
        rest = max_score - sum(p["points"] for p in parts)
        out.append(
            f"<p>{rest:g} more point(s) are graded by an instructor later: "
            + ", ".join(f"<code>{e(m)}</code>" for m in manual)
            + ".</p>"
        )
    if ev:
        out.append(f'<h2>While running your notebook</h2><ul class="events">{ev}</ul>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


_INSTRUCTOR_START, _INSTRUCTOR_END = "<!-- gmm-instructor-grades -->", "<!-- /gmm-instructor-grades -->"


def with_instructor_grades(feedback: str, cells: list[dict[str, Any]], total: float, max_score: float) -> str:
    """The autograder's feedback page with a section of the grades and comments written in
    formgrader (replacing the section an earlier call added). ``cells``: dicts with name,
    max_score, score (None = not graded yet), comment, hand (graded or overridden by hand)."""
    e = html.escape
    start = feedback.find(_INSTRUCTOR_START)
    if start >= 0:
        end = feedback.find(_INSTRUCTOR_END, start)
        feedback = feedback[:start] + feedback[end + len(_INSTRUCTOR_END) + 1 if end >= 0 else len(feedback):]
    rows = []
    for c in cells:
        if c["score"] is None:
            pts, cls = f"not graded yet / {c['max_score']:g}", "part"
        else:
            pts = f"{c['score']:g} / {c['max_score']:g}"
            cls = "full" if c["score"] >= c["max_score"] > 0 else ("zero" if c["score"] <= 0 else "part")
        rows.append(f'<tr class="{cls}"><td>{e(c["name"])}</td><td>{pts}</td><td>{e(c.get("comment") or "")}</td></tr>')
    section = [_INSTRUCTOR_START, "<h2>Graded by an instructor</h2>"]
    if rows:
        section.append("<table><tr><th>Cell</th><th>Points</th><th>Comment</th></tr>" + "".join(rows) + "</table>")
    section.append(f'<p class="total">Total score: {total:g} / {max_score:g}</p>')
    section.append(_INSTRUCTOR_END)
    body = feedback.rfind("</body>")
    if body < 0:
        body = len(feedback)
    return feedback[:body] + "\n".join(section) + "\n" + feedback[body:]


_ACTIVE_URL = re.compile(r"(?i)\b(javascript|vbscript|data\s*:\s*text/html|data\s*:\s*image/svg)\s*:")


def sanitize_student_notebook(nb) -> None:
    """Make the student's part of a notebook inert before an instructor opens it (in place).

    Formgrader renders autograded notebooks as HTML in the instructor's Jupyter session, so
    student markdown, raw cells and outputs must not carry script: HTML is cleaned by
    nbconvert's `SanitizeHTML` (bleach: only safe tags and attributes; ``text/html`` and
    ``text/markdown`` outputs cleaned, JavaScript, SVG, widget views and every other active
    output type removed), markdown links with a ``javascript:``-like scheme are defused, and
    widget state and cell attachments of unknown types are dropped.
    """
    from nbconvert.preprocessors.sanitize import SanitizeHTML

    san = SanitizeHTML()
    for i, cell in enumerate(nb.cells):
        san.preprocess_cell(cell, {}, i)
        if cell.cell_type in ("markdown", "raw"):
            cell.source = _ACTIVE_URL.sub("blocked:", cell.source)
            cell.get("metadata", {}).pop("jupyter", None)
        for out in cell.get("outputs", []):
            md = out.get("metadata")
            if isinstance(md, dict):
                for k in list(md):
                    if k not in out.get("data", {}):
                        md.pop(k)
    nb.metadata.pop("widgets", None)


def autograded_notebook(executed_nb, source_nb, part_results: dict[str, dict]) -> Any:
    """Student cells with their outputs; nbgrader metadata restored from the SOURCE notebook.

    The student's ``nbgrader`` metadata is never trusted: it is dropped from every cell,
    then restored from the source for cells whose ``grade_id`` exists there (first
    occurrence, same cell type). Locked (read-only) and autograder-test cells get the
    source's content back, test cells get the autograder's verdict as output, and grade
    cells the student deleted are appended so that formgrader sees all of them.
    """
    src_cells = {}
    for c in source_nb.cells:
        md = c.get("metadata", {}).get("nbgrader")
        if md and md.get("grade_id") and md["grade_id"] not in src_cells:
            src_cells[md["grade_id"]] = c
    out = copy.deepcopy(executed_nb)
    sanitize_student_notebook(out)
    seen: set[str] = set()
    for cell in out.cells:
        md = cell.get("metadata", {}).pop("nbgrader", None)
        gid = md.get("grade_id") if isinstance(md, dict) else None
        if not isinstance(gid, str) or gid in seen or gid not in src_cells:
            continue
        src = src_cells[gid]
        if src.cell_type != cell.cell_type:
            continue
        seen.add(gid)
        smd = copy.deepcopy(src.metadata["nbgrader"])
        cell.metadata["nbgrader"] = smd
        _restore(cell, src, smd, part_results.get(gid))
    for gid, src in src_cells.items():
        if gid in seen:
            continue
        cell = copy.deepcopy(src)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        if cell.metadata["nbgrader"].get("solution") or cell.metadata["nbgrader"].get("task"):
            # never show the instructor's solution as if it were the student's answer
            cell.source = "# [autograder: this cell was missing from the submission]" if cell.cell_type == "code" \
                else "*[autograder: this cell was missing from the submission]*"
        _restore(cell, src, cell.metadata["nbgrader"], part_results.get(gid))
        out.cells.append(cell)
    for k in ("nbgrader",):
        out.metadata.pop(k, None)
    return out


def _restore(cell, src, smd, result) -> None:
    is_test = smd.get("grade") and not smd.get("solution") and cell.cell_type == "code"
    if smd.get("locked") or is_test:
        cell.source = src.source
    if is_test and result is not None:
        cell.outputs = [
            nbformat.v4.new_output(
                "stream",
                name="stdout",
                text=f"[autograder] {result['score']:g} / {result['points']:g} points. {result.get('message') or ''}\n",
            )
        ]
