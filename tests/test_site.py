"""The publishable course bundle (`make site`, scripts/build_site.py) and the launch buttons.

* The MyST -> plain-notebook conversion resolves every role and directive the chapters use,
  and refuses what it cannot convert (planted examples, no book build needed).
* The student requirements are the lock's pins of the runtime dependencies only; the student
  wheel holds `gmmcourse` without `gmmcourse.grading` and the benchmark baseline.
* The bundle (built from `_build/html` into a temporary folder) holds only the expected files,
  and no file of it, the wheel's files included, leaks solutions, hidden tests or grading code.
* No launch button and no placeholder address in the book while `repository.url` is empty.
* Slow: in a fresh virtual environment with only the requirements (the set-up cell installs the
  wheel from the bundle), every chapter notebook runs top to bottom and every release runs
  with the solution cells of `solutions/` pasted in, its visible tests passing (notebooks
  that passed unchanged are not run again, but one release always runs first, alone; the
  others then run two at a time, the book's slowest pages first).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_site as bs  # noqa: E402
from test_book import scan_for_leaks, solution_fingerprints  # noqa: E402

HTML = ROOT / "_build" / "html"
EXECUTED = ROOT / "_build" / "jupyter_execute"
ASSIGNMENTS = sorted(p.name for p in (ROOT / "exercises").iterdir() if (p / f"{p.name}.ipynb").exists())
PAGES = bs.chapter_pages(ROOT)



def _built() -> bool:
    return (HTML / "index.html").exists() and all(
        (EXECUTED / f"{p}.ipynb").exists() or "{code-cell}" not in (ROOT / f"{p}.md").read_text() for p in PAGES)


pytestmark = pytest.mark.book  # make test runs these after the book build

needs_build = pytest.mark.skipif(not _built(), reason="build the book first (scripts/build_book.sh)")


# ----------------------------------------------------------------------------- conversion


def _fake_course(tmp_path: Path) -> Path:
    root = tmp_path / "course"
    (root / "chapters").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "exercises" / "hw").mkdir(parents=True)
    (root / "_config.yml").write_text("bibtex_bibfiles:\n  - refs.bib\nrepository:\n  url: ''\n")
    (root / "refs.bib").write_text(
        "@article{neal2000, author={Neal, Radford M.}, title={Markov chain sampling}, journal={JCGS}, year={2000}}\n"
        "@book{bishop2006, author={Bishop, Christopher M.}, title={Pattern Recognition}, publisher={Springer}, year={2006}}\n")
    (root / "src" / "mod.py").write_text("import os\n\n\ndef shown(x):\n    return x + 1\n\n\ndef other():\n    pass\n")
    (root / "chapters" / "one.md").write_text("(one)=\n# Chapter One\n")
    (root / "chapters" / "two.md").write_text("(two)=\n# The Second Chapter\n")
    return root


def _executed(md_cells: list[str], glue: dict) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("from myst_nb import glue\nn = 3\nglue('n', n, display=False)")
    code.outputs = [nbformat.v4.new_output("display_data", data={"application/papermill.record/" + k: v
                                                                  for k, v in mime.items()},
                                           metadata={"scrapbook": {"name": key,
                                                                   "mime_prefix": "application/papermill.record/"}})
                    for key, mime in glue.items()]
    nb.cells = [nbformat.v4.new_markdown_cell(c) for c in md_cells] + [code]
    return nb


def test_chapter_conversion_resolves_myst(tmp_path):
    root = _fake_course(tmp_path)
    conv = bs.ChapterConverter(root)
    md = ("(two)=\n# Title\n\nWe saw {glue:text}`n` points, mean {glue:text}`m:.2f`; "
          "device {glue:md}`dev`. See {ref}`one` and {ref}`the other <two>` {cite:p}`neal2000,bishop2006`.\n\n"
          "```{literalinclude} ../src/mod.py\n:language: python\n:pyobject: shown\n```\n\n"
          "```{exercise} Do it\n:label: ex1\n\nGet {download}`hw.ipynb <../exercises/hw/hw.ipynb>`.\n```\n\n"
          ":::{dropdown} Solution\nIt is {glue:text}`n`.\n:::\n\n"
          "```python\nkeep = {'a': 1}  # {ref}`not-a-role-in-code`\n```\n")
    glue = {"n": {"text/plain": "20"}, "m": {"text/plain": "3.14159"}, "dev": {"text/markdown": "**cpu**"}}
    nb = conv.notebook(_executed([md], glue), root / "chapters" / "two.md")
    text = nb.cells[0].source
    assert "We saw 20 points, mean 3.14;" in text
    assert "device **cpu**" in text
    assert "[Chapter One](one.ipynb)" in text and "[the other](two.ipynb)" in text
    assert "([Neal, 2000; Bishop, 2006](references.ipynb))" in text
    assert "```python\ndef shown(x):\n    return x + 1\n```" in text and "def other" not in text
    assert "> **Exercise 1: Do it**" in text and "[hw.ipynb](../exercises/hw/hw.ipynb)" in text
    assert "> **Solution**\n>\n> It is 20." in text
    assert "{ref}`not-a-role-in-code`" in text          # code blocks are left alone
    assert "(two)=" not in text and ":label:" not in text
    assert nb.cells[1].source == "n = 3"          # the computation stays, the book's glue goes
    assert bs.residual_myst(nb) == []


def test_exercise_labels_and_listings_convert(tmp_path):
    """A {ref} to an exercise's :label: links to its chapter under the exercise's title; a
    {code-block} listing (not run, e.g. Stan) becomes a fenced block. Both stopped the site's
    build when the practice exercises got labels and the Stan/PyMC page its listings."""
    root = _fake_course(tmp_path)
    (root / "chapters" / "one.md").write_text("(one)=\n# Chapter One\n\n```{exercise} Three blends\n:label: ex_blends\n\nDo it.\n```\n")
    md = ("See {ref}`ex_blends`.\n\n```{code-block} stan\n:caption: The model in Stan\n\ndata { int N; }\n```\n")
    text = bs.ChapterConverter(root).notebook(_executed([md], {}), root / "chapters" / "two.md").cells[0].source
    assert "See [Three blends](one.ipynb)." in text
    assert "*The model in Stan*\n\n```stan\ndata { int N; }\n```" in text


def test_links_between_notebooks_point_at_the_site(tmp_path):
    """In Colab or a notebook downloaded on its own a relative link is dead: with the site's
    address set, links to chapters go to their pages on the site, exercises to their notebooks."""
    root = _fake_course(tmp_path)
    md = "See {ref}`one`, {cite:p}`neal2000`, {download}`hw.ipynb <../exercises/hw/hw.ipynb>`."
    text = bs.ChapterConverter(root, "https://course.example.org/").notebook(
        _executed([md], {}), root / "chapters" / "two.md").cells[0].source
    assert text == ("See [Chapter One](https://course.example.org/chapters/one.html), "
                    "([Neal, 2000](https://course.example.org/chapters/references.html)), "
                    "[hw.ipynb](https://course.example.org/notebooks/exercises/hw/hw.ipynb).")


def test_glue_is_stripped_from_the_plain_notebooks(tmp_path):
    src = ("from myst_nb import glue\nimport numpy as np\nfor p in (1, 2):\n    r = p * 2\n"
           "    glue(f'a_{p}', r, display=False)\n    glue(\n        'b', r,\n        display=False,\n    )\n"
           "if r:\n    glue('c', r, display=False)\nelse:\n    print(r)\n%time y = 1\nglue('d', 1, display=False)")
    assert bs.strip_glue(src) == ("import numpy as np\nfor p in (1, 2):\n    r = p * 2\nif r:\n    pass\n"
                                  "else:\n    print(r)\n%time y = 1")
    assert bs.strip_glue("from myst_nb import glue\nglue('a', 1, display=False)") == ""
    with pytest.raises(bs.ConversionError, match="shares line 1"):
        bs.strip_glue("x = 1; glue('a', x)")
    # a cell that only glued is dropped from the notebook
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from myst_nb import glue\n# for the text\nglue('a', 1, display=False)")]
    assert bs.ChapterConverter(_fake_course(tmp_path)).notebook(nb, ROOT / "chapters" / "x.md").cells == []


@pytest.mark.parametrize("md", ["{unknownrole}`x`", "{glue:text}`missing`", "{ref}`nowhere`", "{cite:p}`nobody1999`",
                                "```{figure} x.png\n```", "{download}`s <../solutions/x.ipynb>`",
                                "```{literalinclude} ../src/gmmcourse/grading/checks.py\n```"])
def test_chapter_conversion_refuses_what_it_cannot_convert(tmp_path, md):
    root = _fake_course(tmp_path)
    (root / "solutions").mkdir()
    with pytest.raises(bs.ConversionError):
        bs.ChapterConverter(root).notebook(_executed([md], {}), root / "chapters" / "one.md")


def test_residual_myst_is_flagged():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("left {glue:text}`x` here"),
                nbformat.v4.new_markdown_cell(":::{note}\nhi\n:::"),
                nbformat.v4.new_code_cell("from myst_nb import glue"),
                nbformat.v4.new_code_cell("g = 1\nprint(glue)"),
                nbformat.v4.new_markdown_cell("see [the EM chapter](em_and_selection.md#bic) and "
                                              "[a site page](https://x.org/a.md), [here](#top)")]
    assert len(bs.residual_myst(nb)) == 5


# ----------------------------------------------------------------------------- student package


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line):
            pins[bs._normalise(m.group(1))] = m.group(2)
    return pins


def _pins(text: str) -> dict[str, str]:
    return {bs._normalise(a): b for a, b in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)}


def test_student_requirements_are_the_locks_runtime_pins():
    student, lock = _pins(bs.student_requirements(ROOT)), _lock_pins()
    assert {"genjax", "jax", "jaxlib", "numpy", "scipy", "pandas", "arviz", "matplotlib"} <= set(student)
    assert all(lock[n] == v for n, v in student.items()), "a pin differs from requirements.lock"
    assert "numpyro" in student  # the compare extra's (the Stan and PyMC chapter)
    for instructor_only in ("nbgrader", "jupyter-book", "sphinx", "pytest", "dask",
                            "playwright", "nbclient", "ipykernel", "myst-nb"):
        assert instructor_only not in student, instructor_only


def test_a_notebook_gets_the_extras_its_imports_need_and_an_unprovided_import_is_refused():
    assert bs.student_extras_for(["gmmcourse", "jax", "genjax", "sklearn", "arviz_stats"], ROOT) == []
    assert bs.student_extras_for(["gmmcourse", "numpyro", "scipy"], ROOT) == ["compare"]
    with pytest.raises(bs.UnprovidedImport, match="chapters/x.md imports nbgrader, dask, which neither"):
        bs.student_extras_for(["gmmcourse", "nbgrader", "dask"], ROOT, where="chapters/x.md")


def test_student_wheel_contents(tmp_path):
    wheel = bs.build_student_wheel(tmp_path, ROOT)
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name == bs.wheel_name(ROOT)
    assert "gmmcourse/__init__.py" in names and "gmmcourse/gibbs.py" in names
    assert not [n for n in names if n.startswith("gmmcourse/grading") or n == "gmmcourse/plain.py"], names
    assert all(n.startswith(("gmmcourse/", "gmmcourse-")) for n in names)
    version = wheel.name.split("-")[1]
    meta = zipfile.ZipFile(wheel).read(f"gmmcourse-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in meta  # the dist-info folder, the metadata and the file name agree
    assert "Requires-Dist: genjax" in meta and 'extra == "gpu"' in meta and "nbgrader" not in meta
    assert "Provides-Extra: compare\nRequires-Dist: numpyro; extra == \"compare\"" in meta
    assert bs.build_student_wheel(tmp_path / "again", ROOT).read_bytes() == wheel.read_bytes()  # reproducible


def test_the_command_line_runs_as_make_site_runs_it(tmp_path):
    """`$(PY) scripts/build_site.py` from another folder: the script finds its package
    (scripts/coursesite) and refuses a missing book in one line."""
    script = ROOT / "scripts" / "build_site.py"
    res = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0 and "Assemble the publishable course bundle" in res.stdout, res.stderr
    from coursesite import bundle

    with pytest.raises(FileNotFoundError, match="has no built book: run scripts/build_book.sh first"):
        bundle.build_site(tmp_path / "site", ROOT, html=tmp_path / "no-html")


# ----------------------------------------------------------------------------- launch buttons and set-up cell


def test_launch_urls_point_at_the_plain_notebooks():
    sys.path.insert(0, str(ROOT / "chapters" / "_ext"))
    import course_launch

    launch = {"binderhub_url": "https://mybinder.org", "colab_url": "https://colab.research.google.com",
              "jupyterhub_url": "https://hub.example.org", "notebook_interface": "jupyterlab"}
    urls = dict(course_launch.launch_urls("chapters/intro", ("me", "gmm", "gh-pages"), launch))
    assert urls["Colab"] == "https://colab.research.google.com/github/me/gmm/blob/gh-pages/notebooks/chapters/intro.ipynb"
    assert urls["Binder"] == "https://mybinder.org/v2/gh/me/gmm/gh-pages?urlpath=lab/tree/notebooks/chapters/intro.ipynb"
    assert urls["JupyterHub"].startswith("https://hub.example.org/hub/user-redirect/git-pull?repo=https%3A//github.com/me/gmm")
    assert "urlpath=lab/tree/gmm/notebooks/chapters/intro.ipynb" in urls["JupyterHub"]
    assert course_launch.launch_urls("chapters/intro", None, launch) == []
    assert bs.published_repository({"repository": {"url": ""}}) is None
    assert bs.site_url({"repository": {"url": "https://github.com/me/gmm", "branch": "pages"}}) == \
        "https://me.github.io/gmm"
    assert bs.site_url({"repository": {"url": "https://github.com/me/gmm"}, "html": {"baseurl": "https://u.edu/c/"}}) == \
        "https://u.edu/c"


@pytest.mark.parametrize("url", ["", "https://github.com/me/gmm"])
def test_launch_extension_events(url, tmp_path):
    """chapters/_ext/course_launch.py: the theme's own buttons off, ours only when published."""
    from types import SimpleNamespace

    sys.path.insert(0, str(ROOT / "chapters" / "_ext"))
    import course_launch

    theme = {"repository_url": url, "repository_branch": "gh-pages", "use_repository_button": False,
             "launch_buttons": {"binderhub_url": "https://mybinder.org", "colab_url": "https://colab.research.google.com"}}
    config = SimpleNamespace(html_theme_options=theme)
    app = SimpleNamespace(config=config, outdir=str(tmp_path / "html"),
                          env=SimpleNamespace(metadata={"chapters/intro": {"kernelspec": {}}, "genindex": {}}))
    course_launch._config_inited(app, config)
    assert theme["launch_buttons"] == {}  # sphinx-book-theme adds none (they would open the .md sources)
    assert theme["use_repository_button"] is bool(url)
    for page in ("chapters/intro", "genindex"):
        context = {"header_buttons": []}
        course_launch._add_launch_buttons(app, page, "page.html", context, None)
        urls = [b["url"] for g in context["header_buttons"] for b in g["buttons"]]
        if url and page == "chapters/intro":
            assert urls == ["https://mybinder.org/v2/gh/me/gmm/gh-pages?urlpath=lab/tree/notebooks/chapters/intro.ipynb",
                            "https://colab.research.google.com/github/me/gmm/blob/gh-pages/notebooks/chapters/intro.ipynb"]
        else:
            assert urls == []


