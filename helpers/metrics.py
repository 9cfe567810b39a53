"""Rank-based metrics for next-item prediction, plus what accuracy does not show.

Everything starts from two counts per user (see :func:`target_ranks`): how many
candidate items score strictly higher than the target (``greater``) and how many
other candidates score exactly the same (``ties``).

**Ties.** A model that cannot tell items apart (an untrained one, a popularity
count with many equal counts, a model whose scores collapsed) produces ties.
Placing the target *first* among its ties, as ``rank = 1 + greater`` does, gives
a constant model HR@10 = 1. Published results were inflated exactly this way:
Sun et al. ("A Re-evaluation of Knowledge Graph Completion Methods", ACL 2020)
showed that several models gave many candidates the same score and ranked the
target first among them. Placing it last is just as arbitrary.
We report the **expected** value under a uniformly random tie-break: the target's
rank is uniform over ``greater + 1 .. greater + ties + 1``. A constant model then
gets HR@K = K / number of candidates, which is what guessing deserves.

Letters: B batch, V = n_items + 1 score columns (column 0 = PAD), N users.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from helpers.ids import PAD


def exclude_items(scores: torch.Tensor, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """In place: -inf at column PAD and at every id in ``items`` (B, L), except each row's target.

    ``items`` may hold PAD and repeats (a padded history works as is). The
    target stays rankable even when it is among ``items`` (repeat consumption).
    One indexed write per batch, no loop over items. Returns ``scores``.
    """
    rows = torch.arange(len(targets), device=scores.device)
    kept = scores[rows, targets]  # (B,)
    scores[:, PAD] = -math.inf
    scores.scatter_(1, items, -math.inf)
    scores[rows, targets] = kept
    return scores


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor | None = None,
                 work: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Count the items above and tied with each target: ``(greater (B,), ties (B,))``.

    ``scores`` (B, V) without NaN, where column PAD and the ids in ``excluded``
    (B, L) are already -inf (:func:`exclude_items`). An excluded item is then never
    greater than the target; ``excluded`` is read only to keep excluded items out
    of the ties of a target that itself scores -inf. ``ties`` never counts the
    target itself. ``work``: an optional float32 buffer shaped like ``scores``,
    reused between batches (allocating it is slower than the comparisons).
    """
    if scores.shape[1] >= 2 ** 24:
        raise ValueError("counts are summed in float32: at most 2**24 columns")
    t = scores.gather(1, targets.view(-1, 1))  # (B, 1)
    if torch.isnan(t).any():
        raise ValueError("a target scored NaN")
    work = torch.empty(scores.shape, device=scores.device) if work is None else work
    ones = torch.ones(scores.shape[1], device=scores.device)
    # 0/1 floats summed by a matrix-vector product: exact below 2**24 and many
    # times faster on CPU than summing a bool tensor
    greater = torch.mv(torch.gt(scores, t, out=work), ones).long()
    ties = torch.mv(torch.eq(scores, t, out=work), ones).long() - 1
    low = torch.isneginf(t.view(-1)).nonzero().view(-1)
    if len(low):  # such a target ties with the excluded items (all -inf): take them back out
        tied = torch.zeros(len(low), scores.shape[1], dtype=torch.bool, device=scores.device)
        tied[:, PAD] = True
        if excluded is not None:
            tied.scatter_(1, excluded[low], True)
        tied[torch.arange(len(low), device=tied.device), targets[low]] = False
        ties[low] -= tied.sum(1)
    return greater, ties


def _rank_window(greater, ties, k: int):
    """The target's possible ranks are g+1 .. g+n (n = ties + 1); clip both ends at K."""
    greater, ties = torch.as_tensor(greater), torch.as_tensor(ties)
    n = (ties + 1).double()
    return greater.clamp(max=k), (greater + ties + 1).clamp(max=k), n


def _expected_gain(greater, ties, k: int, gains: torch.Tensor) -> torch.Tensor:
    """Average of ``gains[r - 1]`` over the ranks r = g+1 .. g+n, counting 0 beyond K."""
    lo, hi, n = _rank_window(greater, ties, k)
    cum = torch.cat([gains.new_zeros(1), gains.cumsum(0)]).to(lo.device)  # cum[m] = gains of ranks 1..m
    return (cum[hi] - cum[lo]) / n


