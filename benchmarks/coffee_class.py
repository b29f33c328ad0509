"""A class of `coffee_blends` submissions for the grading benchmark.

Every submission is the real released notebook (``exercises/coffee_blends``) with its answer
cells filled from the instructor's solution (``solutions/coffee_blends``), as a student who
solved it would hand it in; some then carry a typical mistake, a few run past the cell time
limit or raise. The mix repeats every `CYCLE` students, so any multiple of `CYCLE` (a serial
subset) holds the same mix as the whole class and costs the same per submission.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
AID = "coffee_blends"
SOLUTION = ROOT / "solutions" / AID / f"{AID}.ipynb"
RELEASE = ROOT / "exercises" / AID / f"{AID}.ipynb"

INTERPRETATION = ("Three blends: about 80, 118 and 157 mg of caffeine, in roughly equal shares, each with a "
                  "spread of 1-2 mg; every cup is assigned to its blend with near certainty.")

# kind -> (grade_id of the answer cell, text in the solution, its replacement); None: the correct answer
MISTAKES = {
    "correct": None,
    # the prior's scale taken as a variance: the model's log density is wrong
    "mistake_prior_variance": ("model_solution", "normal.repeat(K)(MEAN_LOC, MEAN_SCALE)",
                               "normal.repeat(K)(MEAN_LOC, MEAN_SCALE ** 2)"),
    # the weights' conditional ignores the counts: the posterior weights are the prior's
    "mistake_weights_ignore_counts": ("gibbs_solution", "g = rng.gamma(concentration + counts)",
                                      "g = rng.gamma(concentration + 0 * counts)"),
    # the means' conditional uses sd where it needs the variance
    "mistake_means_sd_not_variance": ("gibbs_solution", "precision = 1.0 / mean_scale ** 2 + n_k / sds ** 2",
                                      "precision = 1.0 / mean_scale ** 2 + n_k / sds"),
    # too few draws for the format check (and the posterior checks that need them)
    "mistake_too_few_draws": ("posterior_solution", "num_samples=1000", "num_samples=200"),
    # three million draws: the posterior cell runs past the cell time limit
    "timeout_three_million_draws": ("posterior_solution", "num_samples=1000", "num_samples=3_000_000"),
    # a typo: the model cell raises NameError, every later model cell fails
    "error_name_typo": ("model_solution", "jnp.log(weights)", "jnp.log(weight)"),
    # sample_z's shapes broadcast wrongly: the sampler raises, no posterior
    "error_broadcast": ("gibbs_solution", "norm.logpdf(x[None, :, None], means[:, None, :], sds[:, None, :])",
                        "norm.logpdf(x[None, :], means, sds)"),
    # the release handed back untouched
    "blank": "blank",
}
CYCLE = 25
# per CYCLE students: mostly correct, some mistakes, a few that time out or raise
MIX = {"correct": 17, "mistake_prior_variance": 1, "mistake_weights_ignore_counts": 1,
       "mistake_means_sd_not_variance": 1, "mistake_too_few_draws": 1, "timeout_three_million_draws": 1,
       "error_name_typo": 1, "error_broadcast": 1, "blank": 1}
assert sum(MIX.values()) == CYCLE


def _answers() -> dict[str, str]:
    """grade_id -> the solution's answer, as a student writes it (no solution markers)."""
    out = {}
    for c in nbformat.read(SOLUTION, 4).cells:
        m = c.metadata.get("nbgrader", {})
        if m.get("solution"):
            src = re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION\n", "", c.source, flags=re.M)
            out[m["grade_id"]] = INTERPRETATION if c.cell_type == "markdown" else src
    return out


def notebook(kind: str):
    """The released notebook as a student of this kind hands it in."""
    nb = nbformat.read(RELEASE, 4)
    if MISTAKES[kind] == "blank":
        return nb
    answers = _answers()
    if MISTAKES[kind] is not None:
        gid, old, new = MISTAKES[kind]
        assert old in answers[gid], (kind, old)
        answers[gid] = answers[gid].replace(old, new)
    filled = 0
    for c in nb.cells:
        gid = c.metadata.get("nbgrader", {}).get("grade_id")
        if c.metadata.get("nbgrader", {}).get("solution") and gid in answers:
            c.source = answers[gid]
            filled += 1
    assert filled == len(answers), "every answer cell of the release was filled"
    return nb


def kinds(n: int, seed: int = 0) -> list[str]:
    """The kind of each of `n` students: `MIX` shuffled within each cycle of `CYCLE`."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        cycle = [k for k, m in MIX.items() for _ in range(m)]
        rng.shuffle(cycle)
        out += cycle
    return out[:n]


def write_class(course: Path, n: int, seed: int = 0) -> dict[str, str]:
    """``course/submitted/sNNN/coffee_blends/coffee_blends.ipynb`` for `n` students; student -> kind."""
    made = {}
    texts = {k: nbformat.writes(notebook(k)) for k in MISTAKES}
    for i, kind in enumerate(kinds(n, seed)):
        student = f"s{i:03d}"
        d = course / "submitted" / student / AID
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{AID}.ipynb").write_text(texts[kind])
        made[student] = kind
    return made
