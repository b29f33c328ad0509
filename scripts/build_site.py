"""Assemble the publishable course bundle (``make site``) from the built book.

Usage::

    python scripts/build_site.py [--out _build/site]     # after scripts/build_book.sh

It writes one folder that can be published as it is (e.g. pushed to the ``gh-pages`` branch
of the course's public repository, see ``repository:`` in ``_config.yml``)::

    index.html, chapters/, _static/, ...        the HTML book (_build/html)
    notebooks/chapters/<chapter>.ipynb          every chapter as a plain notebook: glued values,
                                                included code, references and citations inlined,
                                                no MyST syntax, no glue calls, no outputs, links
                                                to other chapters and the exercises on the site's
                                                address (`site_url`), a set-up cell first
    notebooks/exercises/<id>/<id>.ipynb         the student releases of exercises/, set-up cell first
    student/gmmcourse-<version>-py3-none-any.whl  the student package: gmmcourse without
                                                gmmcourse.grading and the benchmark baseline
    student/requirements-student.txt            its pinned dependencies, taken from requirements.lock
    student/requirements-core.txt               the pins the course's numbers depend on (jax, jaxlib, genjax)
    student/latest.json                         the newest student package's version and wheel name
    binder/runtime.txt, binder/requirements.txt  the Binder environment (Python 3.12 + those pins)
    .nojekyll                                   GitHub Pages: serve _static/ and _sources/ as they are

Nothing else from the instructor side goes in (tests/test_site.py lists the bundle and scans
every file, the wheel's included, for solutions, hidden tests and grading code).

Every notebook starts with a "before you run" note and the set-up cell (`setup_cell`, from
``scripts/setup_cell.py``): it checks the Python version, and where ``gmmcourse`` is missing or
older than the site's it installs the wheel (from this copy of the site when the notebook sits
in one, else from the site's address, `site_url`), saying what and how; elsewhere it only says
that all is ready.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import re
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
EXECUTED = ROOT / "_build" / "jupyter_execute"
SITE = ROOT / "_build" / "site"

# Modules of src/gmmcourse that students do not get: the grader (trusted checks, hidden
# references) and the plain-JAX benchmark baseline.
EXCLUDED_MODULES = ("grading", "plain.py")
SETUP_TAG = "gmmcourse-setup"
# A fixed timestamp for the files inside the wheel: the same sources give the same bytes.
WHEEL_DATE = (2025, 1, 1, 0, 0, 0)


class ConversionError(ValueError):
    """A chapter uses MyST syntax that has no plain-notebook equivalent here."""


# ----------------------------------------------------------------------------- configuration


def load_config(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "_config.yml").read_text())


def published_repository(config: dict) -> tuple[str, str, str] | None:
    """``(owner, repo, branch)`` of the public GitHub repository that holds the published bundle.

    The one setting is ``repository: {url, branch}`` in ``_config.yml``; an empty ``url`` means
    the course is not published (no launch buttons, no download address in the set-up cell).
    """
    repo = config.get("repository") or {}
    url = (repo.get("url") or "").strip().rstrip("/")
    if not url:
        return None
    m = re.fullmatch(r"https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?", url)
    if not m:
        raise ValueError(f"repository.url must be https://github.com/<owner>/<repo>, not {url!r}")
    return m.group(1), m.group(2), (repo.get("branch") or "gh-pages").strip()


def site_url(config: dict) -> str:
    """The course site's public address ('' when unpublished): where the bundle is served.

    ``html: baseurl`` in ``_config.yml`` (Sphinx's ``html_baseurl``) when set: a course served
    from its own web server or a university site; else the GitHub Pages address of
    ``repository: url`` (``https://<owner>.github.io/<repo>``). The set-up cell installs from
    ``<site>/student/``; a student can override the address (``GMMCOURSE_SITE``).
    """
    base = str((config.get("html") or {}).get("baseurl") or "").strip().rstrip("/")
    if base:
        if not re.fullmatch(r"https?://[^\s\"'<>]+", base):
            raise ValueError(f"html.baseurl must be an http(s) address, not {base!r}")
        return base
    pub = published_repository(config)
    if pub is None:
        return ""
    owner, repo, _ = pub
    return f"https://{owner.lower()}.github.io/{repo}"


def package_version(root: Path = ROOT) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]


def student_version(root: Path = ROOT) -> str:
    """The student wheel's version: the package's, then ``.post<N>`` with N the number of commits
    of the course, so every published build of a newer commit is a newer version and a
    student's set-up cell updates to it; the package's own version outside a git checkout."""
    import subprocess

    base = package_version(root)
    try:
        n = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=root, capture_output=True, text=True,
                           check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return base
    return f"{base}.post{n}" if n.isdigit() else base


def wheel_name(root: Path = ROOT) -> str:
    return f"gmmcourse-{student_version(root)}-py3-none-any.whl"


# ----------------------------------------------------------------------------- set-up cell

# The set-up cell is a real Python file (scripts/setup_cell.py, which the tests run as it is);
# its first lines hold these settings, filled in per notebook.
SETUP_SOURCE = Path(__file__).resolve().parent / "setup_cell.py"
_SETTINGS = ("COURSE_SITE", "COURSE_VERSION", "NEEDED", "EXTRAS", "BUNDLE")
# The optional parts of the student wheel (pyproject's optional-dependencies of these names) that a
# notebook's set-up cell may install; "gpu" is chosen by the cell itself.
STUDENT_EXTRAS = ("compare",)

BEFORE_YOU_RUN = """\
**Before you run this notebook.** It needs Python 3.12 or newer (Colab has it). Run the
first code cell once: it checks your Python, installs the course package `gmmcourse` if it is
missing or out of date (from the course site, saying what it installs and which JAX, CPU or
GPU, it chose) and otherwise does nothing. Its comments say how to change its choices."""


def needed_modules(nb: nbformat.NotebookNode) -> list[str]:
    """Top-level modules the notebook's code imports, other than the standard library's and IPython."""
    import ast

    names = set()
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        code = "\n".join(ln for ln in c.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return sorted(n for n in names if n not in sys.stdlib_module_names and n not in ("__future__", "IPython"))


class UnprovidedImport(ValueError):
    """A student notebook imports a module that neither the student wheel nor one of its extras installs."""


def student_extras_for(needed: list[str], root: Path = ROOT, where: str = "a notebook") -> list[str]:
    """The `STUDENT_EXTRAS` a notebook importing `needed` must install, so that every one of its
    imports comes with the student wheel (its requirements' closure in the lock, or an extra's).

    Raises `UnprovidedImport`, naming the module, where none does: a student would meet a
    ModuleNotFoundError after a successful set-up cell.
    """
    import importlib.metadata

    from packaging.requirements import Requirement

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    base = _lock_closure({_normalise(Requirement(r).name) for r in project["dependencies"]}, root)
    by_extra = {e: _lock_closure({_normalise(Requirement(r).name) for r in optional.get(e, [])}, root) - base
                for e in STUDENT_EXTRAS}
    dists = importlib.metadata.packages_distributions()
    extras, unprovided = [], []
    for module in needed:
        if module == "gmmcourse":
            continue
        names = {_normalise(d) for d in dists.get(module, [])}
        if names & base:
            continue
        chosen = [e for e, closure in by_extra.items() if names & closure]
        if chosen:
            extras += [e for e in chosen[:1] if e not in extras]
        else:
            unprovided.append(module)
    if unprovided:
        raise UnprovidedImport(f"{where} imports {', '.join(unprovided)}, which neither the student package's "
                               f"requirements nor an extra ({', '.join(STUDENT_EXTRAS)}) install: add it to "
                               "pyproject.toml's dependencies or to an extra")
    return sorted(extras)


def setup_cell(url: str, bundle_relpath: str, version: str, needed: list[str] = ("gmmcourse",),
               extras: list[str] = ()) -> nbformat.NotebookNode:
    """The first code cell of every student notebook: `scripts/setup_cell.py` with its settings.

    Args:
        url: the course site's address (`site_url`; '' when unpublished).
        bundle_relpath: the site's ``student/`` folder relative to the notebook's folder in the bundle.
        version: the student package version the notebook was built with (`student_version`).
        needed: the modules the notebook imports (`needed_modules`): where they all import and
            the course package is current, the cell only says so.
        extras: the wheel's extras it installs (`student_extras_for(needed)`), e.g. ``["compare"]``.
    """
    values = {"COURSE_SITE": url, "COURSE_VERSION": version, "NEEDED": list(needed), "EXTRAS": list(extras),
              "BUNDLE": bundle_relpath}
    text = SETUP_SOURCE.read_text()
    for name in _SETTINGS:
        text, n = re.subn(rf"^{name} = [^#\n]*?(\s*#)", lambda m, name=name: f"{name} = {values[name]!r}{m.group(1)}",
                          text, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"{SETUP_SOURCE.name} has no '{name} = ...  # ...' line")
    cell = nbformat.v4.new_code_cell(text.rstrip("\n"))
    cell.metadata["tags"] = [SETUP_TAG]
    return cell


def with_setup_cell(nb: nbformat.NotebookNode, cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """`nb` with the "before you run" note and the set-up cell first (both tagged `SETUP_TAG`:
    the grader's sandbox runs neither)."""
    nb = copy.deepcopy(nb)
    note = nbformat.v4.new_markdown_cell(BEFORE_YOU_RUN)
    note.metadata["tags"] = [SETUP_TAG]
    nb.cells[:0] = [note, copy.deepcopy(cell)]
    if (nb.nbformat, nb.nbformat_minor) >= (4, 5):  # unique, stable cell ids
        for i, c in enumerate(nb.cells):
            c["id"] = c.get("id") or f"cell-{i}"
        nb.cells[0]["id"] = f"{SETUP_TAG}-note"
        nb.cells[1]["id"] = SETUP_TAG
    else:  # nbformat 4.4 (nbgrader's releases) has no cell ids
        for c in nb.cells:
            c.pop("id", None)
    return nb


# ----------------------------------------------------------------------------- MyST -> plain notebook


def glue_values(executed: nbformat.NotebookNode, sidecar: Path | None = None) -> dict[str, dict]:
    """``{key: mimebundle}`` of every ``myst_nb.glue`` output of an executed notebook.

    myst-nb keeps them in the notebook's outputs or, since 1.x, in ``<page>.glue.json`` beside it.
    """
    data = {}
    if sidecar is not None and sidecar.exists():
        for key, out in json.loads(sidecar.read_text()).items():
            n = len(out.get("metadata", {}).get("scrapbook", {}).get("mime_prefix", ""))
            data[key] = {(k[n:] if k.startswith("application/papermill.record/") else k): v
                         for k, v in out.get("data", {}).items()}
    for cell in executed.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            meta = out.get("metadata", {}).get("scrapbook")
            if meta:
                n = len(meta.get("mime_prefix", ""))
                data[meta["name"]] = {k[n:]: v for k, v in out.get("data", {}).items()}
    return data


def _chapter_labels(chapters: Path) -> dict[str, tuple[str, str]]:
    """``{label: (chapter stem, title)}`` for the ``(label)=`` targets of the chapters and the
    ``:label:`` options of their directives (an ``{exercise}``'s title is its argument)."""
    labels = {}
    for md in sorted(chapters.glob("*.md")):
        lines = md.read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.fullmatch(r"\((\S+)\)=", line.strip())
            if m:
                title = next((ln.lstrip("#").strip() for ln in lines[i + 1:] if ln.startswith("#")), m.group(1))
                labels[m.group(1)] = (md.stem, title)
            m = re.fullmatch(r":label:\s*(\S+)", line.strip())
            if m:
                head = next((ln for ln in reversed(lines[:i]) if re.match(r"^(```|:::)+\{", ln.strip())), "")
                title = re.sub(r"^(```|:::)+\{[^}]*\}\s*", "", head.strip()) or m.group(1)
                labels[m.group(1)] = (md.stem, title)
    return labels


def _bibliography(bibfile: Path) -> dict[str, dict]:
    """``{key: {"cite": "Neal, 2000", "entry": "Neal, R. M. (2000). Title. Journal."}}``."""
    from pybtex.database import parse_file

    out = {}
    for key, e in parse_file(str(bibfile)).entries.items():
        people = e.persons.get("author") or e.persons.get("editor") or []
        lasts = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
        year = e.fields.get("year", "n.d.")
        who = lasts[0] if len(lasts) == 1 else f"{lasts[0]} and {lasts[1]}" if len(lasts) == 2 else f"{lasts[0]} et al."
        full = "; ".join(" ".join(p.last_names) + ", " + " ".join(f"{n.strip('{}')[0]}." for n in p.first_names + p.middle_names)
                         for p in people).replace("{", "").replace("}", "")
        title = e.fields.get("title", "").replace("{", "").replace("}", "")
        where = next((e.fields[f] for f in ("journal", "booktitle", "publisher", "howpublished", "school")
                      if f in e.fields), "")
        where = where.replace("{", "").replace("}", "").replace("\\&", "&")
        out[key] = {"cite": f"{who}, {year}", "entry": f"{full} ({year}). {title}." + (f" *{where}*." if where else "")}
    return out


def _literalinclude(arg: str, options: dict, chapter: Path, root: Path) -> str:
    """The code a ``literalinclude`` directive shows, read by Sphinx's own reader."""
    from types import SimpleNamespace

    from sphinx.directives.code import LiteralIncludeReader

    known = {"language", "pyobject", "lines", "start-after", "end-before", "start-at", "end-at", "dedent"}
    if set(options) - known:
        raise ConversionError(f"literalinclude options {sorted(set(options) - known)} are not supported")
    opts = {k: v for k, v in options.items() if k != "language"}
    if "dedent" in opts:
        opts["dedent"] = int(opts["dedent"])
    path = (chapter.parent / arg).resolve()
    rel = path.relative_to(root.resolve()).parts if path.is_relative_to(root.resolve()) else ("outside",)
    if {"grading", "solutions", "tests", "benchmarks", "outside"} & set(rel):
        raise ConversionError(f"{chapter.name}: literalinclude of instructor-side {arg}")
    text, _ = LiteralIncludeReader(str(path), opts,
                                   SimpleNamespace(source_encoding="utf-8-sig")).read()
    return f"```{options.get('language', 'python')}\n{text.rstrip()}\n```"


_FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                    re.M | re.S)
_ROLE = re.compile(r"\{(?P<name>[\w:-]+)\}`(?P<text>[^`]*)`")


def _split_options(body: str) -> tuple[dict, str]:
    options, lines = {}, body.splitlines()
    while lines and (m := re.fullmatch(r":([\w-]+):\s*(.*)", lines[0].strip())):
        options[m.group(1)] = m.group(2)
        lines.pop(0)
    return options, "\n".join(lines).strip("\n")


class ChapterConverter:
    """Rewrites the MyST of the book's chapters as plain Jupyter markdown."""

    def __init__(self, root: Path = ROOT, site: str = ""):
        """`site`: the course site's public address (`site_url`). Links between chapters and to
        the exercises then point at the site (a chapter's web page, an exercise's notebook), so
        they work in Colab and in a notebook downloaded on its own; without it they are relative
        (they work in a copy of the site)."""
        self.root = root
        self.site = site.rstrip("/")
        self.chapters = root / "chapters"
        self.labels = _chapter_labels(self.chapters)
        config = load_config(root)
        bibs = config.get("bibtex_bibfiles") or []
        self.bib = {}
        for b in bibs:
            self.bib.update(_bibliography(root / b))
        self.exercise_count = 0

    # -- directives
    def _directive(self, m: re.Match, chapter: Path) -> str:
        name, arg = m.group("name"), m.group("arg").strip()
        options, body = _split_options(m.group("body"))
        if name == "literalinclude":
            return _literalinclude(arg, options, chapter, self.root)
        if name == "exercise":
            self.exercise_count += 1
            quoted = "\n".join(("> " + ln).rstrip() for ln in body.splitlines())
            return f"> **Exercise {self.exercise_count}: {arg}**\n>\n{quoted}"
        if name == "dropdown":  # a worked solution: the plain notebook shows it under its title
            quoted = "\n".join(("> " + ln).rstrip() for ln in body.splitlines())
            return f"> **{arg or 'Details'}**\n>\n{quoted}"
        if name in ("note", "tip", "warning", "important", "caution", "attention", "hint", "seealso", "admonition"):
            head = arg if name == "admonition" else name.capitalize() + (f": {arg}" if arg else "")
            quoted = "\n".join(("> " + ln).rstrip() for ln in body.splitlines())
            return f"> **{head}**\n>\n{quoted}"
        if name == "math":
            return f"$$\n{body}\n$$"
        if name in ("code-block", "code", "sourcecode"):  # a listing that is not run (e.g. Stan)
            head = f"*{options['caption']}*\n\n" if options.get("caption") else ""
            return f"{head}```{arg}\n{body.strip(chr(10))}\n```"
        if name == "bibliography":
            return "\n".join(f"* {e['entry']}" for _, e in sorted(self.bib.items(), key=lambda kv: kv[1]["entry"]))
        raise ConversionError(f"{chapter.name}: directive {{{name}}} has no plain-notebook form")

    # -- roles
    def _role(self, m: re.Match, chapter: Path, glue: dict) -> str:
        name, text = m.group("name"), m.group("text")
        explicit = re.fullmatch(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>", text, re.S)
        if name in ("glue:text", "glue"):
            from myst_nb.core.variables import format_plain_text

            key, _, fmt = text.rpartition(":") if ":" in text else (text, "", "")
            key = key or text
            if key not in glue or "text/plain" not in glue[key]:
                raise ConversionError(f"{chapter.name}: no glued text/plain value {key!r}")
            return format_plain_text(glue[key]["text/plain"], fmt)
        if name == "glue:md":
            key = text.split(":", 1)[0]
            if key not in glue or "text/markdown" not in glue[key]:
                raise ConversionError(f"{chapter.name}: no glued text/markdown value {key!r}")
            return glue[key]["text/markdown"].strip()
        if name in ("ref", "doc", "numref"):
            label = explicit.group("target") if explicit else text
            label = label.split("/")[-1].removesuffix(".md")
            if label not in self.labels:
                raise ConversionError(f"{chapter.name}: reference to unknown chapter label {label!r}")
            stem, title = self.labels[label]
            return f"[{explicit.group('title') if explicit else title}]({self._chapter_link(stem)})"
        if name == "download":
            title, target = (explicit.group("title"), explicit.group("target")) if explicit else (text, text)
            path = (chapter.parent / target).resolve()
            rel = path.relative_to(self.root)
            if rel.parts[0] != "exercises":
                raise ConversionError(f"{chapter.name}: download of {target} (only exercises/ are in the bundle)")
            return f"[{title}]({self.site + '/notebooks' if self.site else '..'}/{rel.as_posix()})"
        if name in ("cite:p", "cite:t", "cite", "citep", "citet"):
            keys = [k.strip() for k in text.split(",")]
            missing = [k for k in keys if k not in self.bib]
            if missing:
                raise ConversionError(f"{chapter.name}: unknown citation {missing}")
            cites = [self.bib[k]["cite"] for k in keys]
            if name in ("cite:t", "citet"):
                return "; ".join(re.sub(r", (\S+)$", r" (\1)", c) for c in cites)
            return "([" + "; ".join(cites) + f"]({self._chapter_link('references')}))"
        if name in ("math", "eq"):
            return f"${text}$" if name == "math" else f"({text})"
        raise ConversionError(f"{chapter.name}: role {{{name}}} has no plain-notebook form")

    def _chapter_link(self, stem: str) -> str:
        """Where a link to chapter `stem` points: its page on the site, else its notebook beside this one."""
        return f"{self.site}/chapters/{stem}.html" if self.site else f"{stem}.ipynb"

    def markdown(self, src: str, chapter: Path, glue: dict) -> str:
        src = _FENCE.sub(lambda m: self._directive(m, chapter), src)
        src = re.sub(r"^\(\S+\)=[ \t]*\n?", "", src, flags=re.M)      # (label)= targets
        src = re.sub(r"^%[^\n]*\n?", "", src, flags=re.M)              # MyST comments
        # roles, outside fenced code blocks
        parts = re.split(r"(^```.*?^```)", src, flags=re.S | re.M)
        return "".join(part if part.startswith("```") else _ROLE.sub(lambda m: self._role(m, chapter, glue), part)
                       for part in parts).strip("\n")

    def notebook(self, executed: nbformat.NotebookNode, chapter: Path, glue_file: Path | None = None
                 ) -> nbformat.NotebookNode:
        """The plain notebook of one chapter from its executed notebook (myst-nb's jupyter_execute)."""
        glue = glue_values(executed, glue_file)
        self.exercise_count = 0
        nb = nbformat.v4.new_notebook()
        nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}}
        for cell in executed.cells:
            if cell.cell_type == "markdown":
                text = self.markdown(cell.source, chapter, glue)
                if text.strip():
                    nb.cells.append(nbformat.v4.new_markdown_cell(text))
            elif cell.cell_type == "code":
                src = strip_glue(cell.source, f"{chapter.name}, code cell {len(nb.cells)}")
                if not _has_code(src):  # a cell that only glued values for the book's text
                    continue
                new = nbformat.v4.new_code_cell(src)
                tags = [t for t in cell.metadata.get("tags", []) if not t.startswith("remove")]
                if tags:
                    new.metadata["tags"] = tags
                nb.cells.append(new)
            else:
                nb.cells.append(copy.deepcopy(cell))
        for i, c in enumerate(nb.cells):
            c["id"] = f"{chapter.stem}-{i}"
        return nb


def _parse_code(source: str):
    """The cell's code as an AST (IPython's `%magic` and `!shell` lines blanked, line numbers kept)."""
    import ast

    return ast.parse("\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.split("\n")))


def _is_glue(stmt) -> bool:
    import ast

    if isinstance(stmt, ast.ImportFrom):
        return (stmt.module or "").split(".")[0] == "myst_nb"
    if isinstance(stmt, ast.Import):
        return any(a.name.split(".")[0] == "myst_nb" for a in stmt.names)
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id == "glue")


def strip_glue(source: str, where: str = "a code cell") -> str:
    """The code without the book's glue: every ``from myst_nb import ...`` and ``glue(...)``
    statement removed (a block left empty gets ``pass``), so a student's copy runs outside the
    book. The values glued are computed as before; only handing them to the book's text goes."""
    import ast

    try:
        tree = _parse_code(source)
    except SyntaxError:
        return source
    lines = source.split("\n")
    cuts: list[tuple[int, int, str | None]] = []   # (first line, last line, replacement)

    def visit(body: list, top: bool = False) -> None:
        glue = [st for st in body if _is_glue(st)]
        kept = [st for st in body if not _is_glue(st)]
        for st in glue:
            shared = [o for o in kept if o.lineno <= st.end_lineno and o.end_lineno >= st.lineno]
            if shared:
                raise ConversionError(f"{where}: a glue call shares line {st.lineno} with other code: "
                                      "put it on a line of its own")
            empty = not kept and st is glue[0] and not top  # a block needs a statement
            cuts.append((st.lineno, st.end_lineno, " " * st.col_offset + "pass" if empty else None))
        for st in kept:
            for field in ("body", "orelse", "finalbody"):
                sub = getattr(st, field, None)
                if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                    visit(sub)
            for part in getattr(st, "handlers", []) + getattr(st, "cases", []):
                visit(part.body)

    visit(tree.body, top=True)
    for first, last, replacement in sorted(cuts, reverse=True):
        lines[first - 1:last] = [replacement] if replacement is not None else []
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _has_code(source: str) -> bool:
    return any(ln.strip() and not ln.lstrip().startswith("#") for ln in source.splitlines())


def _uses_glue(source: str) -> bool:
    import ast

    try:
        tree = _parse_code(source)
    except SyntaxError:
        return bool(re.search(r"\bglue\(", source))
    return any(isinstance(n, ast.Name) and n.id == "glue" for n in ast.walk(tree))


def residual_myst(nb: nbformat.NotebookNode) -> list[str]:
    """MyST syntax left in a notebook's markdown, or code that needs the book's tools."""
    problems = []
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown":
            prose = re.sub(r"^```.*?^```", "", c.source, flags=re.S | re.M)
            for m in re.finditer(r"\{[\w:-]+\}`|^(?:`{3,}|:{3,})\{|^\(\S+\)=\s*$|^:[\w-]+:", prose, re.M):
                problems.append(f"cell {i}: {m.group(0)!r}")
            for m in re.finditer(r"\]\((?![a-z]+:|#)[^)\s]*\.md(?:#[^)]*)?\)", prose):  # dead outside the book
                problems.append(f"cell {i}: relative link to a MyST page {m.group(0)!r}")
        elif c.cell_type == "code" and re.search(r"^\s*(?:from|import)\s+myst_nb\b", c.source, re.M):
            problems.append(f"cell {i}: imports myst_nb")
        elif c.cell_type == "code" and _uses_glue(c.source):
            problems.append(f"cell {i}: calls the book's glue")
    return problems


# ----------------------------------------------------------------------------- student package


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_pins(root: Path = ROOT) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The lock's ``name==version`` lines by normalised name, and each package's ``# via`` parents."""
    pins: dict[str, str] = {}
    parents: dict[str, set[str]] = {}
    current = None
    for line in (root / "requirements.lock").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line):
            current = _normalise(m.group(1).split("[")[0])
            pins[current] = line.split(" ")[0].strip()
            parents[current] = set()
        elif current and (m := re.match(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9_.\-]+)(\s*\(pyproject\.toml\))?\s*$", line)):
            if m.group(1) != "via":
                parents[current].add("<project>" if m.group(2) else _normalise(m.group(1)))
    return pins, parents