def hit_rate(greater, ties, k: int) -> torch.Tensor:
    """Expected HR@K = P(rank <= K) = clamp((K - greater) / (ties + 1), 0, 1); (N,) float64."""
    lo, hi, n = _rank_window(greater, ties, k)
    return (hi - lo).double() / n


def ndcg(greater, ties, k: int) -> torch.Tensor:
    """Expected NDCG@K with one relevant item: mean of 1 / log2(rank + 1) over ranks <= K."""
    ranks = torch.arange(1, k + 1, dtype=torch.float64)
    return _expected_gain(greater, ties, k, 1.0 / torch.log2(ranks + 1))


def mrr(greater, ties, k: int) -> torch.Tensor:
    """Expected MRR@K: mean of 1 / rank over ranks <= K (0 beyond K)."""
    return _expected_gain(greater, ties, k, 1.0 / torch.arange(1, k + 1, dtype=torch.float64))


def rank_metrics(greater, ties, ks: Sequence[int] = (5, 10, 20)) -> dict[str, np.ndarray]:
    """``{"hr@5": (N,), "ndcg@5": (N,), "mrr@5": (N,), ...}`` as NumPy arrays."""
    out = {}
    for k in ks:
        for name, fn in (("hr", hit_rate), ("ndcg", ndcg), ("mrr", mrr)):
            out[f"{name}@{k}"] = fn(greater, ties, k).cpu().numpy()
    return out


