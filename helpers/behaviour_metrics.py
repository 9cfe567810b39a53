"""Metrics of the next *behaviour* as a classification: per class, macro, calibration, CIs.

Predictions come as probabilities ``P`` (N, C) over classes 0..C-1 (the caller drops any PAD
column), truths ``y`` (N,), and ``groups`` (N,): the user of each prediction. A user
contributes many predictions, which are not independent, so confidence intervals resample
*users* (a cluster bootstrap), never single predictions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: rows the true class, columns the prediction."""
    return np.bincount(np.asarray(y) * n_classes + np.asarray(pred), minlength=n_classes ** 2).reshape(n_classes, -1)


def per_class(m: np.ndarray) -> pd.DataFrame:
    """Precision, recall, F1 and support per class from a confusion matrix; a class never
    predicted (or never true) gets 0 where its denominator is 0, as scikit-learn's zero_division=0."""
    right, predicted, actual = np.diag(m).astype(float), m.sum(0), m.sum(1)
    precision = np.divide(right, predicted, out=np.zeros_like(right), where=predicted > 0)
    recall = np.divide(right, actual, out=np.zeros_like(right), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(right), where=both > 0)
    return pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": actual})


def summary(y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 (the unweighted mean of the per-class F1)."""
    return _scores(confusion(y, pred, n_classes))


def _scores(m: np.ndarray) -> dict[str, float]:
    """:func:`summary` read off a (C, C) confusion matrix, so a resample (a sum of per-user
    matrices) is scored by the same definition as the full data."""
    return {"accuracy": float(np.trace(m) / m.sum()), "macro_f1": float(per_class(m).f1.mean())}


def _user_draws(y: np.ndarray, preds: list[np.ndarray], groups: np.ndarray, n_classes: int,
                n_resamples: int, seed: int) -> list[pd.DataFrame]:
    """Scores of each prediction array (each (N,)) on ``n_resamples`` resamples of users drawn
    with replacement: one (n_resamples, 2) frame per array. Every array sees the same users in
    each resample, so differences between them are paired."""
    users, inverse = np.unique(groups, return_inverse=True)
    # one confusion matrix per user and model, (U, C*C); a resample's is the sum of its users'
    per_user = []
    for pred in preds:
        counts = np.zeros((len(users), n_classes * n_classes))
        np.add.at(counts, (inverse, np.asarray(y) * n_classes + np.asarray(pred)), 1)
        per_user.append(counts)
    rng = np.random.default_rng(seed)
    draws = [[] for _ in preds]
    for _ in range(n_resamples):
        pick = rng.integers(0, len(users), len(users))  # (U,) users, with replacement
        for out, counts in zip(draws, per_user):
            out.append(_scores(counts[pick].sum(0).reshape(n_classes, -1)))
    return [pd.DataFrame(out) for out in draws]


def user_bootstrap(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, n_classes: int,
                   n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Percentile CIs of :func:`summary` over users drawn with replacement: one row per metric."""
    (draws,) = _user_draws(y, [pred], groups, n_classes, n_resamples, seed)
    alpha = (1 - level) / 2
    point = summary(y, pred, n_classes)
    return pd.DataFrame({"value": point, "lo": draws.quantile(alpha), "hi": draws.quantile(1 - alpha)})


def paired_user_bootstrap(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, groups: np.ndarray,
                          n_classes: int, n_resamples: int = 1000, seed: int = 0,
                          level: float = 0.95) -> pd.DataFrame:
    """Which of two models wins: the difference a - b of :func:`summary`, with a percentile CI.

    ``y``, ``pred_a``, ``pred_b`` and ``groups`` are (N,): the true class, each model's predicted
    class and the user of each example. Users are drawn with replacement and the *same* draw
    scores both models (paired), so the user-to-user variance both share cancels in the
    difference. One row per metric (accuracy, macro_f1); columns ``a``, ``b``, ``diff`` on the
    full data and ``lo``, ``hi`` the CI of the difference.
    """
    y, pred_a, pred_b = np.asarray(y), np.asarray(pred_a), np.asarray(pred_b)
    if not (y.shape == pred_a.shape == pred_b.shape == np.shape(groups)) or y.ndim != 1:
        raise ValueError(f"need (N,) arrays, got y {y.shape}, a {pred_a.shape}, b {pred_b.shape}, "
                         f"groups {np.shape(groups)}")
    draws_a, draws_b = _user_draws(y, [pred_a, pred_b], groups, n_classes, n_resamples, seed)
    diff = draws_a - draws_b  # (n_resamples, 2)
    alpha = (1 - level) / 2
    a, b = pd.Series(summary(y, pred_a, n_classes)), pd.Series(summary(y, pred_b, n_classes))
    return pd.DataFrame({"a": a, "b": b, "diff": a - b, "lo": diff.quantile(alpha),
                         "hi": diff.quantile(1 - alpha)})


def reliability(probs: np.ndarray, y: np.ndarray, n_bins: int = 10) -> tuple[pd.DataFrame, float]:
    """Top-label calibration: bins of the predicted class's probability, with the mean
    confidence, the accuracy and the count in each; and the expected calibration error
    (ECE: the count-weighted mean gap between confidence and accuracy)."""
    conf, pred = probs.max(1), probs.argmax(1)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    frame = pd.DataFrame({"bin": bins, "confidence": conf, "correct": pred == np.asarray(y)})
    table = frame.groupby("bin").agg(confidence=("confidence", "mean"), accuracy=("correct", "mean"),
                                     count=("correct", "size"))
    ece = float((table["count"] * (table.confidence - table.accuracy).abs()).sum() / len(frame))
    return table, ece