def _lock_closure(roots: set[str], root: Path = ROOT) -> set[str]:
    """`roots` (normalised names) and everything the lock installs because of them."""
    pins, parents = _lock_pins(root)
    missing = roots - set(pins)
    if missing:
        raise ValueError(f"requirements.lock lacks {sorted(missing)}: run `make lock`")
    needed = set(roots)
    changed = True
    while changed:
        changed = False
        for name, ps in parents.items():
            if name not in needed and ps & needed:
                needed.add(name)
                changed = True
    return needed


def student_requirements(root: Path = ROOT) -> str:
    """requirements-student.txt: the lock's pins of the package's runtime dependencies, those of
    its student extras (`STUDENT_EXTRAS`), and theirs.

    The closure follows the lock's ``# via`` annotations from pyproject.toml, so every version is
    the lock's (the tests install it and check that nothing else is pulled in).
    """
    from packaging.requirements import Requirement

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    reqs = list(project["dependencies"]) + [r for e in STUDENT_EXTRAS for r in optional.get(e, [])]
    pins, _ = _lock_pins(root)
    needed = _lock_closure({_normalise(Requirement(r).name) for r in reqs}, root)
    header = ("# Pinned dependencies of the gmmcourse student wheel and its extras (generated by\n"
              "# scripts/build_site.py from requirements.lock).\n"
              "# Install: pip install -r requirements-student.txt gmmcourse-*.whl\n")
    return header + "".join(pins[n] + "\n" for n in sorted(needed))


