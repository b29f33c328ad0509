"""Nothing a student or a roster wrote runs in an instructor's browser (issue 23, items 3, 4, 7).

Hostile markdown, outputs and names go through the grader's writers (`autograded_notebook`,
`feedback_html`, the gradebook's roster path), then formgrader's own exporter (its
``formgrade`` template, as its submission page renders an autograded notebook) or the feedback
page is opened in headless Chromium: no payload may run on load, or on clicking every link.
"""

from __future__ import annotations

import csv
import html.parser
import json
from pathlib import Path

import nbformat
import pytest

from gmmcourse.grading import html_safety as hs
from gmmcourse.grading.feedback import autograded_notebook, feedback_html, with_instructor_grades

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

P = "window.__pwned=(window.__pwned||0)+1"
"""Every payload runs this (and nothing else): the browser test reads ``window.__pwned``."""

LINK_VECTORS = [
    f"[a](javascript&#58;{P})",
    f"[b](javascript&colon;{P})",
    f"[c](java&#115;cript:{P})",
    f"[d](JaVaScRiPt:{P})",
    f"[e][ref]\n\n[ref]: javascript:{P}",
    f"<a href=\"javascript:{P}\">f</a>",
    f"<a href=\"java&#x09;script:{P}\">g</a>",
    f"<a href=\"data:text/html,<script>{P}</script>\">h</a>",
    "<a href=\"data:text/html;base64,PHNjcmlwdD53aW5kb3cuX19wd25lZD0xPC9zY3JpcHQ+\">i</a>",
    f"<img src=x onerror=\"{P}\">",
    f"<svg><script>{P}</script></svg>",
    f"<iframe srcdoc=\"<script>parent.{P.replace('window.', '')}</script>\"></iframe>",
    f"<form action=\"javascript:{P}\"><button>j</button></form>",
    f"<details open ontoggle=\"{P}\">k</details>",
    f"<style>*{{background:url(javascript:{P})}}</style>",
    f"$\\href{{javascript:{P}}}{{l}}$ and $$\\href{{javascript:{P}}}{{m}}$$",
    f"```\ncode\n\n[n](javascript:{P})\n<img src=x onerror=\"{P}\">\n```\n\n[o](javascript:{P})",
    f"<div>\n\n[p](javascript:{P})\n\n</div>",
    f"<a href=\"vbscript:msgbox(1)\">q</a> ![r](javascript:{P})",
    "[s](/files/submitted/ada/evil.html) [t](evil.html) <img src=\"https://tracker.invalid/p.png\" alt=\"u\">",
]


class _Attrs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(markup: str) -> list[tuple[str, dict]]:
    p = _Attrs()
    p.feed(markup)
    return p.tags


def _assert_inert(markup: str) -> None:
    for tag, attrs in _tags(markup):
        assert tag not in ("script", "style", "iframe", "svg", "form", "object", "embed", "math"), markup
        for k, v in attrs.items():
            assert not k.startswith("on") and k not in ("style", "id", "srcdoc", "action"), (tag, k, v)
            if (tag, k) == ("img", "src"):
                assert (v or "").startswith(("data:image/png;base64,", "data:image/jpeg;base64,")), v
            if k in ("href", "src"):
                low = (v or "").strip().lower()
                assert low.startswith(("http:", "https:", "mailto:", "data:image/")), (tag, k, v)  # never relative
            if k == "class":
                assert tag == "div" and v == "tex2jax_ignore mathjax_ignore", (tag, v)


@pytest.mark.parametrize("md", LINK_VECTORS)
def test_markdown_vectors_become_inert_html_on_one_line(md):
    out = hs.markdown_html(md)
    assert "\n" not in out and out.startswith('<div class="tex2jax_ignore mathjax_ignore">')
    _assert_inert(out)


def test_math_is_left_to_mathjax_never():
    """LaTeX ``\\href`` is only dangerous once MathJax typesets it: student text sits in a div
    MathJax skips, and no student ``class`` can turn it back on."""
    out = hs.markdown_html('<p class="tex2jax_process mathjax_process">$\\href{javascript:x}{y}$</p>')
    assert out.count("class=") == 1 and "tex2jax_process" not in out