@needs_build
def test_no_placeholder_and_no_launch_buttons_while_unpublished():
    config = bs.load_config(ROOT)
    pages = [HTML / f"{p}.html" for p in PAGES]
    text = "\n".join(p.read_text() for p in pages)
    placeholders = [f"{p.relative_to(HTML)}: {a}" for p in pages for a in ("gmm-course/gmm-course", "executablebooks/jupyter-book")
                    if a in p.read_text()]
    assert not placeholders, f"placeholder addresses in the book (chapter text or _config.yml): {placeholders}"
    if bs.published_repository(config) is None:
        assert "colab.research.google.com" not in text and "mybinder.org" not in text
        assert "launch-buttons" not in text
    else:  # published: every chapter page launches its plain notebook
        owner, repo, branch = bs.published_repository(config)
        for page, p in zip(PAGES, pages):
            assert f"github/{owner}/{repo}/blob/{branch}/notebooks/{page}.ipynb" in p.read_text()


# (the set-up cell itself: tests/test_setup_cell.py)


# ----------------------------------------------------------------------------- the bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    if not _built():
        pytest.skip("build the book first (scripts/build_book.sh)")
    return bs.build_site(tmp_path_factory.mktemp("bundle") / "site", ROOT)


def _expected(rel: str) -> bool:
    chapters = "|".join(re.escape(p) for p in PAGES)
    aids = "|".join(map(re.escape, ASSIGNMENTS))
    wheel = re.escape(bs.wheel_name(ROOT))
    patterns = [
        r"\.nojekyll", r"index\.html", r"genindex\.html", r"search\.html", r"searchindex\.js", r"objects\.inv",
        r"favicon\.ico",
        rf"(?:{chapters})\.html",
        rf"_sources/(?:{chapters})\.ipynb",            # the download menu's notebooks; no .md sources
        r"_static/.+", r"_images/[\w.-]+\.(?:png|svg|jpg)",
        rf"_downloads/[0-9a-f]+/(?:{aids})\.ipynb",
        rf"notebooks/(?:{chapters})\.ipynb",
        rf"notebooks/exercises/({aids})/\1\.ipynb",
        rf"student/{wheel}", r"student/requirements-(?:student|core)\.txt", r"student/latest\.json",
        r"binder/runtime\.txt", r"binder/requirements\.txt",
    ]
    return any(re.fullmatch(p, rel) for p in patterns)


