"""Is model A really better than model B? Paired tests, many comparisons, and seeds.

* Two models scored on the **same** users are compared per user
  (:func:`helpers.metrics.paired_comparison`): the spread between users, which both
  models share, cancels out.
* Comparing many pairs at once inflates false discoveries: at a 5% level, 10 pairs
  of equal models give at least one "significant" difference about 40% of the time.
  :func:`holm` corrects the p-values (Holm, 1979): as safe as Bonferroni (the chance
  of any false discovery stays below the level) but never less powerful.
  SciPy has no Holm (``scipy.stats.false_discovery_control`` is Benjamini-Hochberg,
  which controls a different error rate), so it is written here, in five lines.
* A bootstrap CI is about the **users** (another sample of users); a second training
  run with another seed moves the number too. :func:`seed_table` puts the two side
  by side.

Letters: N users, m comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from helpers import metrics


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (m,), in the input order; reject where adjusted <= level.

    Sort the p-values, multiply the i-th smallest (i = 1..m) by m - i + 1, keep the
    running maximum (an adjusted p-value never falls below a smaller one's) and cap at 1.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must be a 1-D array in [0, 1]")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))  # m, m-1, ..., 1
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def bonferroni(pvalues: Sequence[float]) -> np.ndarray:
    """Bonferroni-adjusted p-values: each times m, capped at 1 (for comparison with Holm)."""
    p = np.asarray(pvalues, dtype=np.float64)
    return np.minimum(p * len(p), 1.0)


def pairwise(per_user: Mapping[str, np.ndarray], level: float = 0.95, n_resamples: int = 1000,
             seed: int = 0, test: str = "wilcoxon") -> pd.DataFrame:
    """Every pair of models compared on the same users, with Holm-corrected p-values.

    ``per_user``: model name -> (N,) per-user metric, the same users in the same order.
    One row per pair ``a`` vs ``b``: means, ``diff`` = a - b with a bootstrap CI, the
    raw p-value of ``test`` ("wilcoxon" or "ttest"), ``p holm`` and ``significant``
    (Holm-adjusted p below 1 - level).
    """
    if test not in ("wilcoxon", "ttest"):
        raise ValueError(f"test must be 'wilcoxon' or 'ttest', got {test!r}")
    rows = []
    for a, b in combinations(per_user, 2):
        out = metrics.paired_comparison(per_user[a], per_user[b], level, n_resamples, seed)
        rows.append({"a": a, "b": b, "mean a": out["mean_a"], "mean b": out["mean_b"], "diff": out["diff"],
                     "diff lo": out["ci_low"], "diff hi": out["ci_high"], "p": out[f"p_{test}"]})
    table = pd.DataFrame(rows)
    if len(table):
        table["p holm"] = holm(table["p"].to_numpy())
        table["significant"] = table["p holm"] < 1 - level
    return table


def seed_spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min, max and range of one number over training seeds."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise ValueError("a spread needs at least 2 seeds")
    return {"seeds": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)),
            "min": float(v.min()), "max": float(v.max()), "range": float(v.max() - v.min())}


def seed_table(per_seed: Mapping[str, Sequence[np.ndarray]], level: float = 0.95, n_resamples: int = 1000,
               seed: int = 0) -> pd.DataFrame:
    """Seed spread against bootstrap CI width, one row per model.

    ``per_seed``: model -> one (N,) per-user metric array per training seed. Columns:
    the :func:`seed_spread` of the means, ``ci width`` (the mean width of each seed's
    bootstrap CI over users) and ``range / ci width``: below 1, a retrain moves the
    number less than a new sample of users would; above 1, one seed is not enough.
    """
    rows = {}
    for model, runs in per_seed.items():
        spread = seed_spread([np.mean(r) for r in runs])
        widths = [high - low for low, high in (metrics.bootstrap_ci(r, level, n_resamples, seed) for r in runs)]
        width = float(np.mean(widths))
        rows[model] = {**spread, "ci width": width, "range / ci width": spread["range"] / width if width else np.inf}
    return pd.DataFrame(rows).T.rename_axis("model")
