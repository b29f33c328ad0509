"""Shared fixtures and tolerances for the test suite.

`benchmarks/` is put on `sys.path` here: the tests and the benchmarks share the grading corpus
`benchmarks/corpus/` (imported as `corpus`).
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.append(str(ROOT / "benchmarks"))

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))

import numpy as np
import pytest

# z-score for Monte Carlo tolerances: with a few hundred comparisons in the suite, a
# correct sampler fails a 4.5-sigma check with probability ~1e-5 per comparison.
MC_Z = 4.5


def mc_close(estimate, truth, se, z=MC_Z, floor=0.0, what=""):
    """Assert |estimate - truth| <= z * se + floor elementwise (within z Monte Carlo standard
    errors), with a helpful message naming `what` is compared."""
    estimate, truth, se = (np.asarray(a, dtype=float) for a in (estimate, truth, se))
    bound = z * se + floor
    err = np.abs(estimate - truth)
    assert np.all(err <= bound), f"{what + ': ' if what else ''}estimate {estimate} vs truth {truth}: error {err} exceeds {bound}"


def mcse(draws) -> float:
    """Monte Carlo standard error of the mean of `draws` (chains, draws), by ArviZ."""
    from arviz_stats.base import array_stats

    return float(array_stats.mcse(np.asarray(draws, np.float64), chain_axis=0, draw_axis=1))


# The executed chapters: the book build's, or the folder GMMCOURSE_EXECUTED names (one chapter
# run on its own with /work/notes/run_chapter.py).
EXECUTED = Path(os.environ.get("GMMCOURSE_EXECUTED", ROOT / "_build" / "jupyter_execute" / "chapters"))


def executed(page: str, suffix: str = ".glue.json") -> Path:
    """The executed chapter's file `<page><suffix>`; the test fails, saying how to make it, when it is missing."""
    path = EXECUTED / f"{page}{suffix}"
    if not path.exists():
        pytest.fail(f"{path} is missing: build the book (`make book`), or run the chapter on its own and "
                    "name its folder in GMMCOURSE_EXECUTED")
    return path


def glued(page: str) -> dict:
    """All glue values of an executed chapter (myst-nb's `<page>.glue.json`): name -> float
    where the shown text is a number, else the text (quotes stripped)."""
    values = {}
    for name, out in json.loads(executed(page).read_text()).items():
        text = out.get("data", {}).get("text/plain", "")
        text = ("".join(text) if isinstance(text, list) else text).strip("'\"")
        try:
            values[name] = float(text)
        except ValueError:
            values[name] = text
    return values


@pytest.fixture
def _bwrap():
    """Tests marked ``grading_helpers.needs_bwrap`` fail with this line (never skip) without bubblewrap."""
    import shutil

    assert shutil.which("bwrap"), "bubblewrap (bwrap) is not installed: apt-get install -y bubblewrap"


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)