def test_bundle_holds_only_student_files(bundle):
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    unexpected = [f for f in files if not _expected(f)]
    assert not unexpected, f"unexpected files in the bundle: {unexpected[:20]}"
    for required in ([f"notebooks/{p}.ipynb" for p in PAGES] + [f"notebooks/exercises/{a}/{a}.ipynb" for a in ASSIGNMENTS]
                     + [f"student/{bs.wheel_name(ROOT)}", "student/requirements-student.txt", "student/requirements-core.txt",
                        "student/latest.json", "index.html"]):
        assert required in files, required
    # _static holds the themes' assets only: no notebooks, no course Python
    assert not [f for f in files if f.startswith("_static/") and f.endswith((".ipynb", ".py", ".md"))]


def test_bundle_listing_check_can_fail():
    assert not _expected("solutions/coffee_blends/coffee_blends.ipynb")
    assert not _expected("student/gmmcourse-0.1.0-py3-none-any.whl.bak")
    assert not _expected("notebooks/exercises/coffee_blends/other.ipynb")
    assert not _expected("reports/chapters/intro.err.log")


def _scan_other_files(site: Path, lines, idents) -> list[str]:
    """The files scan_for_leaks skips (no text suffix: fonts, images, objects.inv, ...), as raw bytes."""
    from test_book import MARKERS, SKIP_DIRS, TEXT_SUFFIXES

    found = []
    ident_re = re.compile(rb"\b(" + b"|".join(re.escape(i.encode()) for i in sorted(idents)) + rb")\b") if idents else None
    for path in sorted(site.rglob("*")):
        if not path.is_file() or path.suffix.lower() in TEXT_SUFFIXES or SKIP_DIRS & set(path.relative_to(site).parts):
            continue
        data = path.read_bytes()
        if path.name == "objects.inv":  # zlib-compressed after four header lines
            import zlib

            head = b"".join(data.splitlines(keepends=True)[:4])
            data = head + zlib.decompress(data[len(head):])
        rel = path.relative_to(site).as_posix()
        found += [f"{rel}: marker {m!r}" for m in MARKERS if m.encode() in data]
        found += [f"{rel}: solution line {ln!r}" for ln in lines if ln.encode() in data]
        if ident_re is not None:
            found += [f"{rel}: solution-only identifier {m!r}" for m in set(ident_re.findall(data))]
    return found


