"""Who a model serves well and which items it shows: metrics by slice, each with a CI.

An average over all users hides the users and items a model fails. This module cuts an
:class:`~helpers.evaluate.EvalResult` by

* **history length**; the user cold start is measured on real new users, held out of
  training (:func:`helpers.split.hold_out_users`) and scored on each of their first events
  (:func:`first_events`, :func:`by_events`, :func:`events_to_beat`); :func:`truncate_histories`
  only *simulates* newcomers by cutting trained users' histories, which flatters a model that
  has seen those users;
* **target popularity**: head vs long-tail targets (:func:`helpers.metrics.head_items`),
  and targets by training count (0 = an item cold start);

and measures what the top-K lists expose, beyond accuracy:

* **coverage@K**: the share of the catalogue that appears in at least one list;
* **popularity bias**: the mean popularity percentile of recommended items (0.5 = chosen
  at random, 1.0 = only the most popular item);
* **tail exposure**: the share of the attention a list gets (position-discounted like
  NDCG, ``1 / log2(rank + 1)``) that goes to long-tail items, against the tail's share of
  the catalogue: a fairness measure across item groups (Singh & Joachims, KDD 2018).

Every number comes with a 95% percentile bootstrap CI over users. Letters: N users, K list length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import metrics
from helpers.split import EvalSet


def mean_ci(values: np.ndarray, level: float = 0.95, n_resamples: int = 1000,
            seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of a per-user array (N,); a single user gives ``(v, v, v)``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 1:
        return float(values[0]), float(values[0]), float(values[0])
    low, high = metrics.bootstrap_ci(values, level, n_resamples, seed)
    return float(values.mean()), low, high


def slice_table(per_user: Mapping[str, np.ndarray], groups: np.ndarray, level: float = 0.95,
                n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per group: ``users``, then ``<metric>``, ``<metric> lo``, ``<metric> hi`` for each metric.

    ``groups`` (N,) labels (a Categorical keeps its order); empty categories are dropped.
    """
    keys = pd.Series(groups)
    labels = keys.cat.categories if isinstance(keys.dtype, pd.CategoricalDtype) else sorted(keys.unique())
    rows = {}
    for label in labels:
        members = (keys == label).to_numpy()
        if not members.any():
            continue
        row: dict[str, float] = {"users": int(members.sum())}
        for name, values in per_user.items():
            row[name], row[f"{name} lo"], row[f"{name} hi"] = mean_ci(np.asarray(values)[members], level,
                                                                      n_resamples, seed)
        rows[label] = row
    return pd.DataFrame(rows).T.rename_axis("slice").astype({"users": int})


def length_buckets(lengths: np.ndarray, edges: Sequence[int] = (1, 4, 10, 20, 50)) -> pd.Categorical:
    """History lengths cut into ``[edges[i], edges[i+1])`` buckets labelled "1-3", ..., "50+"."""
    bins = [*edges, np.inf]
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    return pd.cut(np.asarray(lengths), bins, right=False, labels=labels)


def by_history_length(result, metric_names: Sequence[str] = ("ndcg@10",),
                      edges: Sequence[int] = (1, 4, 10, 20, 50), **ci) -> pd.DataFrame:
    """:func:`slice_table` of ``result`` by the length of each user's full history."""
    return slice_table({m: result.metrics[m] for m in metric_names}, length_buckets(result.history_lengths, edges),
                       **ci)


def by_target_popularity(result, popularity: np.ndarray, metric_names: Sequence[str] = ("ndcg@10",),
                         head_share: float = 0.2, **ci) -> pd.DataFrame:
    """Head vs long-tail targets; the head are the most popular items holding ``head_share`` of
    the interactions in ``popularity`` (n_items + 1,) training counts."""
    head = metrics.head_items(popularity, head_share)[result.targets]
    return slice_table({m: result.metrics[m] for m in metric_names},
                       pd.Categorical(np.where(head, "head", "tail"), categories=["head", "tail"]), **ci)


def by_target_count(result, counts: np.ndarray, metric_names: Sequence[str] = ("ndcg@10",),
                    edges: Sequence[int] = (0, 1, 5, 20, 100), **ci) -> pd.DataFrame:
    """Targets by how often they occur in training; the "0-0" bucket is the item cold start."""
    bins = [*edges, np.inf]
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    groups = pd.cut(np.asarray(counts)[result.targets], bins, right=False, labels=labels)
    return slice_table({m: result.metrics[m] for m in metric_names}, groups, **ci)


# ------------------------------------------------------------ new users
def first_events(sequences: Sequence[np.ndarray], users: np.ndarray, max_events: int = 20) -> EvalSet:
    """The early events of users a model never trained on (:func:`helpers.split.hold_out_users`):
    for each sequence and each ``n = 1..max_events`` it is long enough for, one row with the
    first ``n`` events as history and event ``n + 1`` as target. A user appears once per
    history length, so a table by length (:func:`by_events`) has one row per user in each cell."""
    rows = [(u, np.asarray(seq[:n]), int(seq[n])) for u, seq in zip(users, sequences)
            for n in range(1, min(max_events, len(seq) - 1) + 1)]
    if not rows:
        raise ValueError("no sequence has two events: nothing to predict from a first event")
    u, h, t = zip(*rows)
    return EvalSet(np.asarray(u), list(h), np.asarray(t, dtype=np.int64))


