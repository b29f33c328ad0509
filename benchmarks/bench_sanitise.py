"""How long the grader's own process spends on a hostile student's markdown and HTML
(issue 23, item 4): the worst shapes we know, each through `grading.html_safety` and, for
comparison, through nbconvert's bleach-based ``clean_html`` that the grader used before.

    .venv/bin/python benchmarks/bench_sanitise.py [--bleach]

Prints seconds per case (and writes ``benchmarks/results/sanitise.json`` through ``common.write``). ``--bleach`` also
times bleach, which takes minutes on the nested cases: it is why the caps exist.
"""

from __future__ import annotations

import sys
import time

from common import write
from gmmcourse.grading import html_safety as hs

CASES = {
    "nested_ul_8000": "<ul><li>" * 8000,
    "nested_ul_under_cap": "<ul><li>" * (hs.MAX_CELL_TAGS // 2),
    "markdown_1MB": ("*a* [b](https://x) <i>c</i>\n" * 40_000)[:1_000_000],
    "brackets_64000": "![" * 32_000,
    "image_brackets_under_cap": "![" * (hs.MAX_CELL_MARKS // 2),
    "underscores_under_cap": "_a" * hs.MAX_CELL_MARKS,
    "plain_text_at_cap": ("All plain words here, nothing to parse. " * 2_000)[: hs.MAX_CELL_CHARS],
    "blockquotes_at_cap": "> " * (hs.MAX_CELL_CHARS // 2),
    "formatting_tags_under_cap": "<b><i>" * (hs.MAX_CELL_TAGS // 2),
}


def _worst_notebook() -> float:
    """Cells of the costliest allowed shape until the notebook's budget is spent."""
    budget, cell = hs.Budget(), "![" * (hs.MAX_CELL_MARKS // 2)
    t = time.perf_counter()
    for _ in range(2 * hs.MAX_NOTEBOOK_MARKS // hs.MAX_CELL_MARKS):
        hs.markdown_html(cell, budget)
    return time.perf_counter() - t


def _time(fn, text) -> float:
    t = time.perf_counter()
    fn(text)
    return time.perf_counter() - t


def main() -> None:
    out = {}
    for name, text in CASES.items():
        row = {"chars": len(text), "markdown_html_s": _time(hs.markdown_html, text),
               "clean_html_s": _time(hs.clean_html, text)}
        if "--bleach" in sys.argv:
            from nbconvert.filters.strings import clean_html as bleach_clean

            row["bleach_s"] = _time(bleach_clean, text)
        out[name] = row
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    out["worst_notebook"] = {"markdown_html_s": _worst_notebook()}
    print("worst_notebook", out["worst_notebook"], flush=True)
    write("sanitise", {"cases": out, "bleach_timed": "--bleach" in sys.argv})


if __name__ == "__main__":
    main()