def test_bundle_and_wheel_leak_nothing(bundle, tmp_path):
    lines, idents = solution_fingerprints()
    wheel_dir = tmp_path / "wheel"
    with zipfile.ZipFile(bundle / "student" / bs.wheel_name(ROOT)) as zf:
        zf.extractall(wheel_dir)
    assert (wheel_dir / "gmmcourse" / "gibbs.py").exists()
    found = scan_for_leaks(bundle, lines, idents) + scan_for_leaks(wheel_dir, lines, idents)
    found += _scan_other_files(bundle, lines, idents)
    assert not found, "leaks in the bundle:\n" + "\n".join(found[:50])
    # and the scan does reach inside the bundle's notebooks and the wheel's modules
    planted = wheel_dir / "gmmcourse" / "planted.py"
    planted.write_text("from gmmcourse.grading.local import run_check\n")
    assert scan_for_leaks(wheel_dir, lines, idents)
    (wheel_dir / "font.woff").write_bytes(b"\x00\x01### BEGIN HIDDEN TESTS\x00")
    assert _scan_other_files(wheel_dir, lines, idents)


def test_every_bundle_notebook_starts_with_the_setup_cell_and_is_plain(bundle):
    for path in sorted((bundle / "notebooks").rglob("*.ipynb")) + sorted((bundle / "_downloads").rglob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
        note, first = nb.cells[0], nb.cells[1]
        assert note.cell_type == "markdown" and "Python 3.12" in note.source and bs.SETUP_TAG in note.metadata["tags"], path
        assert first.cell_type == "code" and bs.SETUP_TAG in first.metadata.get("tags", []), path
        assert "NEEDED = [" in first.source and '["gpu"]' in first.source
        needed = ast.literal_eval(re.search(r"^NEEDED = (\[.*?\])", first.source, re.M).group(1))
        extras = ast.literal_eval(re.search(r"^EXTRAS = (\[.*?\])", first.source, re.M).group(1))
        assert extras == bs.student_extras_for(needed, ROOT), (path, needed, extras)
        assert bs.residual_myst(nb) == [], (path, bs.residual_myst(nb))
        rel = path.relative_to(bundle)
        # where the notebook's imports are importable (here, as in the grader's sandbox) it does nothing
        res = subprocess.run([sys.executable, "-c", first.source], capture_output=True, text=True, cwd=path.parent)
        assert res.returncode == 0 and res.stdout.startswith("[set-up] ready"), (rel, res.stdout, res.stderr)
        bundle_dir = re.search(r"^BUNDLE = '([^']*)'", first.source, re.M).group(1)
        assert (path.parent / bundle_dir / "latest.json").exists(), f"{rel}: set-up cell's bundle path is wrong"
        assert (path.parent / bundle_dir / bs.wheel_name(ROOT)).exists(), f"{rel}: set-up cell's bundle path is wrong"
    stan = nbformat.read(str(bundle / "notebooks" / "chapters" / "stan_pymc.ipynb"), as_version=4)
    assert "\nEXTRAS = ['compare']" in stan.cells[1].source  # its NumPyro model: gmmcourse[compare]
    for page in PAGES:
        nb = nbformat.read(str(bundle / "notebooks" / f"{page}.ipynb"), as_version=4)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


# ----------------------------------------------------------------------------- fresh environment


def _solution_sources(aid: str) -> dict[str, str]:
    nb = nbformat.read(str(ROOT / "solutions" / aid / f"{aid}.ipynb"), as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}


@pytest.fixture(scope="module")
def student_kernel(bundle, tmp_path_factory):
    """A fresh venv with requirements-student.txt (+ ipykernel to run notebooks), as a kernel."""
    uv = ROOT / ".venv" / "bin" / "uv"
    if not uv.exists():
        pytest.fail("uv is missing from .venv (it makes the fresh student venv): run `make venv`")
    tmp = tmp_path_factory.mktemp("student")
    venv, py = tmp / "venv", tmp / "venv" / "bin" / "python"
    env = dict(os.environ, UV_LINK_MODE="copy")
    cmd = [str(uv), "venv", "-q", "--seed", "--python", sys.executable, str(venv)]
    if subprocess.run(cmd + ["--offline"], env=env, capture_output=True).returncode != 0:
        subprocess.run(cmd + ["--clear"], check=True, env=env)
    reqs = bundle / "student" / "requirements-student.txt"

    def install(*args):  # from uv's cache when it holds everything (offline, fast), else from the index
        cmd = [str(uv), "pip", "install", "-q", "--python", str(py), *args]
        if subprocess.run(cmd + ["--offline"], env=env, capture_output=True).returncode != 0:
            subprocess.run(cmd, check=True, env=env)

    install("-r", str(reqs))
    frozen = _pins(subprocess.run([str(uv), "pip", "freeze", "--python", str(py)], check=True, env=env,
                                  capture_output=True, text=True).stdout)
    frozen = {k: v for k, v in frozen.items() if k not in ("pip", "setuptools", "wheel")}
    assert frozen == _pins(reqs.read_text()), "requirements-student.txt is not closed under its dependencies"
    kernel_pins = {n: v for n, v in _lock_pins().items() if n in ("ipykernel",)}
    install("-c", str(ROOT / "requirements.lock"), *(f"{n}=={v}" for n, v in kernel_pins.items()))
    spec = tmp / "jupyter" / "kernels" / "gmm-student"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(py), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "gmm-course student", "language": "python"}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(tmp / "jupyter") + (os.pathsep + old if old else "")
    yield py
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def _execute(path: Path, nb: nbformat.NotebookNode | None = None, kernel: str = "gmm-student") -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nb or nbformat.read(str(path), as_version=4)
    # kernels use the inline backend, as for students: no MPLBACKEND in the kernel's environment
    # (passed to this kernel only: notebooks run side by side, in threads, share os.environ)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    NotebookClient(nb, timeout=900, kernel_name=kernel, allow_errors=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
    return nb