def by_events(lengths: np.ndarray, scores: Mapping[str, np.ndarray], max_events: int = 20, level: float = 0.95,
              n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """New users by how many events they had: one row per history length ``1..max_events``
    (index ``events``) with ``users`` and, per scorer in ``scores`` (name -> (N,) metric of
    each scored event), its mean, ``lo`` and ``hi`` (95% bootstrap CI). ``lengths`` (N,) is the
    history length of each scored event (``EvalResult.history_lengths``). Each user has at most
    one event of each length (:func:`first_events`, or a stream's new users in notebook 09), so
    the interval of a row is over users."""
    lengths = np.asarray(lengths)
    keep = (lengths >= 1) & (lengths <= max_events)
    table = slice_table({name: np.asarray(v, dtype=np.float64)[keep] for name, v in scores.items()}, lengths[keep],
                        level, n_resamples, seed)
    return table.rename_axis("events")


def events_to_beat(table: pd.DataFrame, model: str, others: str | Sequence[str], smooth: int = 3) -> int | None:
    """The fewest events from which ``model`` scores at least as well as every one of ``others``
    at every longer length of ``table`` (:func:`by_events`), each column smoothed by a centred
    rolling mean of ``smooth`` rows; None when it is still behind at the longest length."""
    others = [others] if isinstance(others, str) else list(others)
    gap = (table[model] - table[others].max(axis=1)).rolling(smooth, center=True, min_periods=1).mean()
    behind = np.flatnonzero(gap.to_numpy() < 0)
    if len(behind) and behind[-1] == len(gap) - 1:
        return None
    return int(table.index[behind[-1] + 1]) if len(behind) else int(table.index[0])


def truncate_histories(eval_set: EvalSet, n: int) -> EvalSet:
    """The same users and targets, each history cut to its last ``n`` events: every user becomes
    a newcomer with ``n`` events, while the target stays one the model never trained on."""
    if n < 1:
        raise ValueError("keep at least one event")
    return EvalSet(eval_set.users, [np.asarray(h)[-n:] for h in eval_set.histories], eval_set.targets)


# ------------------------------------------------------------ beyond accuracy
def coverage_ci(top_items: np.ndarray, n_items: int, k: int = 10, level: float = 0.95,
                n_resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Coverage@K with a bootstrap CI over users: ``(value, low, high)``.

    Coverage is not a mean over users, so each resample draws N users with replacement
    and counts the distinct items in their lists. A resample holds fewer distinct users
    than the sample, so the interval sits a little below the value: read it as the spread.
    """
    top = np.asarray(top_items)[:, :k]
    value = metrics.coverage(top, n_items)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    for i in range(n_resamples):
        picked = top[rng.integers(0, len(top), len(top))].ravel()
        draws[i] = np.count_nonzero(np.bincount(picked, minlength=n_items + 1)[1:]) / n_items
    tail = (1 - level) / 2
    return value, float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def popularity_percentile(top_items: np.ndarray, popularity: np.ndarray, k: int = 10) -> np.ndarray:
    """(N,) mean popularity percentile of each user's top-K items (empty slots skipped)."""
    pop = np.asarray(popularity, dtype=np.float64)
    pct = np.zeros_like(pop)
    pct[1:] = pd.Series(pop[1:]).rank(method="average").to_numpy() / (len(pop) - 1)  # as metrics.popularity_bias
    top = np.asarray(top_items)[:, :k]
    filled = top > 0
    return np.where(filled, pct[top], 0).sum(1) / np.maximum(filled.sum(1), 1)


def tail_exposure(top_items: np.ndarray, popularity: np.ndarray, k: int = 10, head_share: float = 0.2,
                  discount: bool = True) -> np.ndarray:
    """(N,) share of each list's exposure that goes to long-tail items.

    Slot r (1-based) gets weight ``1 / log2(r + 1)`` with ``discount`` (users look at the
    top more), else 1. Empty slots carry no weight.
    """
    top = np.asarray(top_items)[:, :k]
    weights = 1 / np.log2(np.arange(2, top.shape[1] + 2)) if discount else np.ones(top.shape[1])
    weights = np.where(top > 0, weights, 0.0)  # (N, K)
    tail = ~metrics.head_items(popularity, head_share)[top] & (top > 0)
    return (weights * tail).sum(1) / np.maximum(weights.sum(1), 1e-12)


def beyond_accuracy(result, popularity: np.ndarray, n_items: int, k: int = 10, head_share: float = 0.2,
                    level: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Coverage@K, popularity percentile and tail exposure of ``result.top_items``, each with a CI,
    plus the tail's share of the catalogue (what equal exposure per item would give it)."""
    out: dict[str, float] = {}
    ci = {"level": level, "n_resamples": n_resamples, "seed": seed}
    out[f"coverage@{k}"], out[f"coverage@{k} lo"], out[f"coverage@{k} hi"] = coverage_ci(
        result.top_items, n_items, k, **ci)
    for name, values in ((f"pop percentile@{k}", popularity_percentile(result.top_items, popularity, k)),
                         (f"tail exposure@{k}", tail_exposure(result.top_items, popularity, k, head_share))):
        out[name], out[f"{name} lo"], out[f"{name} hi"] = mean_ci(values, **ci)
    head = metrics.head_items(popularity, head_share)[1:]
    out["tail share of catalogue"] = float(1 - head.mean())
    return out
