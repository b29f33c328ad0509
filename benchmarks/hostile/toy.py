"""A toy autograded assignment (plain Python, no JAX) and a corpus of hostile submissions.

``python benchmarks/hostile/toy.py DIR`` writes the source notebook and every hostile submission
under DIR (``DIR/solutions/toy/toy.ipynb``, ``DIR/grading/submitted/<name>/toy/toy.ipynb``).
Used by the grading tests (tests/grading_helpers.py, registry ``toy:ASSIGNMENTS`` with
benchmarks/hostile on ``sys.path``) and by benchmarks/bench_grading.py; it lives outside tests/
so that benchmarks import no test module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from gmmcourse.grading.spec import Assignment, Part, Verdict

# --------------------------------------------------------------------------- assignment

MEAN_SOL = "def mean(xs):\n    ### BEGIN SOLUTION\n    return sum(xs) / len(xs)\n    ### END SOLUTION\n"
MEAN_BLANK = "def mean(xs):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
COUNTS_SOL = (
    "def counts(words):\n    ### BEGIN SOLUTION\n    out = {}\n    for w in words:\n"
    "        out[w] = out.get(w, 0) + 1\n    return out\n    ### END SOLUTION\n"
)
COUNTS_BLANK = "def counts(words):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
TEST_MEAN = (
    "assert mean([1, 2, 3]) == 2\n### BEGIN HIDDEN TESTS\nassert mean([4]) == 4  # SECRET-HIDDEN-TEST\n"
    "### END HIDDEN TESTS\n"
)
TEST_COUNTS = (
    "assert counts(['a', 'b', 'a']) == {'a': 2, 'b': 1}\n### BEGIN HIDDEN TESTS\n"
    "assert counts([]) == {}  # SECRET-HIDDEN-TEST\n### END HIDDEN TESTS\n"
)


def _md(grade_id, *, grade=False, solution=False, locked=False, points=None, task=False):
    md = {"grade": grade, "solution": solution, "locked": locked, "grade_id": grade_id, "schema_version": 3, "task": task}
    if points is not None:
        md["points"] = points
    return {"nbgrader": md}


def notebook(mean_src=MEAN_SOL, counts_src=COUNTS_SOL, *, extra_before=(), extra_after=(), tests=True):
    cells = [new_markdown_cell("# Toy assignment\nImplement `mean` and `counts`.")]
    cells += [new_code_cell(s) for s in extra_before]
    cells.append(new_code_cell(mean_src, metadata=_md("answer_mean", solution=True)))
    if tests:
        cells.append(new_code_cell(TEST_MEAN, metadata=_md("test_mean", grade=True, locked=True, points=2)))
    cells.append(new_code_cell(counts_src, metadata=_md("answer_counts", solution=True)))
    if tests:
        cells.append(new_code_cell(TEST_COUNTS, metadata=_md("test_counts", grade=True, locked=True, points=3)))
    cells.append(
        new_markdown_cell("YOUR ANSWER HERE", metadata=_md("explain", grade=True, solution=True, points=1))
    )
    cells += [new_code_cell(s) for s in extra_after]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _inputs():
    return {"mean_cases": [[1, 2, 3, 4], [2.5], [10, -10, 3]], "words": ["x", "y", "x", "z", "x"]}


def _reference():
    inp = _inputs()
    mean = [sum(c) / len(c) for c in inp["mean_cases"]]
    counts = {}
    for w in inp["words"]:
        counts[w] = counts.get(w, 0) + 1
    return {"mean": mean, "counts": counts}


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_mean(answer, ref):
    want = ref["mean"]
    if not isinstance(answer, list) or len(answer) != len(want) or not all(_num(v) for v in answer):
        return Verdict(0.0, f"mean should return one number per list ({len(want)} cases).")
    ok = sum(abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(answer, want))
    if ok == len(want):
        return Verdict(1.0, "mean is correct.")
    return Verdict(ok / len(want) if ok else 0.0, f"mean is correct on {ok} of {len(want)} hidden cases.")


def check_counts(answer, ref):
    want = ref["counts"]
    if not isinstance(answer, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in answer.values()):
        return Verdict(0.0, "counts should return a dict of integer counts.")
    if answer == want:  # plain JSON data: no custom __eq__ can reach here
        return Verdict(1.0, "counts is correct.")
    return Verdict(0.0, "counts gives wrong counts on a hidden case.")


TOY = Assignment(
    id="toy",
    notebook="toy.ipynb",
    parts=(
        Part("test_mean", 2, "answer = [mean(list(c)) for c in inputs['mean_cases']]", check_mean, "the mean of a list"),
        Part("test_counts", 3, "answer = dict(counts(list(inputs['words'])))", check_counts, "word counts"),
    ),
    reference=_reference,
    inputs=_inputs,
)
ASSIGNMENTS = {"toy": TOY}
MAX_AUTO = 5.0

# --------------------------------------------------------------------------- hostile corpus

REPO = Path(__file__).resolve().parents[2]
_BREACH = (
    "import os, sys, importlib.util\nleaks = []\n"
    "for p in ['{repo}/solutions', '{repo}/grading', '{course}', '{repo}/src/gmmcourse/grading/engine.py', "
    "'{repo}/src/gmmcourse/grading/spec.py', '{course}/gradebook.db', '{course}/submitted']:\n"
    "    try:\n        if os.path.exists(p) and (os.listdir(p) if os.path.isdir(p) else open(p,'rb').read(1)):\n"
    "            leaks.append(p)\n    except Exception:\n        pass\n"
    "if importlib.util.find_spec('gmmcourse') is None or os.path.exists('{repo}/src/gmmcourse/grading'):\n"
    "    leaks.append('grading package visible (or gmmcourse hidden)')\n"
    "try:\n    open('{course}/PWNED', 'w').write('x'); leaks.append('write')\nexcept Exception:\n    pass\n"
    "try:\n    os.mknod('/tmp/disk', 0o600 | 0o060000, os.makedev(8, 0)); leaks.append('mknod')\nexcept Exception:\n    pass\n"
    "if int(open('/proc/self/status').read().split('CapEff:')[1].split()[0], 16):\n    leaks.append('capabilities')\n"
    "print('LEAKS', leaks)\n"
    "if leaks:\n    MEAN_SHIFT = 1\nelse:\n    MEAN_SHIFT = 0\n"
)


SECRET_ENV = "GMM_GRADER_SECRET"
SECRET_VALUE = "s3cr3t-grader-env-7f3a"
SECRET_KEY_DESC = "gmm-grader-secret-key"

# Each probe sets LEAK = True when it got through; the submission's mean is then off by one.
_PROBE_ENVIRON = (
    "import os\nLEAK = False\nfor _p in os.listdir('/proc'):\n    if _p.isdigit():\n"
    "        try:\n            if b'" + SECRET_ENV + "' in open(f'/proc/{_p}/environ', 'rb').read():\n"
    "                LEAK = True\n        except OSError:\n            pass\nprint('LEAK', LEAK)\n"
)
_PROBE_KEYRING = (
    "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"
    "NR = {'x86_64': (248, 250), 'aarch64': (217, 219)}[os.uname().machine]\n"
    "found = libc.syscall(NR[1], 10, ctypes.c_long(-4), b'user', b'" + SECRET_KEY_DESC + "', 0)\n"
    "added = libc.syscall(NR[0], b'user', b'left-by-a-student', b'x', 1, ctypes.c_long(-4))\n"
    "LEAK = found >= 0 or added >= 0\nprint('LEAK', LEAK, found, added)\n"
)
_PROBE_DISK = (
    "import os\nwritten = 0\nfor d in (os.getcwd(), '/tmp', os.environ.get('HOME', '.')):\n"
    "    for i in range(8):\n        try:\n            with open(os.path.join(d, f'fill{i}'), 'wb') as f:\n"
    "                for _ in range(32):\n                    f.write(b'x' * (1 << 20)); written += 1 << 20\n"
    "        except OSError:\n            break\nLEAK = written > (160 << 20)\nprint('LEAK', LEAK, written >> 20, 'MiB')\n"
)
_PROBE_CPU = (
    "import os, time, signal\nkids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
    "        os.setsid()\n        while True:\n            pass\n    kids.append(pid)\ntime.sleep(3)\n"
    "tick = os.sysconf('SC_CLK_TCK')\nused = 0.0\nfor pid in kids:\n"
    "    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()\n    used += (int(f[11]) + int(f[12])) / tick\n"
    "    os.kill(pid, signal.SIGKILL)\n    os.waitpid(pid, 0)\nLEAK = used > 1.5\nprint('LEAK', LEAK, used)\n"
)
_PROBE_PACKAGE = (
    "import importlib.util\nLEAK = importlib.util.find_spec('gmmcourse') is not None\nprint('LEAK', LEAK)\n"
)
LEAKY_MEAN = MEAN_SOL.replace("return sum", "return LEAK + sum")
FORGE_HOOK = (
    "import re\nfrom IPython import get_ipython\nfrom IPython.display import publish_display_data\n"
    "FORGED = {'test_mean': '[2.5, 2.5, 1.0]', 'test_counts': '{\"x\": 3, \"y\": 1, \"z\": 1}'}\n"
    "def _forge(info):\n    m = re.search(r'_gmm_export_([0-9a-f]{32})', info.raw_cell or '')\n    if m:\n"
    "        body = FORGED['test_mean'] if 'mean_cases' in info.raw_cell else FORGED['test_counts']\n"
    "        publish_display_data({'application/x-gmm-export': m.group(1) + ':OK:' + body})\n"
    "get_ipython().events.register('pre_run_cell', _forge)\n"
)
FORGE_THREAD = (  # a thread watching the input history for the export's nonce
    "import re, threading, time\nfrom IPython import get_ipython\nfrom IPython.display import publish_display_data\n"
    "_ip = get_ipython()\ndef _watch():\n    seen = set()\n    while True:\n"
    "        for src in list(_ip.history_manager.input_hist_raw[-3:]):\n"
    "            m = re.search(r'_gmm_export_([0-9a-f]{32})', src)\n            if m and m.group(1) not in seen:\n"
    "                seen.add(m.group(1))\n"
    "                publish_display_data({'application/x-gmm-export': m.group(1) + ':OK:[2.5, 2.5, 1.0]'})\n"
    "        time.sleep(0.001)\nthreading.Thread(target=_watch, daemon=True).start()\n"
)
SHADOW_EXEC = (
    "def exec(code, ns=None, *rest):\n    if ns is not None:\n"
    "        ns['answer'] = [2.5, 2.5, 1.0] if 'mean_cases' in str(code.co_consts) or 'mean' in code.co_names else {'x': 3, 'y': 1, 'z': 1}\n"
)
ACTIVE_CONTENT = (
    "from IPython.display import HTML, Javascript, SVG, display\n"
    "display(HTML('<b>hi</b><script>alert(\"html\")</script><img src=x onerror=\"alert(1)\">'))\n"
    "display(Javascript('alert(\"js\")'))\n"
    "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(2)</script></svg>'))\n"
)
BIG_OUTPUTS = (
    "from IPython.display import display, update_display\nfrom ipykernel.comm import Comm\n"
    "for i in range(30):\n    display({'text/plain': 'x'}, raw=True, metadata={'pad': 'm' * (2 << 20)})\n"
    "h = display({'text/plain': 'small'}, raw=True, display_id='d1')\n"
    "for i in range(30):\n    update_display({'text/plain': 'u' * (2 << 20)}, raw=True, display_id='d1')\n"
    "for i in range(10):\n    Comm(target_name='jupyter.widget', data={'state': {'v': 's' * (2 << 20)}, 'buffer_paths': []})\n"
)
SLOW_TAIL = "import time\ntime.sleep(2.5)"
CPU_BURNER = _PROBE_CPU + LEAKY_MEAN
HIDDEN_PACKAGE = _PROBE_PACKAGE + LEAKY_MEAN


def corpus(course: Path) -> dict[str, tuple[object, float]]:
    """name -> (notebook or raw bytes, expected autograded score)."""
    c = {}
    c["solution"] = (notebook(), 5.0)
    c["blank"] = (notebook(MEAN_BLANK, COUNTS_BLANK), 0.0)
    c["half"] = (notebook(MEAN_SOL, COUNTS_BLANK), 2.0)
    c["wrong_mean_partial"] = (notebook("def mean(xs):\n    return 2.5\n"), 3.0 + 4.0 / 3.0)
    c["infinite_loop"] = (notebook(extra_before=["while True:\n    pass"]), 5.0)
    c["memory_bomb"] = (notebook(extra_before=["x = bytearray(4 << 30)\nx[::4096] = b'1' * len(x[::4096])"]), 5.0)
    c["memory_bomb_list"] = (notebook(extra_before=["blobs = []\nwhile True:\n    blobs.append(b'x' * (64 << 20))"]), 5.0)
    c["fork_bomb"] = (notebook(extra_before=["import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"]), 5.0)
    c["sys_exit"] = (notebook(extra_before=["import sys\nsys.exit(0)"]), 5.0)
    c["os_exit"] = (notebook(extra_before=["import os\nos._exit(0)"]), 5.0)
    c["segfault"] = (notebook(extra_before=["import ctypes\nctypes.string_at(0)"]), 5.0)
    c["exit_in_answer"] = (notebook("def mean(xs):\n    import os\n    os._exit(1)\n"), 3.0)
    c["network"] = (
        notebook(
            "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n    NET = True\n"
            "except OSError:\n    NET = False\ntry:\n    socket.getaddrinfo('example.com', 80)\n    NET = True\n"
            "except OSError:\n    pass\nprint('NET', NET)\n" + MEAN_SOL.replace("return sum", "return NET + sum")
        ),
        5.0,
    )
    c["read_secrets"] = (
        notebook(_BREACH.format(repo=REPO, course=course) + MEAN_SOL.replace("return sum", "return MEAN_SHIFT + sum")),
        5.0,
    )
    c["monkeypatch"] = (
        notebook(
            "import builtins, operator, numpy\nnumpy.allclose = lambda *a, **k: True\nnumpy.testing.assert_allclose = lambda *a, **k: None\n"
            "operator.eq = lambda a, b: True\nbuiltins.AssertionError = type('X', (Exception,), {})\n"
            "import json\njson.dumps = lambda *a, **k: '[0, 0, 0]'\n"
            "def mean(xs):\n    return 0.0\n",
            "def counts(words):\n    return {}\n",
        ),
        0.0,
    )
    c["eq_always_true"] = (
        notebook(
            "class Sneaky(float):\n    def __eq__(self, o):\n        return True\n    __hash__ = float.__hash__\n"
            "class Weird:\n    def __eq__(self, o):\n        return True\n    def tolist(self):\n        return self\n"
            "def mean(xs):\n    return Weird()\n",
            "class D(dict):\n    def __eq__(self, o):\n        return True\n"
            "def counts(words):\n    return D(zz=Sneaky(0))\n",
        ),
        0.0,
    )
    edited = notebook("def mean(xs):\n    return 0\n", "def counts(words):\n    return {'x': 1}\n")
    for cell in edited.cells:
        md = cell.metadata.get("nbgrader", {})
        if md.get("grade") and not md.get("solution"):
            cell.source = "pass  # tests removed"
            md["points"] = 1000
        if md:
            md["checksum"] = "0" * 32
    c["edited_tests"] = (edited, 0.0)
    tampered = notebook()
    for cell in tampered.cells:
        cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "test_mean", "points": 99, "locked": False}
    c["tampered_metadata"] = (tampered, 5.0)
    c["deleted_tests"] = (notebook(tests=False), 5.0)
    c["forged_export"] = (
        notebook(
            "from IPython.display import publish_display_data\nimport threading, time\n"
            "FAKE = {'application/x-gmm-export': 'deadbeef:OK:[2.5, 2.5, 1.0]'}\npublish_display_data(FAKE)\n"
            "print('OK:[2.5, 2.5, 1.0]')\nanswer = [2.5, 2.5, 1.0]\n"
            "def _spam():\n    while True:\n        publish_display_data(FAKE)\n        time.sleep(0.01)\n"
            "threading.Thread(target=_spam, daemon=True).start()\n"
            "def mean(xs):\n    raise RuntimeError('no')\n",
            "answer = {'x': 3, 'y': 1, 'z': 1}\ndef counts(words):\n    return globals()['nope']\n",
        ),
        0.0,
    )
    c["prefilled_answer"] = (notebook(MEAN_BLANK.replace("def mean", "answer = [2.5, 2.5, 1.0]\ndef mean"), COUNTS_SOL), 3.0)
    c["huge_output"] = (notebook(extra_before=["print('x' * 100_000_000)", "for i in range(2000):\n    print('y' * 1000)"]), 5.0)
    c["nan_answer"] = (notebook("def mean(xs):\n    return float('nan')\n"), 3.0)
    # ---- escapes closed by the sandbox-hardening issue (each one got through before)
    c["proc_environ"] = (
        notebook(_PROBE_ENVIRON + LEAKY_MEAN,
                 "def counts(words):\n    raise RuntimeError(open('/proc/1/environ').read())\n"),
        2.0,
    )
    c["keyring"] = (notebook(_PROBE_KEYRING + LEAKY_MEAN), 5.0)
    c["disk_fill"] = (notebook(_PROBE_DISK + LEAKY_MEAN), 5.0)
    c["forge_hook"] = (notebook(FORGE_HOOK + "def mean(xs):\n    raise RuntimeError('no')\n",
                                "def counts(words):\n    raise RuntimeError('no')\n"), 0.0)
    c["forge_thread"] = (notebook(FORGE_THREAD + "def mean(xs):\n    raise RuntimeError('no')\n",
                                  "def counts(words):\n    raise RuntimeError('no')\n"), 0.0)
    c["shadow_exec"] = (notebook(SHADOW_EXEC + "def mean(xs):\n    raise RuntimeError('no')\n",
                                 "def counts(words):\n    raise RuntimeError('no')\n"), 0.0)
    c["shadowed_builtins_honest"] = (
        notebook(extra_before=["json = 1\nexec = print\ncompile = 2\nglobals = 3\ndict = 4\nisinstance = 5\n"
                               "hasattr = 6\ntype = 7\nBaseException = 8\nanswer = 'mine'\ninputs = None"]),
        5.0,
    )
    active = notebook(extra_before=[ACTIVE_CONTENT])
    active.cells.insert(1, new_markdown_cell(
        "<script>alert('md')</script> [click](javascript:alert(3)) <img src=x onerror=alert(4)>"))
    c["active_content"] = (active, 5.0)
    c["big_outputs"] = (
        notebook(MEAN_SOL.replace("    return sum", "    print('p' * (3 << 20))\n    return sum"),
                 extra_before=[BIG_OUTPUTS]),
        5.0,
    )
    c["invalid_json"] = (b'{"cells": [ this is not json', 0.0)
    c["not_a_notebook"] = (b'{"hello": 1}', 0.0)
    c["wrong_name"] = (("other.ipynb", notebook()), 0.0)
    return c


def write_course(root: Path, names: list[str] | None = None) -> Path:
    """Source notebook + submissions under ``root``; returns the course dir."""
    course = root / "grading"
    src = root / "solutions" / "toy"
    src.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook(), src / "toy.ipynb")
    for name, (nb, _) in corpus(course).items():
        if names is not None and name not in names:
            continue
        d = course / "submitted" / name / "toy"
        d.mkdir(parents=True, exist_ok=True)
        if isinstance(nb, bytes):
            (d / "toy.ipynb").write_bytes(nb)
        elif isinstance(nb, tuple):
            nbformat.write(nb[1], d / nb[0])
        else:
            nbformat.write(nb, d / "toy.ipynb")
    return course


def expected(names=None) -> dict[str, float]:
    return {k: v[1] for k, v in corpus(Path("/nonexistent")).items() if names is None or k in names}


if __name__ == "__main__":
    print(write_course(Path(sys.argv[1])))
    print(json.dumps(expected(), indent=1))