# The notebooks run SIDE_BY_SIDE at a time (each kernel is mostly one busy thread, and the tests
# beside this one are over by the time it runs), the slowest first, on no more workers than
# this process has cores.
SIDE_BY_SIDE = 2


def _workers() -> int:
    """How many notebooks run at once: SIDE_BY_SIDE, at most the cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no CPU affinity on macOS and Windows
        cores = os.cpu_count() or 1
    return max(1, min(SIDE_BY_SIDE, cores))


def _book_seconds(cache: Path = ROOT / "_build" / ".jupyter_cache") -> dict[str, float]:
    """Each page's execution time in the last book build (jupyter-cache keeps it in its
    records' data): page (``chapters/intro``) -> seconds; {} where there is no such cache."""
    from jupyter_cache import get_cache

    if not (cache / "global.db").exists():
        return {}
    seconds: dict[str, tuple] = {}
    for rec in get_cache(str(cache)).list_cache_records():
        try:
            page = Path(rec.uri).resolve().relative_to(ROOT).with_suffix("").as_posix()
        except ValueError:  # a page of another checkout
            continue
        if page not in seconds or rec.created > seconds[page][0]:  # the latest execution
            seconds[page] = (rec.created, float((rec.data or {}).get("execution_seconds", 0.0)))
    return {page: s for page, (_, s) in seconds.items()}