# The packages whose versions decide the course's numbers (random streams, compiled programs):
# the set-up cell pins these and keeps a student's other packages where they are compatible.
CORE_PINS = ("genjax", "jax", "jaxlib")


def core_requirements(root: Path = ROOT) -> str:
    """requirements-core.txt: the lock's pins of `CORE_PINS` only."""
    pins = {_normalise(m.group(1)): m.group(0) for m in
            re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", (root / "requirements.lock").read_text(), re.M)}
    missing = [n for n in CORE_PINS if n not in pins]
    if missing:
        raise ValueError(f"requirements.lock lacks {missing}: run `make lock`")
    header = ("# The versions the course's numbers depend on (generated by scripts/build_site.py from\n"
              "# requirements.lock); every other requirement of gmmcourse is a range (the wheel's metadata).\n")
    return header + "".join(pins[n] + "\n" for n in CORE_PINS)


def _student_metadata(root: Path) -> str:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {student_version(root)}",
             f"Summary: {project['description']} (student package)",
             f"Requires-Python: {project['requires-python']}", "License: MIT"]
    lines += [f"Requires-Dist: {r}" for r in project["dependencies"]]
    optional = project.get("optional-dependencies", {})
    for extra in ("gpu", *STUDENT_EXTRAS):
        if optional.get(extra):
            lines.append(f"Provides-Extra: {extra}")
            lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in optional[extra]]
    body = ("The reference package of the gmm-course (Gaussian mixture models with GenJAX), as\n"
            "students use it in the course notebooks.\n")
    return "\n".join(lines) + "\nDescription-Content-Type: text/markdown\n\n" + body


