"""False-fail rate and power of the dpmm function probes (issue 28).

The grader calls the student's `crp_probs` and `log_conditional` on probe states drawn afresh in
every grading run (`dpmm.inputs`) and compares them with the exact conditionals. Here the same
exports and checks run on many draws of those states (`inputs.generator` with seeds 0, 1, ...):

* for correct functions (the solution's vectorised ones, per-cluster loops with scipy, float32),
  the share of draws where a part fails them (false fail), with a 95 % upper bound;
* for each listed mistake, the share of draws where its part catches it with its own advice
  (power; linear space: the stable part, which names log space).

Results: benchmarks/results/dpmm_probe_rates.json. The dpmm notebook's grading cell and
docs/grading.md state them (`dpmm.PROBE_RATES`; tests/test_dpmm_grading.py keeps them in step).

Usage: python benchmarks/dpmm_probe_rates.py [draws]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402

from common import write  # noqa: E402
from gmmcourse.grading.assignments import dpmm as M  # noqa: E402
from test_dpmm_grading import FUNCTION_MISTAKES, base_namespace, correct_styles  # noqa: E402

PARTS = {"crp_predictive": (M.export_crp, {}, M.check_crp),
         "gibbs_conditional": (M.export_conditional, {"key": "conditional"}, M.check_conditional),
         "gibbs_conditional_stable": (M.export_conditional, {"key": "stable"}, M.check_stable)}


def verdicts(ns: dict, inputs: dict, context: dict, parts) -> dict:
    out = {}
    for gid in parts:
        export, opts, check = PARTS[gid]
        try:
            answer = json.loads(json.dumps(export(ns, inputs, **opts), allow_nan=False))
        except Exception as e:  # as the kernel does: an export that raised is an error answer
            answer = {"error": type(e).__name__}
        out[gid] = check(answer, context)
    return out


def upper95(failed: int, n: int) -> float:
    """One-sided 95 % upper bound of a binomial rate (exact, Clopper-Pearson)."""
    from scipy.stats import beta

    return 1.0 if failed >= n else float(beta.ppf(0.95, failed + 1, n - failed))


def main(draws: int) -> None:
    base = base_namespace()
    styles = correct_styles(base)
    fails = {name: 0 for name in styles}
    caught = {name: 0 for name in FUNCTION_MISTAKES}
    t0 = time.perf_counter()
    for seed in range(draws):
        inputs = json.loads(json.dumps(M.inputs.generator(np.random.default_rng(seed))))
        context = json.loads(json.dumps(M._reference(inputs)))
        for name, (crp, cond) in styles.items():
            v = verdicts(dict(base, crp_probs=crp, log_conditional=cond), inputs, context, PARTS)
            if any(x.fraction != 1.0 for x in v.values()):
                fails[name] += 1
                print(f"seed {seed}: {name} failed: {[(g, x.message) for g, x in v.items() if x.fraction != 1.0]}")
        for name, (lost, fns) in FUNCTION_MISTAKES.items():
            v = verdicts(dict(base, **fns), inputs, context, lost)
            advice = M.ADVICE.get(name, "log space")
            if all(x.fraction == 0.0 and advice in x.message for x in v.values()):
                caught[name] += 1
        if seed % 50 == 49:
            print(f"{seed + 1} draws, {time.perf_counter() - t0:.0f} s", flush=True)
    power = {k: {"caught": c, "draws": draws} for k, c in caught.items()}
    write("dpmm_probe_rates", {
        "draws": draws,
        "false_fail": {k: {"failed": f, "draws": draws, "upper95": upper95(f, draws)} for k, f in fails.items()},
        "power": power,
        "lowest_power": min(c / draws for c in caught.values()),
        "seconds": time.perf_counter() - t0,
    })


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