def _slowest_first(notebooks: list, seconds: dict[str, float]) -> list:
    """(rel, nb) pairs ordered by the book's execution time of their page, slowest first;
    the releases (not pages of the book) keep their order after the pages."""
    def page(rel: str) -> str:
        return rel.removeprefix("notebooks/").removesuffix(".ipynb")

    return sorted(notebooks, key=lambda item: -seconds.get(page(item[0]), -1.0))


def _side_by_side(jobs: list, run, workers: int):
    """run(*job) for every job, at most `workers` at a time, started in the list's order;
    yields (job, None) or (job, "ExceptionName: message") as each finishes."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    def one(job):
        try:
            run(*job)
        except Exception as exc:  # noqa: BLE001 - report every failing notebook
            return f"{type(exc).__name__}: {str(exc)[-1500:]}"
        return None

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notebook") as pool:
        futures = {pool.submit(one, job): job for job in jobs}  # the pool starts them in this order
        for future in as_completed(futures):
            yield futures[future], future.result()


# Notebooks that passed, keyed on what ran: their cells, the wheel and the pins (like the book's
# jupyter-cache, an unchanged notebook is not re-executed; GMM_SITE_RERUN=1 re-runs them all).
# ALWAYS runs first on every run, cached or not: its set-up cell installs the wheel from the
# bundle into the fresh venv, so the test never passes having run nothing.
PASSED = ROOT / "_build" / ".student-notebooks-passed.json"
ALWAYS = "notebooks/exercises/categorization/categorization.ipynb"


def _run_key(nb: nbformat.NotebookNode, bundle: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for c in nb.cells:
        h.update(c.cell_type.encode() + b"\0" + c.source.encode() + b"\0")
    h.update((bundle / "student" / bs.wheel_name(ROOT)).read_bytes())
    h.update((bundle / "student" / "requirements-student.txt").read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


def _student_notebooks(bundle: Path) -> list[tuple[str, nbformat.NotebookNode]]:
    """Every chapter notebook, then every release with the solution cells of solutions/ pasted in."""
    out = [(f"notebooks/{p}.ipynb", nbformat.read(str(bundle / "notebooks" / f"{p}.ipynb"), as_version=4))
           for p in PAGES]
    for aid in ASSIGNMENTS:
        rel = f"notebooks/exercises/{aid}/{aid}.ipynb"
        nb = nbformat.read(str(bundle / rel), as_version=4)
        solutions = _solution_sources(aid)
        pasted = visible_tests = 0
        for c in nb.cells:
            meta = c.metadata.get("nbgrader", {})
            if c.cell_type == "code" and meta.get("solution"):
                c.source = solutions[meta["grade_id"]]
                pasted += 1
            elif c.cell_type == "code" and meta.get("grade"):
                visible_tests += 1  # the release's visible tests: they must pass
        assert pasted and visible_tests, aid
        out.append((rel, nb))
    return out


def test_notebooks_run_side_by_side_in_order_and_every_failure_is_reported():
    """The fresh-venv runner: jobs start in the list's order, `workers` at a time (two that
    wait for each other both finish only when they run at once), never more, and every
    failure comes back with its job."""
    import threading

    meet = threading.Barrier(2, timeout=60)  # broken (an error) if the two never run at once
    lock, running, most, started = threading.Lock(), [0], [0], []

    def run(name, action):
        with lock:
            started.append(name)
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            if action == "meet":
                meet.wait()
            elif action == "fail":
                raise ValueError(f"{name} broke")
        finally:
            with lock:
                running[0] -= 1

    jobs = [("a", "meet"), ("b", "meet"), ("c", "fail"), ("d", "ok"), ("e", "fail"), ("f", "ok")]
    results = {job[0]: error for job, error in _side_by_side(jobs, run, 2)}
    assert results == {"a": None, "b": None, "c": "ValueError: c broke", "d": None,
                       "e": "ValueError: e broke", "f": None}
    assert set(started[:2]) == {"a", "b"} and most[0] == 2
    one_at_a_time = [job[0] for job, _ in _side_by_side([(n, "ok") for n in "xyz"], lambda *job: started.append(job[0]), 1)]
    assert one_at_a_time == started[-3:] == ["x", "y", "z"]


def test_side_by_side_workers_respect_the_usable_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert _workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert _workers() == SIDE_BY_SIDE == 2
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS: the CPU count
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert _workers() == 1


def test_slowest_first_by_the_books_execution_times(tmp_path):
    """The book build's execution times come from its jupyter-cache; the slowest page runs
    first, pages the cache does not know (the releases) after the pages, in their order."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(str(tmp_path / "cache"))
    for page, seconds in (("chapters/intro", 14.0), ("chapters/dpmm", 245.0), ("chapters/categorization", 28.0)):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"x = {seconds}")])
        cache.cache_notebook_bundle(CacheBundleIn(nb, ROOT / f"{page}.md", data={"execution_seconds": seconds}),
                                    check_validity=False)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 'elsewhere'")])
    cache.cache_notebook_bundle(CacheBundleIn(nb, tmp_path / "chapters" / "other.md",
                                              data={"execution_seconds": 999.0}), check_validity=False)
    seconds = _book_seconds(tmp_path / "cache")
    assert seconds == {"chapters/intro": 14.0, "chapters/dpmm": 245.0, "chapters/categorization": 28.0}
    assert _book_seconds(tmp_path / "none") == {}
    rels = ["notebooks/chapters/intro.ipynb", "notebooks/exercises/hw/hw.ipynb", "notebooks/chapters/dpmm.ipynb",
            "notebooks/exercises/hw2/hw2.ipynb", "notebooks/chapters/categorization.ipynb"]
    assert [rel for rel, _ in _slowest_first([(rel, None) for rel in rels], seconds)] == [
        "notebooks/chapters/dpmm.ipynb", "notebooks/chapters/categorization.ipynb", "notebooks/chapters/intro.ipynb",
        "notebooks/exercises/hw/hw.ipynb", "notebooks/exercises/hw2/hw2.ipynb"]