def student_package_files(root: Path = ROOT) -> list[Path]:
    pkg = root / "src" / "gmmcourse"
    files = []
    for p in sorted(pkg.rglob("*")):
        rel = p.relative_to(pkg)
        if not p.is_file() or "__pycache__" in rel.parts or p.suffix in (".pyc", ".pyo"):
            continue
        if rel.parts[0] in EXCLUDED_MODULES:
            continue
        files.append(p)
    return files


def build_student_wheel(out_dir: Path, root: Path = ROOT) -> Path:
    """Write the student wheel (pure Python, reproducible bytes) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dist_info = f"gmmcourse-{student_version(root)}.dist-info"  # the wheel's version (pip names it by this)
    entries: list[tuple[str, bytes]] = []
    for p in student_package_files(root):
        entries.append(("gmmcourse/" + p.relative_to(root / "src" / "gmmcourse").as_posix(), p.read_bytes()))
    entries.append((f"{dist_info}/METADATA", _student_metadata(root).encode()))
    entries.append((f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: gmm-course build_site.py\n"
                                          b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    entries.append((f"{dist_info}/top_level.txt", b"gmmcourse\n"))
    record = []
    for name, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    path = out_dir / wheel_name(root)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=WHEEL_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def write_student_folder(student: Path, root: Path = ROOT) -> Path:
    """The site's ``student/`` folder, what the set-up cells install from: the wheel, its pins
    (all, and the core ones) and ``latest.json`` (the newest version and its wheel's name)."""
    build_student_wheel(student, root)
    (student / "requirements-student.txt").write_text(student_requirements(root))
    (student / "requirements-core.txt").write_text(core_requirements(root))
    (student / "latest.json").write_text(json.dumps({"version": student_version(root), "wheel": wheel_name(root)}) + "\n")
    return student


# ----------------------------------------------------------------------------- the bundle


def chapter_pages(root: Path = ROOT) -> list[str]:
    """Docnames of the book's pages in table-of-contents order (``chapters/intro``, ...)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(items):
        for it in items or []:
            if "file" in it:
                pages.append(it["file"])
            walk(it.get("sections"))
            walk(it.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [p.removesuffix(".md") for p in pages]


def executed_notebook(page: str, root: Path = ROOT, executed: Path | None = None) -> nbformat.NotebookNode:
    """The page as myst-nb executed it; a page without code cells (no kernel) from its source."""
    path = (executed or root / "_build" / "jupyter_execute") / f"{page}.ipynb"
    if path.exists():
        return nbformat.read(str(path), as_version=4)
    text = (root / f"{page}.md").read_text()
    if re.search(r"^```\{code-cell\}", text, re.M):
        raise FileNotFoundError(f"{path} is missing: build the book first (scripts/build_book.sh)")
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # front matter
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(part.strip("\n")) for part in re.split(r"^\+\+\+.*$", text, flags=re.M)
                if part.strip()]
    return nb


def published_chapter(page: str, url: str, root: Path = ROOT, executed: Path | None = None,
                      conv: ChapterConverter | None = None) -> nbformat.NotebookNode:
    """Chapter `page` (``chapters/intro``) as the site publishes it at ``notebooks/<page>.ipynb``:
    the plain notebook, its set-up cell first (installing from `url`, or from the ``student/``
    folder of the copy of the site it sits in)."""
    executed = executed or root / "_build" / "jupyter_execute"
    conv = conv or ChapterConverter(root, url)
    nb = conv.notebook(executed_notebook(page, root, executed), root / f"{page}.md", executed / f"{page}.glue.json")
    bad = residual_myst(nb)
    if bad:
        raise ConversionError(f"{page}: MyST left in the plain notebook: {bad[:5]}")
    depth = len(Path(page).parts)  # notebooks/chapters/x.ipynb -> ../../student
    needed = needed_modules(nb)
    extras = student_extras_for(needed, root, where=f"{page}.md")
    return with_setup_cell(nb, setup_cell(url, "../" * depth + "student", student_version(root), needed, extras))


def build_site(out: Path = SITE, root: Path = ROOT, html: Path | None = None, executed: Path | None = None,
               url: str | None = None) -> Path:
    """Assemble the bundle into `out` (replaced). Returns `out`.

    Args:
        url: the course site's address for the set-up cell (default: `site_url` of _config.yml).
    """
    html = html or root / "_build" / "html"
    executed = executed or root / "_build" / "jupyter_execute"
    if not (html / "index.html").exists():
        raise FileNotFoundError(f"{html} has no built book: run scripts/build_book.sh first")
    config = load_config(root)
    url = site_url(config) if url is None else url
    version = student_version(root)
    if out.exists():
        shutil.rmtree(out)
    # 1. the HTML book, without build leftovers
    shutil.copytree(html, out, ignore=shutil.ignore_patterns(".buildinfo", "reports", ".doctrees", "*.pickle"))
    (out / ".nojekyll").write_text("")
    # 2. the student package and its pins
    write_student_folder(out / "student", root)
    (out / "binder").mkdir()
    (out / "binder" / "runtime.txt").write_text("python-3.12\n")
    (out / "binder" / "requirements.txt").write_text(student_requirements(root))
    # 3. the chapters as plain notebooks
    conv = ChapterConverter(root, url)
    for page in chapter_pages(root):
        nb = published_chapter(page, url, root, executed, conv)
        target = out / "notebooks" / f"{page}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))
        # the book's own "download .ipynb" (written when launch buttons are on) is this notebook too
        sources_copy = out / "_sources" / f"{page}.ipynb"
        if sources_copy.exists():
            nbformat.write(nb, str(sources_copy))
    # 4. the student releases, set-up cell first; the book's download copies too
    for rel in sorted((root / "exercises").glob("*/*.ipynb")):
        aid = rel.parent.name
        if rel.stem != aid:
            continue
        release = nbformat.read(str(rel), as_version=4)
        needed = needed_modules(release)
        extras = student_extras_for(needed, root, where=str(rel.relative_to(root)))
        nb = with_setup_cell(release, setup_cell(url, "../../../student", version, needed, extras))
        target = out / "notebooks" / "exercises" / aid / rel.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))
        for dl in (out / "_downloads").rglob(rel.name):
            nbformat.write(with_setup_cell(release, setup_cell(url, "../../student", version, needed, extras)), str(dl))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=SITE)
    args = ap.parse_args(argv)
    out = build_site(args.out)
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"Course bundle: {out} ({len(files)} files, {size / 1e6:.1f} MB); publish it as it is "
          f"(repository: in _config.yml names where)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
