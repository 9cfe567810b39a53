"""Checks of notebook 01 (data cleaning): time order with ties, leave-one-out, the k-core.

The references are the course's own helpers: ``preprocess.sort_chronologically``,
``split.leave_one_out`` and ``preprocess.k_core``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers import preprocess, split
from helpers.exercises import Failed, attempt, exercise, expect


def _log(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def _as_dict(got, case: str) -> dict:
    if not isinstance(got, dict):
        raise Failed(f"for {case}: expected a dict {{user_id: [items...]}}, got {type(got).__name__}. "
                     "Hint: return {user_id: list of items}, one entry per user")
    return {int(u): [int(i) for i in items] for u, items in got.items()}


@exercise("01.user_sequences", "each user's items in time order, ties in file order")
def _user_sequences(fn):
    cases = [
        ("one user, no ties: rows (user, item, time) (1, 5, 30), (1, 7, 10), (1, 2, 20)",
         _log([(1, 5, 30), (1, 7, 10), (1, 2, 20)]), "order each user's items by timestamp, oldest first"),
        ("two users, rows interleaved", _log([(2, 4, 5), (1, 3, 9), (2, 1, 2), (1, 8, 1)]),
         "one list per user, each oldest first"),
        ("one user, items 9 and 3 rated in the same second (9 listed first)",
         _log([(1, 9, 50), (1, 3, 50), (1, 6, 10)]),
         "ties in time keep the file's order (a stable sort), never the item id"),
    ]
    for case, log, hint in cases:
        got = _as_dict(attempt(fn, log.copy(), case=case), case)
        ordered, _ = preprocess.sort_chronologically(log)
        users, seqs = split.user_sequences(ordered)
        expect(str(got), str({int(u): s.tolist() for u, s in zip(users, seqs)}), case=case, hint=hint)


@exercise("01.leave_one_out", "one user's leave-one-out split")
def _leave_one_out(fn):
    cases = [
        ([4, 8, 15, 16, 23], "the last item is the test target, the one before it the validation target"),
        ([7, 3, 7], "the test history includes the validation item (as in SASRec and BERT4Rec)"),
        ([5, 9], "a user with fewer than 3 items is kept for training only: (sequence, None, None)"),
    ]
    for seq, hint in cases:
        case = f"sequence {seq}"
        got = attempt(fn, list(seq), case=case)
        frame = _log([(1, item, t) for t, item in enumerate(seq)])
        if len(seq) < 3:
            want = (seq, None, None)
        else:
            s = split.leave_one_out(frame, n_items=max(seq))
            want = (s.train[0].tolist(), (s.valid.histories[0].tolist(), int(s.valid.targets[0])),
                    (s.test.histories[0].tolist(), int(s.test.targets[0])))
        mistakes = []
        if len(seq) >= 3:
            mistakes = [(repr((seq[:-2], (seq[:-2], seq[-2]), (seq[:-2], seq[-1]))),
                         "the test history includes the validation item: test = (sequence[:-1], sequence[-1])"),
                        (repr((seq[:-1], (seq[:-2], seq[-2]), (seq[:-1], seq[-1]))),
                         "training stops before the validation target: train = sequence[:-2]")]
        expect(repr(_plain(got)), repr(want), case=case, hint=hint, mistakes=mistakes)


def _plain(value):
    """Lists, tuples and numpy values as plain Python, so [1, 2] and np.array([1, 2]) compare equal."""
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [_plain(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return int(value) if isinstance(value, (int, np.integer)) else value


@exercise("01.k_core", "the k-core of a log, repeated until nothing changes")
def _k_core(fn):
    # user 3's only item 9 is rare; dropping it leaves user 3 with one row, which then makes item 2 rare
    rows = [(1, 1, 0), (1, 2, 1), (2, 1, 2), (2, 2, 3), (3, 2, 4), (3, 9, 5), (4, 1, 6), (4, 3, 7), (5, 3, 8)]
    cases = [
        ("a log that already is a 2-core", _log(rows[:4]), 2, "keep users and items with at least k rows (>= k)"),
        ("a log where one pass is not enough (k=2)", _log(rows), 2,
         "dropping items can push users below k and the other way round: repeat until a pass removes nothing"),
        ("the same log with k=1", _log(rows), 1, "k=1 keeps every row"),
    ]
    for case, log, k, hint in cases:
        got = attempt(fn, log.copy(), k, case=case + f", k={k}")
        if not isinstance(got, pd.DataFrame):
            raise Failed(f"for {case}: expected a DataFrame, got {type(got).__name__}. Hint: return the kept rows of log")
        want, _ = preprocess.k_core(log, k, k)
        pairs = sorted(zip(got.user_id.tolist(), got.item_id.tolist()))
        expect(str(pairs), str(sorted(zip(want.user_id.tolist(), want.item_id.tolist()))),
               case=case + f" (rows as (user, item)), k={k}", hint=hint)
