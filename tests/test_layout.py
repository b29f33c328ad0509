"""The layout of issue 30 ("one room, one job") stays as it was left.

Fast and without JAX: every check reads source files only (``ast``), under a root folder it
takes as its argument, so the tests below can also point it at a small tree with one planted
offender and watch it fail. Each problem is one line naming the file, the line and what to do.

* no Python file of the package, the scripts or the benchmarks over `MAX_LINES` lines
  (except the grader's assignment modules, `LONG_FILES_ALLOWED`);
* one thread pool: `ThreadPoolExecutor` is constructed in gmmcourse/programs.py only;
* one atomic write: ``os.replace``/``os.rename`` only inside gmmcourse/atomic.py's `staged`;
* one compile path: plain ``jax.jit`` in the package only where `ALLOWED_JITS` says why;
* tests and benchmarks use the package's public names only (no ``_private`` of gmmcourse);
* one glue call per chapter cell (``gmmcourse.book.glue_all``), in a ``remove-cell`` cell.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MAX_LINES = 450
CODE_DIRS = ("src/gmmcourse", "scripts", "benchmarks")
# The grader's assignment modules hold one assignment each (its parts' trusted checks, the
# references they compare against, the feedback texts): one job, whose size follows the
# assignment's; splitting one would scatter a single assignment's grading over files.
LONG_FILES_ALLOWED = ("src/gmmcourse/grading/assignments/",)

POOL_MODULE = "src/gmmcourse/programs.py"
POOL_CLASSES = {"ThreadPoolExecutor", "ThreadPool"}  # concurrent.futures, multiprocessing.pool

# (file, function) where a rename into place may happen: the one atomic-write helper.
RENAME_ALLOWED = {("src/gmmcourse/atomic.py", "staged")}

# Plain `jax.jit` in the package, by (file, the function or name it compiles, or "*" for the
# whole file), with the reason it is not `programs.exported_jit`.
ALLOWED_JITS = {
    ("src/gmmcourse/programs.py", "*"): "the one compile path itself (exported_jit jits what it exports or loads)",
    ("src/gmmcourse/plain.py", "*"): "the plain-JAX twin of the Gibbs kernel, the benchmarks' baseline: deliberately plain",
    ("src/gmmcourse/sweep.py", "run_chain"): "the unpadded single-scan reference chain that tests and benchmarks compare "
                                             "posterior's padded, chunked, exported path against: never on a user's path, "
                                             "and a reference should not share the machinery it checks",
    ("src/gmmcourse/categorize.py", "log_joint_by_component"): "one elementwise expression (no GenJAX to trace): "
                                                               "compiling it takes milliseconds, less than loading an "
                                                               "exported program would",
    ("src/gmmcourse/smc.py", "_smc_run"): "traced only inside smc's exported program (_RUNS = exported_jit(_runs)), so "
                                          "it compiles nothing of its own; the jit is redundant there and may go",
}


def _py_files(root: Path, dirs) -> list[Path]:
    return sorted(p for d in dirs if (root / d).is_dir() for p in (root / d).rglob("*.py") if "__pycache__" not in p.parts)


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _parse(path: Path):
    return ast.parse(path.read_text(), filename=str(path))


def _scopes(tree) -> dict[ast.AST, str]:
    """Each node -> the name of the outermost function or class around it ("<module>" at top level),
    and, for a top-level assignment, its target (``f = jax.jit(g)`` -> "f")."""
    where: dict[ast.AST, str] = {}
    for top in tree.body:
        if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = top.name
        elif isinstance(top, ast.Assign) and isinstance(top.targets[0], ast.Name):
            name = top.targets[0].id
        else:
            name = "<module>"
        for n in ast.walk(top):
            where[n] = name
    return where


def _innermost_function(tree) -> dict[ast.AST, str]:
    where: dict[ast.AST, str] = {}

    def visit(node, name):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
            where[child] = inner
            visit(child, inner)

    visit(tree, "<module>")
    return where


# ----------------------------------------------------------------------------- the checks


def long_files(root: Path) -> list[str]:
    problems = []
    for path in _py_files(root, CODE_DIRS):
        rel = _rel(root, path)
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and not rel.startswith(LONG_FILES_ALLOWED):
            problems.append(f"{rel}: {n} lines (limit {MAX_LINES}): split it by job, one module per job with a "
                            "docstring saying it (docs/design.md's module table)")
    return problems


def thread_pools(root: Path) -> list[str]:
    problems = []
    for path in _py_files(root, CODE_DIRS):
        rel = _rel(root, path)
        if rel == POOL_MODULE:
            continue
        tree = _parse(path)
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   for a in n.names if a.name in POOL_CLASSES}
        for n in ast.walk(tree):
            if not isinstance(n, ast.Call):
                continue
            f = n.func
            if (isinstance(f, ast.Name) and f.id in aliases) or (isinstance(f, ast.Attribute) and f.attr in POOL_CLASSES):
                problems.append(f"{rel}:{n.lineno}: constructs a thread pool: run the work in the package's one pool "
                                "(gmmcourse.programs.start / parallel_map)")
    return problems


def renames(root: Path) -> list[str]:
    problems = []
    for path in _py_files(root, CODE_DIRS):
        rel = _rel(root, path)
        tree = _parse(path)
        where = _innermost_function(tree)
        os_names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name == "os"}
        direct = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "os"
                  for a in n.names if a.name in ("replace", "rename", "renames")}
        for n in ast.walk(tree):
            if not isinstance(n, ast.Call):
                continue
            f = n.func
            hit = ((isinstance(f, ast.Attribute) and f.attr in ("replace", "rename", "renames")
                    and isinstance(f.value, ast.Name) and f.value.id in os_names)
                   or (isinstance(f, ast.Name) and f.id in direct))
            if hit and (rel, where.get(n, "<module>")) not in RENAME_ALLOWED:
                problems.append(f"{rel}:{n.lineno}: renames a file into place by hand: write it through "
                                "gmmcourse.atomic (atomic_write, or stage + staged for several files)")
    return problems


def plain_jits(root: Path) -> list[str]:
    problems = []
    for path in _py_files(root, ("src/gmmcourse",)):
        rel = _rel(root, path)
        if (rel, "*") in ALLOWED_JITS:
            continue
        tree = _parse(path)
        where = _scopes(tree)
        jax_names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name == "jax"}
        jit_names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "jax"
                     for a in n.names if a.name == "jit"}
        for n in ast.walk(tree):
            hit = ((isinstance(n, ast.Attribute) and n.attr == "jit" and isinstance(n.value, ast.Name) and n.value.id in jax_names)
                   or (isinstance(n, ast.Name) and n.id in jit_names and isinstance(n.ctx, ast.Load)))
            if hit and (rel, where.get(n, "<module>")) not in ALLOWED_JITS:
                problems.append(f"{rel}:{n.lineno}: plain jax.jit in {where.get(n, '<module>')}: compile it through "
                                "gmmcourse.programs.exported_jit (shapes.bucket_jit for per-bucket programs), or drop the jit "
                                "of a helper traced inside a program; if it must stay, add it to ALLOWED_JITS in "
                                "tests/test_layout.py with the reason")
    return problems


def _gmmcourse_module(root: Path, dotted: str) -> bool:
    """Whether `dotted` (e.g. "gmmcourse.grading.engine") is a module or package of the package."""
    parts = dotted.split(".")
    if parts[0] != "gmmcourse":
        return False
    base = root / "src" / Path(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_names(root: Path) -> list[str]:
    problems = []
    for path in _py_files(root, ("tests", "benchmarks")):
        rel = _rel(root, path)
        tree = _parse(path)
        modules: dict[str, str] = {}  # local name -> gmmcourse module it is bound to
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                for a in n.names:
                    if a.name.split(".")[0] == "gmmcourse":
                        if a.asname:
                            modules[a.asname] = a.name
                        else:
                            modules["gmmcourse"] = "gmmcourse"
                        if any(_private(p) for p in a.name.split(".")):
                            problems.append(f"{rel}:{n.lineno}: imports the private module {a.name}")
            elif isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "gmmcourse" and not n.level:
                if any(_private(p) for p in n.module.split(".")):
                    problems.append(f"{rel}:{n.lineno}: imports from the private module {n.module}")
                for a in n.names:
                    if _private(a.name):
                        problems.append(f"{rel}:{n.lineno}: imports {a.name} from {n.module}: use a public name (make it "
                                        "public in the package, with a docstring, if tests need it)")
                    elif _gmmcourse_module(root, f"{n.module}.{a.name}"):
                        modules[a.asname or a.name] = f"{n.module}.{a.name}"

        def dotted(node) -> str | None:
            if isinstance(node, ast.Name):
                return modules.get(node.id)
            if isinstance(node, ast.Attribute):
                base = dotted(node.value)
                if base and _gmmcourse_module(root, f"{base}.{node.attr}"):
                    return f"{base}.{node.attr}"
            return None

        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and _private(n.attr) and (mod := dotted(n.value)):
                problems.append(f"{rel}:{n.lineno}: uses {mod}.{n.attr}, a private name: use a public one (make it "
                                "public in the package, with a docstring, if tests need it)")
            elif (isinstance(n, ast.Call) and len(n.args) >= 2 and (mod := dotted(n.args[0]))
                  and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str) and _private(n.args[1].value)):
                problems.append(f"{rel}:{n.lineno}: reaches {mod}.{n.args[1].value} by name (getattr/setattr/patch), "
                                "a private name: use or add a public one")
            elif isinstance(n, ast.Constant) and isinstance(n.value, str) and re.fullmatch(r"gmmcourse(\.\w+)+", n.value):
                mod, _, attr = n.value.rpartition(".")
                if _private(attr) and _gmmcourse_module(root, mod):
                    problems.append(f"{rel}:{n.lineno}: names {n.value} (a patch target?), a private name: use or add a "
                                    "public one")
    return problems


CODE_CELL = re.compile(r"^(`{3,})\{code-cell\}[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
GLUE_CALLS = ("glue", "glue_all")


def glue_cells(root: Path) -> list[str]:
    problems = []
    for page in sorted((root / "chapters").glob("*.md")):
        text = page.read_text()
        for m in CODE_CELL.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            where = f"chapters/{page.name}:{line}"
            body = m.group(2)
            opts = re.match(r"(?:---\n.*?\n---\n|(?::[^\n]*\n)*)", body, re.S).group(0)
            code = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in body[len(opts):].split("\n"))
            try:
                tree = ast.parse(code)
            except SyntaxError as e:
                problems.append(f"{where}: the code cell does not parse ({e.msg}, its line {e.lineno})")
                continue
            calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                     and n.func.id in GLUE_CALLS]
            if not calls:
                continue
            if len(calls) > 1:
                problems.append(f"{where}: {len(calls)} glue calls in one cell: collect the values into one dict and "
                                "call gmmcourse.book.glue_all once, at the end of the cell")
            looped = [c for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While, ast.AsyncFor, ast.FunctionDef,
                                                                   ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp))
                      for c in ast.walk(n) if c in calls]
            if looped:
                problems.append(f"{where}: a glue call inside a loop or function glues once per pass: fill a dict in "
                                "the loop and call gmmcourse.book.glue_all(the_dict) once after it")
            if "remove-cell" not in opts:
                problems.append(f"{where}: a cell that glues must be tagged remove-cell (a page never shows the "
                                "book's glue: code a reader copies must run outside the book)")
    return problems


CHECKS = {"long_files": long_files, "thread_pools": thread_pools, "renames": renames, "plain_jits": plain_jits,
          "private_names": private_names, "glue_cells": glue_cells}


# ----------------------------------------------------------------------------- the tree as it is


@pytest.mark.parametrize("check", CHECKS)
def test_layout(check):
    problems = CHECKS[check](ROOT)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- each check can fail

CLEAN = {
    "src/gmmcourse/__init__.py": '"""The package."""\n',
    "src/gmmcourse/programs.py": "from concurrent.futures import ThreadPoolExecutor\n\nimport jax\n\n"
                                 "POOL = ThreadPoolExecutor(2)\nf = jax.jit(abs)\n",
    "src/gmmcourse/atomic.py": "import os\n\n\ndef staged(tmp, target):\n    os.replace(tmp, target)\n",
    "src/gmmcourse/plain.py": "from functools import partial\n\nimport jax\n\n\n@partial(jax.jit, static_argnames=('n',))\n"
                              "def run(x, n):\n    return x\n",
    "src/gmmcourse/sweep.py": '"""A sweep."""\n\n\ndef _inner(x):\n    return x\n\n\ndef run_chain(x):\n    return _inner(x)\n',
    "src/gmmcourse/grading/__init__.py": "",
    "src/gmmcourse/grading/assignments/big.py": "x = 1\n" * (MAX_LINES + 50),
    "scripts/tool.py": "print('hi')\n",
    "benchmarks/bench_x.py": "import jax\n\nfrom gmmcourse.sweep import run_chain\n\nfast = jax.jit(run_chain)\n",
    "tests/test_x.py": "import gmmcourse.sweep as sw\nfrom gmmcourse import sweep\n\n\ndef test_x(monkeypatch):\n"
                       "    assert sw.run_chain(1) == sweep.__name__ and sweep.run_chain.__doc__ is None\n"
                       "    monkeypatch.setattr(sweep, 'run_chain', abs)\n",
    "chapters/page.md": "# A page\n\n```{code-cell} ipython3\nx = 1\n```\n\n```{code-cell} ipython3\n:tags: [remove-cell]\n\n"
                        "glued = {}\nfor i in range(2):\n    glued[f'page_{i}'] = i\nglue_all(glued)\n```\n\n"
                        "```{code-cell} ipython3\n---\ntags: [remove-cell]\n---\nglue_all({'page_x': x})\n```\n",
}

# check -> (file, text appended to it, what the problem line must contain)
OFFENDERS = {
    "long_files": ("src/gmmcourse/sweep.py", "y = 2\n" * MAX_LINES, "src/gmmcourse/sweep.py: 459 lines (limit 450)"),
    "thread_pools": ("src/gmmcourse/sweep.py", "import concurrent.futures\n\nP = concurrent.futures.ThreadPoolExecutor(4)\n",
                     "src/gmmcourse/sweep.py:12: constructs a thread pool"),
    "renames": ("src/gmmcourse/sweep.py", "import os as _os\n\n\ndef save(a, b):\n    _os.rename(a, b)\n",
                "src/gmmcourse/sweep.py:14: renames a file into place by hand"),
    "plain_jits": ("src/gmmcourse/sweep.py", "from jax import jit\n\nfast = jit(run_chain)\n",
                   "src/gmmcourse/sweep.py:12: plain jax.jit in fast"),
    "private_names": ("tests/test_x.py", "    assert sw._inner(1) == 1\n", "tests/test_x.py:8: uses gmmcourse.sweep._inner"),
    "glue_cells": ("chapters/page.md", "\n```{code-cell} ipython3\n:tags: [remove-cell]\n\nglue('a', 1, display=False)\n"
                   "glue_all({'b': 2})\n```\n", "chapters/page.md:23: 2 glue calls in one cell"),
}

MORE_OFFENDERS = [  # other spellings each check must catch
    ("private_names", "tests/test_y.py", "from gmmcourse.sweep import _inner\n", "tests/test_y.py:1: imports _inner"),
    ("private_names", "benchmarks/b.py", "import gmmcourse\n\ngmmcourse.sweep._inner(1)\n", "benchmarks/b.py:3: uses gmmcourse.sweep._inner"),
    ("private_names", "tests/test_y.py", "from gmmcourse import sweep\n\n\ndef test(monkeypatch):\n"
                                         "    monkeypatch.setattr(sweep, '_inner', abs)\n", "tests/test_y.py:5: reaches gmmcourse.sweep._inner"),
    ("private_names", "tests/test_y.py", "def test(monkeypatch):\n    monkeypatch.setattr('gmmcourse.sweep._inner', abs)\n",
     "tests/test_y.py:2: names gmmcourse.sweep._inner"),
    ("plain_jits", "src/gmmcourse/sweep.py", "import jax\n\n\n@jax.jit\ndef g(x):\n    return x\n",
     "src/gmmcourse/sweep.py:13: plain jax.jit in g"),
    ("renames", "scripts/tool.py", "from os import replace\n\nreplace('a', 'b')\n", "scripts/tool.py:4: renames a file"),
    ("thread_pools", "benchmarks/bench_x.py", "from multiprocessing.pool import ThreadPool as TP\n\nTP(2)\n",
     "benchmarks/bench_x.py:8: constructs a thread pool"),
    ("glue_cells", "chapters/page.md", "\n```{code-cell} ipython3\n:tags: [remove-cell]\n\nfor i in range(2):\n"
                   "    glue_all({f'a{i}': i})\n```\n", "chapters/page.md:23: a glue call inside a loop"),
    ("glue_cells", "chapters/page.md", "\n```{code-cell} ipython3\nglue_all({'a': 1})\n```\n",
     "chapters/page.md:23: a cell that glues must be tagged remove-cell"),
]


def _tree(tmp_path: Path) -> Path:
    for rel, text in CLEAN.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_a_clean_tree_passes_every_check(tmp_path):
    root = _tree(tmp_path)
    assert {name: check(root) for name, check in CHECKS.items()} == {name: [] for name in CHECKS}


@pytest.mark.parametrize("check, rel, text, expected",
                         [(c, *OFFENDERS[c]) for c in OFFENDERS] + MORE_OFFENDERS,
                         ids=[*OFFENDERS, *(f"{c}-{i}" for i, (c, *_) in enumerate(MORE_OFFENDERS))])
def test_each_check_flags_a_planted_offender(tmp_path, check, rel, text, expected):
    root = _tree(tmp_path)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((path.read_text() if path.exists() else "") + text)
    problems = CHECKS[check](root)
    assert any(expected in p for p in problems), problems
    others = {name: c(root) for name, c in CHECKS.items() if name != check and name != "long_files"}
    assert others == {name: [] for name in others}, "an offender of one rule set off another"