def test_inline_raster_images_survive():
    out = hs.markdown_html("![plot](data:image/png;base64,iVBORw0KGgo=)")
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in out


def test_deep_nesting_and_huge_cells_are_capped_plain_text():
    """`"<ul><li>" * 8000` (31 s through bleach) and a 1 MB cell: escaped, truncated plain text
    with a note, never parsed as HTML (the output is asserted, not the time)."""
    for text in ("<ul><li>" * 8000, ("<b>x</b> [y](z) " * 70_000)[:1_000_000]):
        for render in (hs.markdown_html, hs.clean_html):
            out = render(text)
            assert "[autograder: this cell has" in out
            assert [t for t, _ in _tags(out)] == ["div", "p", "em", "pre"]
            assert len(out) < 8 * hs.PLAIN_CHARS
    assert "markdown delimiters" in hs.markdown_html("![" * hs.MAX_CELL_MARKS)  # markdown-it: 0.1 ms each
    deep = "<div>" * (hs.MAX_DEPTH + 1)  # under the tag cap, but no honest cell nests so deep
    assert "more than 64 deep" in hs.clean_html(deep) and "<div><div>" not in hs.clean_html(deep)
    assert "<table><tbody><tr><td>1</td></tr></tbody></table>" in hs.clean_html("<table><tr><td>1</td></tr></table>")
    # what one notebook has rendered is bounded too: characters, delimiters, tags
    for cell, render, shown, n in (
            ("*word* " + "plain " * 9_000, hs.markdown_html, "<em>word</em>", hs.MAX_NOTEBOOK_CHARS // 54_007),
            ("*w* " * 200, hs.markdown_html, "<em>w</em>", hs.MAX_NOTEBOOK_MARKS // 400),
            ("<b>x</b>" * 900, hs.clean_html, "<b>x</b>", hs.MAX_NOTEBOOK_TAGS // 1_800)):
        budget = hs.Budget()
        outs = [render(cell, budget) for _ in range(n + 5)]
        assert sum(shown in o for o in outs) == n and "over its limit" in outs[-1]


def _hostile_notebook() -> nbformat.NotebookNode:
    """A submission with every vector: markdown cells, the written answer, outputs of every
    active type, non-string mime data, lone surrogates, metadata that templates print."""
    cells = [{"cell_type": "markdown", "metadata": {}, "source": v} for v in LINK_VECTORS]
    cells += [
        {"cell_type": "markdown", "source": "\n\n".join(LINK_VECTORS) + "\ud800",
         "metadata": {"nbgrader": {"grade_id": "written", "solution": True, "grade": True, "points": 2}}},
        {"cell_type": "raw", "metadata": {"format": "text/html", "raw_mimetype": "text/html"},
         "source": f"<img src=x onerror=\"{P}\">"},
        {"cell_type": "code", "metadata": {"tags": ["gmmcourse-setup"]}, "source": "%pip install x",
         "execution_count": 1, "outputs": [{"output_type": "display_data", "metadata": {},
                                            "data": {"text/html": f"<img src=x onerror=\"{P}\">SETUP-OUTPUT"}}]},
        {"cell_type": "code", "source": "x = 1 # \ud800", "execution_count": 2,
         "metadata": {"tags": [f'x"><img src=x onerror="{P}">'], "evil": "\udfff"}, "outputs": [
             {"output_type": "display_data", "metadata": {"image/png": {"width": f'1 onerror="{P}"'}},
              "data": {"text/html": {"not": "a string"}, "image/png": "iVBORw0KGgo=",
                       "application/javascript": P, "image/svg+xml": f"<svg onload=\"{P}\"/>",
                       "text/latex": f"$\\href{{javascript:{P}}}{{x}}$"}},
             {"output_type": "execute_result", "execution_count": "2<b>", "metadata": {},
              "data": {"text/html": [f"<a href=\"javascript:{P}\">", "out</a>"], "text/plain": "ok"}},
             {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": LINK_VECTORS[0]}},
             {"output_type": "stream", "name": "<b>", "text": f"<script>{P}</script>\ud800"},
             {"output_type": "error", "ename": "E\ud800", "evalue": f"<img src=x onerror=\"{P}\">",
              "traceback": [f"<script>{P}</script>", 3]},
             {"output_type": "display_data", "data": 7, "metadata": []},
         ]},
    ]
    return nbformat.from_dict({"nbformat": 4, "nbformat_minor": 5, "cells": cells,
                               "metadata": {"widgets": {"x": "\ud800"}, "kernelspec": {"name": "<b>"}}})


def _source_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("YOUR ANSWER HERE", metadata={
        "nbgrader": {"grade_id": "written", "solution": True, "grade": True, "points": 2, "locked": False}})]
    return nb


def test_autograded_notebook_is_total_and_inert():
    """Lone surrogates anywhere, non-string mime data and the set-up cell's outputs: the
    notebook is written (no TypeError, no UnicodeEncodeError), and every rendered part is inert."""
    ag = autograded_notebook(_hostile_notebook(), _source_notebook(), {})
    text = nbformat.writes(ag)
    text.encode("utf-8")  # a lone surrogate would raise here
    nbformat.validate(nbformat.reads(text, as_version=4))
    assert "SETUP-OUTPUT" not in text and "\ufffd" in text
    assert ag.metadata == _source_notebook().metadata
    written = [c for c in ag.cells if (c.metadata.get("nbgrader") or {}).get("grade_id") == "written"]
    assert len(written) == 1 and "tex2jax_ignore" in written[0].source
    for cell in ag.cells:
        assert set(cell.metadata) <= {"tags", "nbgrader"}
        for tag in cell.metadata.get("tags", []):
            assert tag.replace("-", "").replace("_", "").replace(".", "").isalnum(), tag
        if cell.cell_type == "markdown":
            _assert_inert(cell.source)
        for out in cell.get("outputs", []):
            assert out.get("metadata", {}) == {}
            assert set(out.get("data", {})) <= {"text/plain", "text/html", "image/png", "image/jpeg"}
            if "text/html" in out.get("data", {}):
                _assert_inert(out["data"]["text/html"])
            if out.output_type == "stream":
                assert out.name in ("stdout", "stderr")


# --------------------------------------------------------------------------- roster names


def _roster(tmp_path: Path, rows: list[dict]) -> Path:
    p = tmp_path / "roster.csv"
    with open(p, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["student_id", "first_name", "last_name", "email"])
        w.writeheader()
        w.writerows(rows)
    return p


def _save_roster(course: Path, roster: Path):
    """The ``--roster`` path of an LMS import: load, then save into the gradebook."""
    from gmmcourse.grading import lms

    report = lms.ImportReport(zip="class.zip", assignment="a", lms="canvas")
    lms.save_roster(course, lms.load_roster(roster, report), report)
    return report


def test_roster_names_with_markup_are_refused(tmp_path):
    from gmmcourse.grading.gradebook import open_gradebook

    course = tmp_path / "course"
    course.mkdir()
    gb = open_gradebook(course)
    try:
        gb.update_or_create_student("grace", first_name="Grace", last_name="O'Hara-Núñez (Jr.)", email="g@x.org")
        for field in ("first_name", "last_name", "email", "lms_user_id"):
            with pytest.raises(hs.UnsafeName, match="is not a plain name"):
                gb.update_or_create_student("ada", **{field: f"<img src=x onerror=\"{P}\">"})
            with pytest.raises(hs.UnsafeName):
                gb.add_student("eve", **{field: "Eve\x00"})
        assert gb.find_student("grace").last_name == "O'Hara-Núñez (Jr.)"
    finally:
        gb.close()
    report = _save_roster(course, _roster(tmp_path, [{"student_id": "ada", "first_name": f"<img src=x onerror=\"{P}\">",
                                                       "last_name": "Lovelace", "email": ""}]))
    assert "is not a plain name" in report.text()
    assert _names(course).get("ada", ("", ""))[0] in (None, "")


def _names(course: Path) -> dict[str, tuple]:
    import sqlite3

    con = sqlite3.connect(course / "gradebook.db")
    try:
        return {r[0]: (r[1], r[2]) for r in con.execute("select id, first_name, last_name from student")}
    finally:
        con.close()


# --------------------------------------------------------------------------- feedback


def test_feedback_drops_the_graded_later_line_once_graded():
    """Issue 22: after the instructor graded the written answers, the returned feedback no
    longer says they are graded later; while one is still ungraded it says so, once."""
    fb = feedback_html(student="ada", assignment="a", notebook="a.ipynb",
                       parts=[{"grade_id": "p", "points": 3.0, "score": 3.0, "message": "ok"}],
                       score=3.0, max_score=5.0, events=[], manual=["written", "plot"])
    assert "2 more point(s) are graded by an instructor later" in fb
    graded = [{"name": "written", "max_score": 1.0, "score": 1.0, "comment": "good", "hand": True},
              {"name": "plot", "max_score": 1.0, "score": 0.5, "comment": "", "hand": True}]
    for page in (fb, fb.replace("<!-- gmm-manual-pending -->", "").replace("<!-- /gmm-manual-pending -->", "")):
        done = with_instructor_grades(page, graded, 4.5, 5.0)
        assert "graded by an instructor later" not in done and "still to be graded" not in done
        assert "Total score: 4.5 / 5" in done
        half = with_instructor_grades(page, [graded[0], {**graded[1], "score": None}], 4.0, 5.0)
        assert "graded by an instructor later" not in half
        assert half.count("1 more point(s) are still to be graded by an instructor: <code>plot</code>") == 1
        again = with_instructor_grades(half, graded, 4.5, 5.0)  # the feedback command run twice
        assert "still to be graded" not in again and again.count("Graded by an instructor") == 1


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture
def browser():
    """Chromium for one test (Playwright's event loop must not outlive it: the grader's own
    asyncio.run would find it running)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (the browser tests need it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: install the dev extra (make venv)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _formgrade_page(nb: nbformat.NotebookNode, first: str | None = "Ada", last: str | None = "Lovelace") -> str:
    """The notebook as formgrader's submission page renders it: its exporter with the
    ``formgrade`` template and the resources its ``SubmissionHandler`` passes (names included)."""
    from nbconvert.exporters import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers
    from traitlets.config import Config

    c = Config()
    c.HTMLExporter.template_name = "formgrade"
    c.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    resources = {"assignment_id": "a", "notebook_id": "a", "submission_id": "1", "index": 0, "total": 1,
                 "base_url": "", "student": "ada", "last_name": last, "first_name": first, "notebook_path": "a.ipynb"}
    page, _ = HTMLExporter(config=c).from_notebook_node(nb, resources=resources)
    return page


def _ran(browser, page_html: str | None, tmp_path: Path, name: str, url: str | None = None) -> tuple[int, int]:
    """(payloads run on load, payloads run after clicking every link) of a page opened from a
    file with the network cut (or of ``url``, a local server, with every other host cut). A
    control link clicked last proves that the clicks ran."""
    if url is None:
        path = tmp_path / f"{name}.html"
        path.write_text(page_html, encoding="utf-8")
        url = path.as_uri()
    here = url.split("/", 3)[:3]
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.on("dialog", lambda d: d.dismiss())
        ctx.route("**/*", lambda r: r.continue_() if r.request.url.split("/", 3)[:3] == here else r.abort())
        page.goto(url, wait_until="load")
        on_load = page.evaluate("window.__pwned || 0")
        # a link to another page (http, https, file, mailto) runs nothing here; every other
        # link (javascript:, data:, vbscript:, ...) is clicked
        n, away = page.evaluate("""() => {
            const links = [...document.querySelectorAll('a[href], area[href]')];
            const leave = ['http:', 'https:', 'file:', 'mailto:'];
            const stay = links.filter(a => !leave.includes(a.protocol));
            const control = document.createElement('a');
            control.href = 'javascript:window.__control=1';
            document.body.appendChild(control);
            for (const a of stay) { a.target = ''; a.click(); }
            control.click();
            return [stay.length, links.length - stay.length];
        }""")
        assert n + away > 0
        page.wait_for_function("window.__control === 1")
        return on_load, page.evaluate("window.__pwned || 0")
    finally:
        ctx.close()


@pytest.mark.browser
def test_formgrader_page_runs_no_student_script(browser, tmp_path):
    ag = autograded_notebook(_hostile_notebook(), _source_notebook(), {})
    assert _ran(browser, _formgrade_page(ag), tmp_path, "formgrade") == (0, 0)


@pytest.mark.browser
def test_browser_check_sees_a_payload(browser, tmp_path):
    """The check above can fail: the same vectors, unsanitised, run in formgrader's page."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"<a href=\"javascript:{P}\">x</a> <img src=x onerror=\"{P}\">")]
    on_load, clicked = _ran(browser, _formgrade_page(nb), tmp_path, "raw")
    assert on_load >= 1 and clicked >= 2


@pytest.mark.browser
def test_roster_name_never_reaches_formgrader_as_markup(browser, tmp_path):
    """A ``--roster`` name with ``<img onerror>``: refused on import, so formgrader's page
    (which prints names unescaped) shows no markup; a real name with an apostrophe is shown."""
    course = tmp_path / "course"
    course.mkdir()
    _save_roster(course, _roster(tmp_path, [
        {"student_id": "ada", "first_name": f"<img src=x onerror=\"{P}\">", "last_name": "L", "email": ""}]))
    _save_roster(course, _roster(tmp_path, [{"student_id": "bob", "first_name": "Bob", "last_name": "O'Neil",
                                             "email": ""}]))
    names = _names(course)
    nb = autograded_notebook(nbformat.v4.new_notebook(), _source_notebook(), {})
    for sid in ("ada", "bob"):
        first, last = names.get(sid, (None, None))
        page = _formgrade_page(nb, first, last)
        nb_link = '<a href="javascript:window.__nothing=1">x</a>'  # a link to click (the page has none)
        assert _ran(browser, page.replace("</body>", nb_link + "</body>"), tmp_path, sid) == (0, 0)
    assert "O'Neil, Bob" in _formgrade_page(nb, *names["bob"])


@pytest.mark.browser
def test_feedback_page_runs_no_student_script(browser, tmp_path):
    evil = f"<img src=x onerror=\"{P}\"><a href=\"javascript:{P}\">x</a>"
    fb = feedback_html(student=evil, assignment=evil, notebook=evil,
                       parts=[{"grade_id": evil, "description": evil, "points": 1.0, "score": 0.0, "message": evil}],
                       score=0.0, max_score=2.0, events=[evil], reason=evil, manual=[evil])
    fb = with_instructor_grades(fb, [{"name": evil, "max_score": 1.0, "score": None, "comment": evil, "hand": True}],
                                0.0, 2.0)
    fb = fb.replace("</body>", '<a href="https://example.invalid/">a link to click</a></body>')
    assert _ran(browser, fb, tmp_path, "feedback") == (0, 0)
    assert json.dumps(evil)[1:-1] not in fb


# --------------------------------------------------------------------------- one grading run


def test_one_hostile_notebook_never_stops_the_run(tmp_path):
    """Issue 23 item 3: lone surrogates (notebook metadata, markdown, the written answer), a
    cell tagged ``gmmcourse-setup`` with submitted outputs, and a non-string ``text/html``
    output: each student is graded, the autograded notebooks are written (the set-up cell
    without its outputs) and so is the class's CSV."""
    import shutil
    import sys

    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is missing: apt-get install -y bubblewrap (the grading sandbox needs it)")
    sys.path.insert(0, str(Path(__file__).parent))
    from grading_helpers import _grade, scores, toy

    course = toy.write_course(tmp_path, ["solution", "active_content"])

    def put(name, nb):
        d = course / "submitted" / name / "toy"
        d.mkdir(parents=True, exist_ok=True)
        (d / "toy.ipynb").write_text(json.dumps(nb, ensure_ascii=True))  # "\ud800" as JSON escapes

    nb = toy.notebook()
    nb.metadata["evil"] = "\ud800"
    nb.cells[0].source += " \ud800"
    for c in nb.cells:
        if (c.metadata.get("nbgrader") or {}).get("grade_id") == "explain":
            c.source = f"my answer \udfff <img src=x onerror=\"{P}\">"
    put("surrogate", nb)
    nb = toy.notebook(extra_before=["print('hi')"])
    nb.cells[1].metadata["tags"] = ["gmmcourse-setup"]
    nb.cells[1].outputs = [{"output_type": "display_data", "metadata": {}, "data": {"text/html": "<b>SETUP-OUT</b>"}}]
    put("setup_outputs", nb)
    put("html_not_string", toy.notebook(extra_after=[
        "from IPython.display import display\ndisplay({'text/html': {'a': 1}, 'text/plain': 'x'}, raw=True)"]))
    _grade(course)
    assert scores(course) == {"solution": 5.0, "surrogate": 5.0, "setup_outputs": 5.0, "html_not_string": 5.0,
                              "active_content": 5.0}
    for name in ("surrogate", "setup_outputs", "html_not_string", "active_content"):
        ag = nbformat.read(course / "autograded" / name / "toy" / "toy.ipynb", as_version=4)
        assert "SETUP-OUT" not in json.dumps(ag)
        for cell in ag.cells:  # code sources are shown as text; the rest is rendered
            if cell.cell_type == "markdown" and not cell.metadata.get("nbgrader", {}).get("locked"):
                _assert_inert(cell.source)
            for out in cell.get("outputs", []):
                assert "onerror" not in json.dumps(out)
                assert set(out.get("data", {})) <= {"text/plain", "text/html", "image/png", "image/jpeg"}
                _assert_inert(out.get("data", {}).get("text/html", ""))
    assert len((course / "grades.csv").read_text().splitlines()) == 6


@pytest.mark.browser
def test_real_formgrader_runs_no_student_script(browser, tmp_path):
    """Formgrader itself (nbgrader's Jupyter server extension) serving the autograded notebook
    of a hostile submission: nothing runs on load or on clicking. A control submission whose
    notebook is written raw (not through the grader) runs its payload in the same server, so
    the check can fail."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from gmmcourse.grading.gradebook import open_gradebook, record_submission, sync_assignment

    course = tmp_path / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\n")
    src = _source_notebook()
    gb = open_gradebook(course)
    try:
        sync_assignment(gb, "a", "a.ipynb", src)
        ids = {}
        for sid in ("ada", "control"):
            record_submission(gb, student=sid, assignment="a", notebook_name="a.ipynb", sha256="0" * 64, status="ok",
                              reason=None, auto_scores={"written": None}, comments={})
            ids[sid] = gb.find_submission_notebook("a", "a", sid).id
    finally:
        gb.close()
    raw = nbformat.v4.new_notebook()
    raw.cells = [nbformat.v4.new_markdown_cell(f"<a href=\"javascript:{P}\">x</a> <img src=x onerror=\"{P}\">")]
    for sid, nb in (("ada", autograded_notebook(_hostile_notebook(), src, {})), ("control", raw)):
        (course / "autograded" / sid / "a").mkdir(parents=True)
        nbformat.write(nb, course / "autograded" / sid / "a" / "a.ipynb")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "jupyter", "server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--IdentityProvider.token=t0ken", "--ServerApp.jpserver_extensions={'nbgrader.server_extensions.formgrader': True}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(cmd, cwd=course, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        guard = time.monotonic() + 600  # a hang guard: the extension imports slowly on a loaded machine
        while time.monotonic() < guard:
            if server.poll() is not None:
                pytest.fail("jupyter server with formgrader exited: " + (tmp_path / "server.log").read_text()[-2000:])
            try:
                urllib.request.urlopen(f"{base}/api/status?token=t0ken", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("jupyter server with formgrader did not answer: " + (tmp_path / "server.log").read_text()[-2000:])
        pages = {sid: f"{base}/formgrader/submissions/{nid}/?token=t0ken" for sid, nid in ids.items()}
        on_load, clicked = _ran(browser, None, tmp_path, "control", url=pages["control"])
        assert on_load >= 1 and clicked >= 2  # formgrader runs what reaches it
        assert _ran(browser, None, tmp_path, "ada", url=pages["ada"]) == (0, 0)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
