"""An executed MyST chapter as a plain Jupyter notebook (what the site publishes for Colab).

`ChapterConverter` rewrites the directives and roles (glued values, included code, references,
citations, links to other chapters and the exercises), `strip_glue` removes the book's glue
calls from the code, and `residual_myst` finds what a plain notebook could not show.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat

from .config import ROOT, load_config


class ConversionError(ValueError):
    """A chapter uses MyST syntax that has no plain-notebook equivalent here."""


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


_GLUE_CALLS = ("glue", "glue_all")  # myst_nb.glue, and gmmcourse.book.glue_all (one call per cell)


def _glue_dicts(tree) -> set[str]:
    """Names of the dicts a cell fills for ``glue_all(name)``: their ``name = {}`` and
    ``name[key] = value`` statements are glue too."""
    import ast

    return {n.args[0].id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id == "glue_all" and len(n.args) == 1 and isinstance(n.args[0], ast.Name)}


def _is_glue(stmt, dicts: set[str] = frozenset()) -> bool:
    import ast

    if isinstance(stmt, ast.ImportFrom):
        return (stmt.module or "").split(".")[0] == "myst_nb" or stmt.module == "gmmcourse.book"
    if isinstance(stmt, ast.Import):
        return any(a.name.split(".")[0] == "myst_nb" or a.name == "gmmcourse.book" for a in stmt.names)
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        t = stmt.targets[0]
        return ((isinstance(t, ast.Name) and t.id in dicts and isinstance(stmt.value, ast.Dict) and not stmt.value.keys)
                or (isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id in dicts))
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id in _GLUE_CALLS)


def strip_glue(source: str, where: str = "a code cell") -> str:
    """The code without the book's glue: every ``from myst_nb import ...``, ``glue(...)`` and
    ``glue_all(...)`` statement (with the dict a cell fills for it, and ``gmmcourse.book``'s
    import) removed (a block left empty gets ``pass``), so a student's copy runs outside the
    book. The values glued are computed as before; only handing them to the book's text goes."""
    import ast

    try:
        tree = _parse_code(source)
    except SyntaxError:
        return source
    lines = source.split("\n")
    cuts: list[tuple[int, int, str | None]] = []   # (first line, last line, replacement)
    dicts = _glue_dicts(tree)

    def visit(body: list, top: bool = False) -> None:
        glue = [st for st in body if _is_glue(st, dicts)]
        kept = [st for st in body if not _is_glue(st, dicts)]
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
        return bool(re.search(r"\bglue(?:_all)?\(", source))
    return any(isinstance(n, ast.Name) and n.id in _GLUE_CALLS for n in ast.walk(tree))


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
