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
import re
from pathlib import Path
from typing import Any

import nbformat

from gmmcourse.course import SETUP_TAG

from .files import stage
from .html_safety import Budget, clean_html, fix_text, markdown_html, plain_html

__all__ = ["feedback_html", "autograded_notebook", "stage_file", "with_instructor_grades"]


def stage_file(path: Path, text: str) -> Path:
    """`files.stage` for a page of feedback: the caller renames it into place; lone
    surrogates (from a student's text) are written as U+FFFD."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return stage(path, fix_text(text))  # a lone surrogate cannot stop a run


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
            f"{_PENDING_START}<p>{rest:g} more point(s) are graded by an instructor later: "
            + ", ".join(f"<code>{e(m)}</code>" for m in manual)
            + f".</p>{_PENDING_END}"
        )
    if ev:
        out.append(f'<h2>While running your notebook</h2><ul class="events">{ev}</ul>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


_INSTRUCTOR_START, _INSTRUCTOR_END = "<!-- gmm-instructor-grades -->", "<!-- /gmm-instructor-grades -->"
_PENDING_START, _PENDING_END = "<!-- gmm-manual-pending -->", "<!-- /gmm-manual-pending -->"
_PENDING_OLD = re.compile(r"<p>[0-9.e+-]+ more point\(s\) are graded by an instructor later: .*?\.</p>\n?")


def with_instructor_grades(feedback: str, cells: list[dict[str, Any]], total: float, max_score: float) -> str:
    """The autograder's feedback page with a section of the grades and comments written in
    formgrader (replacing the section an earlier call added). ``cells``: dicts with name,
    max_score, score (None = not graded yet), comment, hand (graded or overridden by hand)."""
    e = html.escape
    start = feedback.find(_INSTRUCTOR_START)
    if start >= 0:
        end = feedback.find(_INSTRUCTOR_END, start)
        feedback = feedback[:start] + feedback[end + len(_INSTRUCTOR_END) + 1 if end >= 0 else len(feedback):]
    # the autograder's "graded later" line is out of date once an instructor has graded
    start = feedback.find(_PENDING_START)
    if start >= 0:
        end = feedback.find(_PENDING_END, start)
        feedback = feedback[:start] + feedback[end + len(_PENDING_END) if end >= 0 else len(feedback):]
    feedback = _PENDING_OLD.sub("", feedback)  # pages written before the markers
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
    pending = [c for c in cells if c["score"] is None]
    if pending:
        section.append(f"<p>{sum(c['max_score'] for c in pending):g} more point(s) are still to be graded by an "
                       "instructor: " + ", ".join(f"<code>{e(c['name'])}</code>" for c in pending) + ".</p>")
    section.append(f'<p class="total">Total score: {total:g} / {max_score:g}</p>')
    section.append(_INSTRUCTOR_END)
    body = feedback.rfind("</body>")
    if body < 0:
        body = len(feedback)
    return feedback[:body] + "\n".join(section) + "\n" + feedback[body:]


_TAG = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CELL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_B64 = re.compile(r"^[A-Za-z0-9+/=\s]*$")
MAX_OUTPUT_CHARS = 64_000
"""Text kept per output (stream, error, text/plain); the rest is cut with a note."""


def _text(value) -> str | None:
    """A notebook text field as a ``str`` (nbformat allows a list of lines), or None when it is
    neither (a student's kernel can send any JSON)."""
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        value = "".join(value)
    return fix_text(value) if isinstance(value, str) else None


def _cut(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[:MAX_OUTPUT_CHARS] + f"\n[autograder: {len(text) - MAX_OUTPUT_CHARS:,} more characters not shown]\n"


def _safe_output(out, budget: Budget):
    """A new, inert output built from a student's one (None to drop it): stream and error
    text as text, ``text/html`` and ``text/markdown`` sanitised into ``text/html``, PNG and JPEG
    kept when they are base64 text, ``text/plain`` kept; every other type (JavaScript, SVG,
    LaTeX, widgets) and every output metadata dropped."""
    new = nbformat.v4.new_output
    kind = out.get("output_type") if isinstance(out, dict) else None
    if kind == "stream":
        name = out.get("name") if out.get("name") in ("stdout", "stderr") else "stdout"
        return new("stream", name=name, text=_cut(_text(out.get("text")) or ""))
    if kind == "error":
        tb = out.get("traceback")
        tb = [_cut(fix_text(x)) for x in tb[:200] if isinstance(x, str)] if isinstance(tb, list) else []
        return new("error", ename=_cut(_text(out.get("ename")) or ""), evalue=_cut(_text(out.get("evalue")) or ""),
                   traceback=tb)
    if kind not in ("display_data", "execute_result"):
        return None
    data = out.get("data") if isinstance(out.get("data"), dict) else {}
    safe = {}
    for mime in ("image/png", "image/jpeg"):
        t = _text(data.get(mime))
        if t and len(t) <= 8 * MAX_OUTPUT_CHARS and _B64.match(t):
            safe[mime] = t
    html_t, md_t = _text(data.get("text/html")), _text(data.get("text/markdown"))
    if html_t is not None:
        safe["text/html"] = clean_html(html_t, budget)
    elif md_t is not None:
        safe["text/html"] = markdown_html(md_t, budget)
    plain = _text(data.get("text/plain"))
    if plain is not None:
        safe["text/plain"] = _cut(plain)
    if not safe:
        safe["text/plain"] = "[autograder: an output of a type that is not shown here]"
    if kind == "execute_result":
        count = out.get("execution_count")
        return new(kind, data=safe, execution_count=count if type(count) is int else None)
    return new(kind, data=safe)


def _safe_cell(cell, budget: Budget):
    """A new, inert cell built from a student's one. Markdown becomes sanitised HTML (one line:
    see `html_safety.markdown_html`), raw cells escaped plain text, code keeps its source
    (formgrader highlights it as text) and gets safe outputs (none for the set-up cell, which
    the grader never runs). Only safe tags and the ``nbgrader`` metadata (restored later from
    the source notebook) are kept; attachments are dropped."""
    kind = cell.get("cell_type") if isinstance(cell, dict) else None
    md = cell.get("metadata") if isinstance(cell, dict) and isinstance(cell.get("metadata"), dict) else {}
    source = _text(cell.get("source")) if isinstance(cell, dict) else None
    source = source or ""
    tags = md.get("tags") if isinstance(md.get("tags"), list) else []
    tags = [t for t in tags if isinstance(t, str) and _TAG.match(t)]
    if kind == "code":
        new = nbformat.v4.new_code_cell(source)
        if SETUP_TAG not in tags:  # the published notebooks' set-up cell (never run by the grader)
            outs = cell.get("outputs") if isinstance(cell.get("outputs"), list) else []
            new.outputs = [o for o in (_safe_output(o, budget) for o in outs[:1000]) if o is not None]
        count = cell.get("execution_count")
        new.execution_count = count if type(count) is int else None
    elif kind == "markdown":
        new = nbformat.v4.new_markdown_cell(markdown_html(source, budget))
    else:
        new = nbformat.v4.new_markdown_cell(plain_html(source, "a raw cell, shown as text"))
    if tags:
        new.metadata["tags"] = tags
    if isinstance(md.get("nbgrader"), dict):
        new.metadata["nbgrader"] = md["nbgrader"]  # only its grade_id is read, then replaced
    cid = cell.get("id") if isinstance(cell, dict) else None
    if isinstance(cid, str) and _CELL_ID.match(cid):
        new["id"] = cid
    return new


def sanitize_student_notebook(nb, source_nb=None):
    """The student's notebook rebuilt inert for an instructor's browser: every cell and output
    made new from validated parts (`_safe_cell`), so that nothing a student wrote (HTML,
    JavaScript, LaTeX ``\\href``, ``data:`` URLs, metadata that templates print, lone
    surrogates) reaches formgrader, within one `Budget` of rendered text; the notebook's
    metadata is the source notebook's (trusted) or empty."""
    budget = Budget()
    cells = nb.get("cells") if isinstance(nb, dict) and isinstance(nb.get("cells"), list) else []
    out = nbformat.v4.new_notebook()
    out.cells = [_safe_cell(c, budget) for c in cells]
    if source_nb is not None:
        out.metadata = copy.deepcopy(source_nb.metadata)
    return out


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
    out = sanitize_student_notebook(executed_nb, source_nb)
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
