"""Execute one book chapter without Sphinx, for writing a page and its numbers test.

    .venv/bin/python scripts/run_chapter.py old_faithful /tmp/ch-old_faithful
    GMMCOURSE_EXECUTED=/tmp/ch-old_faithful .venv/bin/python -m pytest tests/test_book_numbers.py -k old_faithful

It writes ``<out>/<page>.ipynb`` and ``<out>/<page>.glue.json`` in the layout of the book's
``_build/jupyter_execute/chapters/``, which the book-number tests read (``GMMCOURSE_EXECUTED``).
The kernel is this environment's ``python3`` with the project's JAX cache, as in the book build.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRAPBOOK = "application/papermill.record/"  # where myst-nb's glue puts the value


def glue_of(nb) -> dict:
    """The page's glued values, as myst-nb writes them into ``<page>.glue.json``."""
    glue = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook")
            if meta:
                data = {k.removeprefix(SCRAPBOOK): v for k, v in o.get("data", {}).items()}
                glue[meta["name"]] = {"output_type": "display_data", "metadata": {"scrapbook": meta}, "data": data}
    return glue


def main(argv=None) -> int:
    import nbformat
    from myst_nb.core.read import read_myst_markdown_notebook
    from nbclient import NotebookClient

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", help="the chapter's name, e.g. old_faithful (chapters/old_faithful.md)")
    ap.add_argument("out", type=Path, help="folder for <page>.ipynb and <page>.glue.json")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = ap.parse_args(argv)
    src = ROOT / "chapters" / f"{args.page}.md"
    if not src.exists():
        ap.error(f"{src} does not exist")
    nb = read_myst_markdown_notebook(src.read_text())
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
    os.environ.pop("MPLBACKEND", None)  # the inline backend, as in the book
    start = time.monotonic()
    NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(src.parent)}}).execute()
    args.out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(args.out / f"{args.page}.ipynb"))
    glue = glue_of(nb)
    (args.out / f"{args.page}.glue.json").write_text(json.dumps(glue, indent=1))
    print(f"executed {args.page} in {time.monotonic() - start:.0f} s; {len(glue)} glued values in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
