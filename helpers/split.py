"""Splits of interaction logs into training sequences and evaluation targets.

Input: a tidy, cleaned frame with ``user_id``, ``item_id`` (``1..n_items``) and
``timestamp`` whose rows are already in each user's chronological order
(see :func:`helpers.preprocess.sort_chronologically`). The split never reorders
rows, so ties in time keep the order the data came in.

Output: a :class:`Split`. Every evaluation target comes with the history a model
may see: strictly the interactions before it, never the target itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class EvalSet:
    """One evaluation target per user, with everything that came before it."""

    users: np.ndarray  # (N,) user ids
    histories: list[np.ndarray]  # N arrays of item ids, oldest first
    targets: np.ndarray  # (N,) the item that came next

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Split:
    """Training sequences plus validation and test targets."""

    n_items: int  # items are 1..n_items (PAD = 0)
    train: list[np.ndarray]  # one training sequence per user, oldest first
    train_users: np.ndarray  # (U,) the user of each training sequence
    valid: EvalSet
    test: EvalSet
    protocol: str  # a one-line description of how it was made

    def summary(self) -> pd.DataFrame:
        """Counts per part, for printing in notebooks."""
        return pd.DataFrame(
            {
                "sequences or targets": [len(self.train), len(self.valid), len(self.test)],
                "interactions": [
                    int(sum(len(s) for s in self.train)),
                    len(self.valid),
                    len(self.test),
                ],
            },
            index=["train", "valid", "test"],
        )


def user_sequences(df: pd.DataFrame, column: str = "item_id") -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-user arrays of ``column`` (item ids by default), in the frame's row order.

    Returns ``(users, sequences)`` with users sorted. The sort by user is stable,
    so each user's rows keep their chronological order and its tie-break.
    """
    codes = df["user_id"].to_numpy()
    order = np.argsort(codes, kind="stable")
    users, starts = np.unique(codes[order], return_index=True)
    return users, np.split(df[column].to_numpy()[order], starts[1:])


def check_chronological(df: pd.DataFrame) -> None:
    """Raise if some user's rows are not in time order (a split would leak the future)."""
    if (df.groupby("user_id", sort=False)["timestamp"].diff() < 0).any():
        raise ValueError("rows are not in each user's time order; "
                         "run helpers.preprocess.sort_chronologically (or prepare) first")


def leave_one_out(df: pd.DataFrame, n_items: int | None = None) -> Split:
    """Last interaction of each user is the test target, the one before it validation.

    Users need at least 3 interactions (one to learn from, one to validate, one to
    test); shorter users are kept for training only. The test history includes the
    validation item, as in SASRec, BERT4Rec and S3-Rec.
    """
    check_chronological(df)
    users, seqs = user_sequences(df)
    n_items = int(df["item_id"].max()) if n_items is None else n_items
    keep = np.array([len(s) >= 3 for s in seqs], dtype=bool)
    train = [s[:-2] if k else s for s, k in zip(seqs, keep)]
    ev_users = users[keep]
    ev_seqs = [s for s, k in zip(seqs, keep) if k]
    valid = EvalSet(ev_users, [s[:-2] for s in ev_seqs], np.array([s[-2] for s in ev_seqs], dtype=np.int64))
    test = EvalSet(ev_users, [s[:-1] for s in ev_seqs], np.array([s[-1] for s in ev_seqs], dtype=np.int64))
    return Split(n_items, train, users, valid, test, "leave-one-out: last item test, second-to-last validation")


def temporal_split(df: pd.DataFrame, valid_quantile: float = 0.8, test_quantile: float = 0.9,
                   n_items: int | None = None) -> Split:
    """A global temporal split: two cut-off times shared by every user.

    Training sequences hold every interaction before the validation cut-off. A user's
    validation target is their first interaction in ``[t_valid, t_test)`` and their
    test target their first interaction at or after ``t_test``; each history is every
    interaction of that user before the target. Users with no history before a target
    are skipped for it (nothing to predict from).
    """
    if not 0 < valid_quantile <= test_quantile < 1:
        raise ValueError("need 0 < valid_quantile <= test_quantile < 1")
    check_chronological(df)
    n_items = int(df["item_id"].max()) if n_items is None else n_items
    t_valid, t_test = df["timestamp"].quantile([valid_quantile, test_quantile]).to_numpy()
    users, seqs = user_sequences(df)
    _, times = user_sequences(df, "timestamp")
    train, train_users = [], []
    parts: dict[str, tuple[list, list, list]] = {"valid": ([], [], []), "test": ([], [], [])}
    for u, s, t in zip(users, seqs, times):
        before = int(np.searchsorted(t, t_valid, side="left"))  # t is sorted per user
        if before:
            train.append(s[:before])
            train_users.append(u)
        for name, lo, hi in (("valid", t_valid, t_test), ("test", t_test, np.inf)):
            idx = np.flatnonzero((t >= lo) & (t < hi))
            if len(idx) and idx[0] > 0:
                parts[name][0].append(u)
                parts[name][1].append(s[: idx[0]])
                parts[name][2].append(s[idx[0]])
    valid, test = (EvalSet(np.array(p[0], dtype=np.int64), p[1], np.array(p[2], dtype=np.int64)) for p in parts.values())
    return Split(n_items, train, np.array(train_users, dtype=np.int64), valid, test,
                 f"global temporal: valid from t={t_valid:.0f}, test from t={t_test:.0f}")
