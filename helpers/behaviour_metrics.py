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
    return {"accuracy": float(np.mean(np.asarray(y) == np.asarray(pred))),
            "macro_f1": float(per_class(confusion(y, pred, n_classes)).f1.mean())}


def user_bootstrap(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, n_classes: int,
                   n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Percentile CIs of :func:`summary` over users drawn with replacement: one row per metric."""
    users, inverse = np.unique(groups, return_inverse=True)
    # one confusion matrix per user; a resample's matrix is the sum of its users' matrices
    per_user = np.zeros((len(users), n_classes * n_classes))
    np.add.at(per_user, (inverse, np.asarray(y) * n_classes + np.asarray(pred)), 1)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        m = per_user[rng.integers(0, len(users), len(users))].sum(0).reshape(n_classes, -1)
        draws.append({"accuracy": np.trace(m) / m.sum(), "macro_f1": per_class(m).f1.mean()})
    draws = pd.DataFrame(draws)
    alpha = (1 - level) / 2
    point = summary(y, pred, n_classes)
    return pd.DataFrame({"value": point, "lo": draws.quantile(alpha), "hi": draws.quantile(1 - alpha)})


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
