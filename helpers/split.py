"""Splits of interaction logs into training sequences and evaluation targets.

Input: a tidy, cleaned frame with ``user_id``, ``item_id`` (``1..n_items``) and
``timestamp`` whose rows are already in each user's chronological order
(see :func:`helpers.preprocess.sort_chronologically`). The split never reorders
rows, so ties in time keep the order the data came in.

Output: a :class:`Split`. Every evaluation target comes with the history a model
may see: strictly the interactions before it, never the target itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class EvalSet:
    """One evaluation target per user, with everything that came before it."""

    users: np.ndarray  # (N,) user ids
    histories: list[np.ndarray]  # N arrays of item ids, oldest first
    targets: np.ndarray  # (N,) the item that came next

    def __post_init__(self) -> None:
        sizes = {"users": len(self.users), "histories": len(self.histories), "targets": len(self.targets)}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"an EvalSet needs one user and one history per target, got "
                             f"{', '.join(f'{n} {k}' for k, n in sizes.items())}")

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


def fingerprint(split: Split) -> str:
    """sha256 of what training reads: n_items, the training sequences and the validation set."""
    h = hashlib.sha256(str(split.n_items).encode())
    for part in (split.train, split.valid.histories):
        h.update(np.array([len(s) for s in part], dtype=np.int64).tobytes())
        h.update(np.concatenate([np.asarray(s, dtype=np.int64) for s in part] + [np.zeros(0, np.int64)]).tobytes())
    h.update(np.asarray(split.valid.targets, dtype=np.int64).tobytes())
    return h.hexdigest()


def user_sequences(df: pd.DataFrame, column: str = "item_id") -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-user arrays of ``column`` (item ids by default), in the frame's row order.

    Returns ``(users, sequences)`` with users sorted. The sort by user is stable,
    so each user's rows keep their chronological order and its tie-break.
    """
    codes = df["user_id"].to_numpy()
    order = np.argsort(codes, kind="stable")
    users, starts = np.unique(codes[order], return_index=True)
    return users, np.split(df[column].to_numpy()[order], starts[1:])


def _check_frame(df: pd.DataFrame, n_items: int | None) -> int:
    """Refuse an empty frame or item ids outside ``1..n_items``; return ``n_items``."""
    missing = {"user_id", "item_id", "timestamp"}.difference(df.columns)
    if missing:
        raise ValueError(f"the frame lacks the column(s) {sorted(missing)}")
    if df.empty:
        raise ValueError("the frame is empty: nothing to split (did a cleaning step drop every row?)")
    n_items = int(df["item_id"].max()) if n_items is None else int(n_items)
    low, high = int(df["item_id"].min()), int(df["item_id"].max())
    if low < 1 or high > n_items:
        raise ValueError(f"item ids must be 1..n_items={n_items} (0 is PAD), got {low}..{high}; "
                         "reindex first (helpers.preprocess.reindex or prepare)")
    return n_items


def check_chronological(df: pd.DataFrame) -> None:
    """Raise if some user's rows are not in time order (a split would leak the future)."""
    if (df.groupby("user_id", sort=False)["timestamp"].diff() < 0).any():
        raise ValueError("rows are not in each user's time order; "
                         "run helpers.preprocess.sort_chronologically (or prepare) first")


def leave_one_out(df: pd.DataFrame, n_items: int | None = None) -> Split:
    """Last interaction of each user is the test target, the one before it validation.

    Users need at least 3 interactions (one to learn from, one to validate, one to
    test); shorter users are kept for training only. The test history includes the
    validation item, as in SASRec, BERT4Rec and S3-Rec. Raises ``ValueError`` for an
    empty frame, item ids outside ``1..n_items``, or when no user has 3 interactions.
    """
    n_items = _check_frame(df, n_items)
    check_chronological(df)
    users, seqs = user_sequences(df)
    keep = np.array([len(s) >= 3 for s in seqs], dtype=bool)
    if not keep.any():
        raise ValueError(f"no user has the 3 interactions leave-one-out needs (the longest has "
                         f"{max(len(s) for s in seqs)}): nothing to validate or test on")
    train = [s[:-2] if k else s for s, k in zip(seqs, keep)]
    ev_users = users[keep]
    ev_seqs = [s for s, k in zip(seqs, keep) if k]
    valid = EvalSet(ev_users, [s[:-2] for s in ev_seqs], np.array([s[-2] for s in ev_seqs], dtype=np.int64))
    test = EvalSet(ev_users, [s[:-1] for s in ev_seqs], np.array([s[-1] for s in ev_seqs], dtype=np.int64))
    return Split(n_items, train, users, valid, test, "leave-one-out: last item test, second-to-last validation")


def hold_out_users(split: Split, share: float, seed: int = 0) -> tuple[Split, np.ndarray, list[np.ndarray]]:
    """Real new users: a seeded ``share`` of ``split``'s users removed from it entirely.

    Returns ``(rest, users, sequences)``: ``rest`` is ``split`` without those users (no
    training sequence, no validation or test target: a model fitted on it never saw them),
    ``users`` (M,) their ids and ``sequences`` their whole logs, oldest first (training
    events, then the validation and test targets). Score a model on their first events with
    :func:`helpers.slices.first_events`. The same ``split``, ``share`` and ``seed`` always
    hold out the same users.
    """
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    users = np.asarray(split.train_users)
    n_out = int(round(share * len(users)))
    if not 0 < n_out < len(users):
        raise ValueError(f"holding out {share:.0%} of {len(users)} users leaves {n_out} new users "
                         f"and {len(users) - n_out} to train on; both need at least one")
    out = np.sort(np.random.default_rng(seed).choice(users, size=n_out, replace=False))
    whole = dict(zip(users.tolist(), split.train))  # users with fewer than 3 events: training only
    whole.update({int(u): np.append(h, t) for u, h, t in zip(split.test.users, split.test.histories,
                                                            split.test.targets)})
    sequences = [np.asarray(whole[int(u)]) for u in out]

    def without(part: EvalSet) -> EvalSet:
        keep = ~np.isin(part.users, out)
        return EvalSet(part.users[keep], [h for h, k in zip(part.histories, keep) if k], part.targets[keep])

    keep = ~np.isin(users, out)
    rest = Split(split.n_items, [seq for seq, k in zip(split.train, keep) if k], users[keep], without(split.valid),
                 without(split.test), f"{split.protocol}; {n_out} users ({share:.0%}) held out as new users")
    return rest, out, sequences


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
    n_items = _check_frame(df, n_items)
    check_chronological(df)
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