# ------------------------------------------------------- set metrics of lists
def precision_recall_at_k(top_items: np.ndarray, relevant: Sequence[Sequence[int]],
                          k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user ``(precision@K (N,), recall@K (N,))`` of top-K lists against relevant sets.

    ``top_items`` (N, >= K) recommendations, best first (PAD = 0 marks an empty slot);
    ``relevant``: N collections of relevant item ids. Precision@K = hits / K (the
    denominator is K even when a list is shorter); recall@K = hits / |relevant|
    (0 for a user with nothing relevant). With one relevant item per user
    (leave-one-out), recall@K is HR@K and precision@K is HR@K / K.
    """
    top = np.asarray(top_items)[:, :k]
    if top.shape[1] < k or len(top) != len(relevant):
        raise ValueError(f"need (N, >= {k}) lists for N = {len(relevant)} users, got {np.shape(top_items)}")
    hits = np.array([np.isin(row[row > 0], np.asarray(list(rel), dtype=np.int64)).sum()
                     for row, rel in zip(top, relevant)], dtype=np.float64)
    sizes = np.array([len(set(rel)) for rel in relevant], dtype=np.float64)
    return hits / k, np.divide(hits, sizes, out=np.zeros_like(hits), where=sizes > 0)


# ---------------------------------------------------------------- sampled metrics
def sample_negatives(excluded: torch.Tensor, n_cols: int, n: int = 100, weights: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` negatives per row without replacement: ``(items (B, n), valid (B, n))``.

    Candidates are the columns 1..n_cols-1 except the ids in ``excluded`` (B, L)
    (the target, seen items; PAD allowed). ``weights`` (n_cols,) gives popularity
    sampling (None = uniform). Efraimidis-Spirakis keys ``log(u) / w`` and a top-n
    draw a whole batch at once; ``valid`` is False where a row had fewer than
    ``n`` candidates. Same generator state, same draws.
    """
    keys = torch.rand((len(excluded), n_cols), generator=generator, device=excluded.device)
    if weights is not None:  # uniform keys need no log: the top-n is the same
        keys = keys.log_().div_(weights.to(keys))  # log(u) / w <= 0; w = 0 or u = 0 -> -inf, never NaN
    keys[:, PAD] = -math.inf
    keys.scatter_(1, excluded, -math.inf)
    top, items = keys.topk(min(n, n_cols), dim=1)  # (B, n)
    return items, torch.isfinite(top)


def sampled_target_ranks(scores: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
                         valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(greater, ties)`` of each target among its sampled negatives only.

    Taught to show why sampled metrics mislead (Krichene & Rendle, KDD 2020): with
    100 negatives a target beaten by 1% of the catalogue still ranks about 2nd.
    """
    t = scores.gather(1, targets.view(-1, 1))  # (B, 1)
    neg = scores.gather(1, negatives)  # (B, n)
    return ((neg > t) & valid).sum(1), ((neg == t) & valid).sum(1)


# ---------------------------------------------------------- beyond accuracy
def item_popularity(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Interaction count of every item id: (n_items + 1,), entry 0 (PAD) = 0."""
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else []
    return np.bincount(flat, minlength=n_items + 1)[: n_items + 1]


def coverage(top_items: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Catalogue coverage@K: share of items 1..n_items in at least one top-K list (N, K)."""
    top = np.asarray(top_items)[:, :k]
    return float(np.unique(top[top > 0]).size / n_items)


def popularity_bias(top_items: np.ndarray, popularity: np.ndarray, k: int | None = None) -> dict[str, float]:
    """How popular the recommended items are, averaged over every slot of every top-K list.

    * ``arp``: mean interaction count (average recommendation popularity);
    * ``mean_log_pop``: mean log(1 + count), less dominated by a few blockbusters;
    * ``pop_percentile``: mean popularity percentile in the catalogue, 0.5 for
      items drawn at random, 1.0 when only the most popular item is shown.
    """
    pop = np.asarray(popularity, dtype=np.float64)
    pct = np.zeros_like(pop)
    pct[1:] = stats.rankdata(pop[1:]) / (len(pop) - 1)  # ties share the mean rank
    top = np.asarray(top_items)[:, :k]
    top = top[top > 0]
    return {"arp": float(pop[top].mean()), "mean_log_pop": float(np.log1p(pop[top]).mean()),
            "pop_percentile": float(pct[top].mean())}


def head_items(popularity: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Bool mask (n_items + 1,): the most popular items that together hold ``head_share``
    of all interactions (an item is head while the share before it is below the threshold)."""
    if not 0 < head_share < 1:
        raise ValueError("head_share must lie in (0, 1)")
    pop = np.asarray(popularity, dtype=np.float64).copy()
    pop[0] = 0
    order = np.argsort(-pop, kind="stable")
    before = np.cumsum(pop[order]) - pop[order]  # interactions held by more popular items
    head = np.zeros(len(pop), dtype=bool)
    head[order] = (before < head_share * pop.sum()) & (pop[order] > 0)
    return head


def by_group(per_user: Mapping[str, np.ndarray], groups: np.ndarray) -> pd.DataFrame:
    """Mean of every per-user metric within each group, with the number of users."""
    frame = pd.DataFrame(dict(per_user))
    frame.insert(0, "users", 1)
    keys = pd.Series(groups, index=frame.index)  # a Categorical keeps its bucket order
    return frame.groupby(keys, observed=True, sort=True).agg(
        {c: "sum" if c == "users" else "mean" for c in frame.columns})


def by_popularity(per_user: Mapping[str, np.ndarray], targets: np.ndarray, popularity: np.ndarray,
                  head_share: float = 0.2) -> pd.DataFrame:
    """Metrics for users whose target is a head item vs a long-tail item (see :func:`head_items`)."""
    head = head_items(popularity, head_share)[np.asarray(targets)]
    return by_group(per_user, np.where(head, "head", "tail"))


# ------------------------------------------------------------ uncertainty
def bootstrap_ci(values: np.ndarray, level: float = 0.95, n_resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of a per-user metric (N,)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise ValueError("a bootstrap needs at least 2 values")
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])  # scipy warns on a degenerate sample
    res = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=level,
                          method="percentile", vectorized=True, batch=100,
                          rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_comparison(a: np.ndarray, b: np.ndarray, level: float = 0.95, n_resamples: int = 1000,
                      seed: int = 0) -> dict[str, float]:
    """Compare two models on the same users: per-user metric arrays ``a`` and ``b`` (N,).

    Returns the means, their difference ``a - b`` with a bootstrap CI over users,
    and two paired tests: Wilcoxon signed-rank (no normality assumption) and the
    paired t-test. Pairing removes the user-to-user variance both models share,
    so it detects differences that two separate CIs would hide.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two (N,) arrays over the same users, got {a.shape} and {b.shape}")
    diff = a - b
    low, high = bootstrap_ci(diff, level, n_resamples, seed)
    if np.all(diff == 0):
        p_wilcoxon = p_ttest = 1.0  # identical results: no evidence of a difference
    else:
        p_wilcoxon = float(stats.wilcoxon(a, b).pvalue)
        p_ttest = float(stats.ttest_rel(a, b).pvalue)
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": float(diff.mean()),
            "ci_low": low, "ci_high": high, "p_wilcoxon": p_wilcoxon, "p_ttest": p_ttest}
