"""Checks of notebook 07 (evaluation and comparison): Holm's correction, a paired bootstrap CI,
Kendall's tau.

References: ``stats.holm``, ``metrics.bootstrap_ci`` on the per-user differences, and
``scipy.stats.kendalltau``. A bootstrap is random, so its check compares the interval's centre
and width with the reference's within a tolerance several standard errors wide.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

from helpers import metrics, stats
from helpers.exercises import Failed, attempt, exercise, expect, require, show


@exercise("07.holm", "Holm-adjusted p-values")
def _holm(fn):
    cases = [([0.01], "one test: nothing to correct"),
             ([0.01, 0.04, 0.03], "multiply the i-th smallest p-value (i = 1..m) by m - i + 1, and return them in the input order"),
             ([0.02, 0.021, 0.5, 0.001], "an adjusted p-value never falls below that of a smaller p-value: keep the running maximum"),
             ([0.3, 0.6, 0.2], "adjusted p-values are capped at 1")]
    for p, hint in cases:
        case = f"p-values {p}"
        got = attempt(fn, np.array(p), case=case)
        q = np.asarray(p)
        order = np.argsort(q)
        no_max = np.empty_like(q)
        no_max[order] = np.minimum(q[order] * (len(q) - np.arange(len(q))), 1)
        expect(got, stats.holm(p), case=case, hint=hint,
               mistakes=[(stats.bonferroni(p), "that is Bonferroni (every p times m): Holm multiplies the "
                                               "i-th smallest by m - i + 1"),
                         (no_max, "keep the running maximum over the sorted adjusted p-values")])


@exercise("07.paired_bootstrap", "a 95% paired bootstrap CI of the mean difference")
def _paired_bootstrap(fn):
    rng = np.random.default_rng(7)
    base = rng.random(400)
    a, b = base + rng.normal(0.01, 0.02, 400), base  # strongly paired: the users explain most of the variance
    case = "a, b: 400 users' NDCG of two models that agree on most users (a is slightly better)"
    got = attempt(fn, a.copy(), b.copy(), n_resamples=4000, seed=0, case=case)
    try:
        low, high = (float(v) for v in got)
    except Exception:
        raise Failed(f"for {case}: expected a pair (low, high), got {show(got)}. Hint: return (low, high)") from None
    ref_low, ref_high = metrics.bootstrap_ci(a - b, n_resamples=20000, seed=1)
    diff, width, ref_width = float(np.mean(a - b)), high - low, ref_high - ref_low
    require(low <= diff <= high, case=case, got=(round(low, 5), round(high, 5)),
            hint=f"the interval should contain the observed mean difference {diff:.5f}: resample the per-user "
                 "differences a - b and take the mean of each resample")
    require(width < 3 * ref_width, case=case + ", the interval's width", got=round(width, 5),
            hint="resample USERS, keeping each user's pair (a_i, b_i) together: resampling a and b "
                 "independently ignores the pairing and gives a much wider interval")
    require(abs(width / ref_width - 1) < 0.09, case=case + ", the interval's width", got=round(width, 5),
            hint="a 95% interval: the 2.5th and 97.5th percentiles of the resampled means "
                 f"(its width here should be near {ref_width:.5f})")
    require(abs((low + high) / 2 - (ref_low + ref_high) / 2) < 0.1 * ref_width, case=case + ", the interval's centre",
            got=round((low + high) / 2, 5), hint="the percentile interval of the resampled mean differences")


@exercise("07.kendall_tau", "Kendall's tau between two rankings of the same models")
def _kendall_tau(fn):
    cases = [([1, 2, 3, 4], [1, 2, 3, 4], "the same order gives tau = 1"),
             ([1, 2, 3, 4], [4, 3, 2, 1], "the reversed order gives tau = -1"),
             ([0.31, 0.29, 0.12, 0.40, 0.05], [0.20, 0.22, 0.10, 0.25, 0.01],
              "tau = (concordant pairs - discordant pairs) / number of pairs, n (n - 1) / 2")]
    for x, y, hint in cases:
        case = f"x {x}, y {y}"
        got = attempt(fn, np.array(x), np.array(y), case=case)
        n_pairs = len(x) * (len(x) - 1) / 2
        tau = scipy_stats.kendalltau(x, y).statistic
        expect(got, tau, case=case, hint=hint,
               mistakes=[((tau + 1) / 2, "that is the share of concordant pairs: subtract the discordant ones"),
                         (tau * n_pairs, "divide by the number of pairs, n (n - 1) / 2")])