def test_real_kernels_run_side_by_side_without_mplbackend(tmp_path, monkeypatch):
    """Two crafted notebooks that each wait (up to two minutes) for the other to have started
    pass only when their kernels run at once; a failing third is reported; no kernel gets
    the caller's MPLBACKEND (students' kernels use the inline backend, which ipykernel sets)."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    wait = ("import os, pathlib, time\nassert 'inline' in os.environ['MPLBACKEND'], os.environ['MPLBACKEND']\n"
            "pathlib.Path('{me}').touch()\nfor _ in range(1200):\n    if pathlib.Path('{other}').exists():\n"
            "        break\n    time.sleep(0.1)\nelse:\n    raise RuntimeError('ran alone')")
    jobs = []
    for name, source in (("a", wait.format(me="a", other="b")), ("b", wait.format(me="b", other="a")),
                         ("c", "raise KeyError('planted')")):
        path = tmp_path / f"{name}.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), str(path))
        jobs.append((path,))
    results = {job[0].stem: error for job, error in _side_by_side(jobs, lambda path: _execute(path, kernel="python3"), 2)}
    assert results["a"] is None and results["b"] is None, results
    assert "KeyError" in results["c"] and "planted" in results["c"], results


@pytest.mark.slow
def test_student_notebooks_run_in_a_fresh_venv(bundle, student_kernel):
    py = student_kernel
    assert subprocess.run([str(py), "-c", "import gmmcourse"], capture_output=True).returncode != 0  # not yet
    passed = {} if os.environ.get("GMM_SITE_RERUN") or not PASSED.exists() else json.loads(PASSED.read_text())
    notebooks = sorted(_student_notebooks(bundle), key=lambda item: item[0] != ALWAYS)
    assert notebooks[0][0] == ALWAYS, [rel for rel, _ in notebooks]
    todo = [(rel, nb) for rel, nb in notebooks if rel == ALWAYS or passed.get(rel) != _run_key(nb, bundle)]
    failures, ran = [], []

    def run(rel, nb):
        _execute(bundle / rel, nb)

    def record(rel, nb, error):
        if error:
            failures.append(f"{rel}: {error}")
            return
        ran.append(rel)
        passed[rel] = _run_key(nb, bundle)
        PASSED.parent.mkdir(parents=True, exist_ok=True)
        PASSED.write_text(json.dumps(passed, indent=1))

    # ALWAYS alone first: its set-up cell installs the wheel from the bundle into the fresh venv
    for (rel, nb), error in _side_by_side(todo[:1], run, 1):
        record(rel, nb, error)
        if not error:
            out = "".join(o.get("text", "") for o in nb.cells[1].get("outputs", []))
            assert "[set-up] done: gmmcourse" in out, out
    # then the others side by side, slowest first; one at a time where the wheel is still not
    # installed (each set-up cell then installs it, and two installing at once would clash)
    installed = subprocess.run([str(py), "-c", "import gmmcourse"], capture_output=True).returncode == 0
    for (rel, nb), error in _side_by_side(_slowest_first(todo[1:], _book_seconds()), run,
                                          _workers() if installed else 1):
        record(rel, nb, error)
    assert not failures, "\n\n".join(sorted(failures))
    assert ran and ran[0] == ALWAYS, ran
    res = subprocess.run([str(py), "-c", "import gmmcourse, importlib.util as u; "
                          "print(u.find_spec('gmmcourse.grading'), u.find_spec('gmmcourse.plain'))"],
                         capture_output=True, text=True)
    assert res.stdout.split() == ["None", "None"], res
