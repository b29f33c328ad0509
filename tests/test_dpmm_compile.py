"""The DP mixture's samplers (collapsed and blocked) compile once per data bucket: new data
sizes in the bucket and data that occupy other numbers of clusters lower no new program
(counted as in tests/test_compile.py)."""

from __future__ import annotations

import numpy as np

from gmmcourse import dpmm, dpmm_samplers
from gmmcourse.dpmm import MFM, DPPrior
from test_compile import count_lowerings

PRIOR = DPPrior(alpha=1.0, mean_loc=0.0, mean_strength=0.1, var_shape=2.0, var_scale=0.25)
RUN = {"num_chains": 2, "num_samples": 20, "num_warmup": 5}


def clusters(n, k, seed=0):
    """n points around k well-separated centres (k = 1: one blob)."""
    rng = np.random.default_rng(seed)
    return 10.0 * rng.integers(0, k, n) + 0.3 * rng.standard_normal(n)


def test_no_recompilation_for_other_sizes_or_cluster_counts():
    """After one call per bucket (32 points, 2,048 points), the DP and MFM samplers on other
    sizes in those buckets, on data with 1 to 6 clusters, lower nothing."""
    for n in (20, 100):
        dpmm.collapsed_gibbs(clusters(n, 2), PRIOR, **RUN)
        dpmm.collapsed_gibbs(clusters(n, 2), PRIOR, mfm=MFM(), **RUN)
    size = dpmm.run_chains._cache_size()
    modes = set()
    with count_lowerings() as count:
        for i, (n, k) in enumerate([(7, 1), (13, 3), (25, 6), (32, 2), (33, 1), (60, 4), (272, 2), (500, 6)]):
            post = dpmm.collapsed_gibbs(clusters(n, k, seed=i), PRIOR, seed=i, **RUN)
            assert post.labels.shape == (2, 20, n)
            modes.add(int(np.bincount(post.num_clusters.ravel()).argmax()))
            dpmm.collapsed_gibbs(clusters(n, k, seed=i), PRIOR, mfm=MFM(), seed=i, **RUN)
    assert count["n"] == 0, f"{count['n']} programs lowered for new sizes or cluster counts"
    assert dpmm.run_chains._cache_size() == size
    assert len(modes) >= 4, modes  # the runs did occupy different numbers of clusters


def test_blocked_sampler_compiles_once_per_bucket():
    """After one call per bucket, the blocked sampler on other sizes in those buckets (and other
    numbers of clusters) lowers nothing, its start included; padding changes no draw (the
    padded points are in no cluster: the draws of n points are those of the same n points
    padded to another bucket's size, checked by running with the bucket forced larger)."""
    blocked = {"k_max": 8, **RUN}
    for n in (20, 100):
        dpmm.blocked_gibbs(clusters(n, 2), PRIOR, **blocked)
    size = dpmm.run_chains._cache_size()
    with count_lowerings() as count:
        for i, (n, k) in enumerate([(7, 1), (13, 3), (32, 2), (33, 1), (272, 4), (500, 6)]):
            post = dpmm.blocked_gibbs(clusters(n, k, seed=i), PRIOR, seed=i, **blocked)
            assert post.labels.shape == (2, 20, n)
    assert count["n"] == 0, f"{count['n']} programs lowered for new sizes or cluster counts"
    assert dpmm.run_chains._cache_size() == size


def test_blocked_padding_changes_no_draw(monkeypatch):
    """The padded points count in no cluster: 13 points padded to 2,048 give the draws they
    give padded to 32."""
    x = clusters(13, 3, seed=5)
    small = dpmm.blocked_gibbs(x, PRIOR, k_max=8, seed=3, **RUN).labels
    monkeypatch.setattr(dpmm_samplers, "bucket_size", lambda n: 2048)
    big = dpmm.blocked_gibbs(x, PRIOR, k_max=8, seed=3, **RUN).labels
    assert np.array_equal(small, big)


def test_the_counter_counts_here():
    """Power: a new static setting (the number of kept sweeps) does compile a new program."""
    dpmm.collapsed_gibbs(clusters(20, 2), PRIOR, **RUN)
    size = dpmm.run_chains._cache_size()
    with count_lowerings() as count:
        dpmm.collapsed_gibbs(clusters(20, 2), PRIOR, **{**RUN, "num_samples": 21})
    assert count["n"] >= 1 and dpmm.run_chains._cache_size() == size + 1
