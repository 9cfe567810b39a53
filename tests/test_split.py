import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.preprocess import prepare, sort_chronologically
from helpers import split
from helpers.split import leave_one_out, temporal_split, user_sequences

SHARED = Path(os.environ.get("COURSE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def as_lists(arrays) -> list[list[int]]:
    return [a.tolist() for a in arrays]


def test_leave_one_out_by_hand():
    df = frame([(1, 5, 10), (2, 7, 10), (1, 3, 11), (3, 6, 1), (1, 8, 12), (2, 1, 11),
                (4, 3, 5), (1, 2, 13), (2, 4, 12), (3, 9, 2)])
    split = leave_one_out(df)
    assert split.n_items == 9
    assert split.train_users.tolist() == [1, 2, 3, 4]
    assert as_lists(split.train) == [[5, 3], [7], [6, 9], [3]]  # users 3 and 4: too short, all train
    assert split.valid.users.tolist() == [1, 2] and split.test.users.tolist() == [1, 2]
    assert as_lists(split.valid.histories) == [[5, 3], [7]] and split.valid.targets.tolist() == [8, 1]
    assert as_lists(split.test.histories) == [[5, 3, 8], [7, 1]] and split.test.targets.tolist() == [2, 4]
    assert split.summary().loc["train", "interactions"] == 6


def test_users_with_fewer_than_three_interactions_are_never_evaluated():
    df = frame([(1, 1, 0), (2, 2, 0), (2, 3, 1), (3, 4, 0), (3, 5, 1), (3, 6, 2)])
    split = leave_one_out(df, n_items=10)
    assert split.n_items == 10
    assert split.valid.users.tolist() == split.test.users.tolist() == [3]
    assert as_lists(split.train) == [[1], [2, 3], [4]]


def test_temporal_split_by_hand():
    # 11 timestamps, sorted 0 1 2 3 4 5 6 8 9 9 10: the 0.5 quantile is 5 and the 0.8
    # quantile 9 (linear interpolation lands on positions 5 and 8 exactly).
    df = frame([(1, 11, 0), (1, 12, 3), (1, 13, 8), (1, 14, 9), (1, 15, 10),
                (2, 21, 1), (2, 22, 9),
                (3, 31, 6),  # first and only interaction in the validation window: no history
                (4, 41, 2), (4, 42, 4), (4, 43, 5)])
    split = temporal_split(df, valid_quantile=0.5, test_quantile=0.8)
    assert "t=5" in split.protocol and "t=9" in split.protocol
    assert split.train_users.tolist() == [1, 2, 4]
    assert as_lists(split.train) == [[11, 12], [21], [41, 42]]
    assert split.valid.users.tolist() == [1, 4]
    assert as_lists(split.valid.histories) == [[11, 12], [41, 42]] and split.valid.targets.tolist() == [13, 43]
    assert split.test.users.tolist() == [1, 2]
    assert as_lists(split.test.histories) == [[11, 12, 13], [21]] and split.test.targets.tolist() == [14, 22]
    with pytest.raises(ValueError):
        temporal_split(df, valid_quantile=0.9, test_quantile=0.8)


def test_ties_in_time_keep_the_original_row_order():
    # items 9, 3, 7 share t=5; sorting ties by item id would give 3, 7, 9
    df = frame([(1, 9, 5), (1, 2, 9), (1, 3, 5), (1, 1, 1), (1, 7, 5)])
    ordered, _ = sort_chronologically(df)
    split = leave_one_out(ordered)
    assert as_lists(split.train) == [[1, 9, 3]]
    assert split.valid.targets.tolist() == [7] and split.test.targets.tolist() == [2]
    _, seqs = user_sequences(frame([(2, 4, 0), (1, 8, 0), (2, 6, 0), (1, 5, 0)]))
    assert as_lists(seqs) == [[8, 5], [4, 6]]  # grouping by user never reorders a user's rows


def random_log(n_users: int = 200, seed: int = 0) -> pd.DataFrame:
    """A chronologically sorted log where every interaction has its own item id."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 30, n_users)
    users = np.repeat(np.arange(1, n_users + 1), lengths)
    times = rng.integers(0, 50, len(users))  # few distinct times: many ties
    df = frame(np.column_stack([users, np.arange(1, len(users) + 1), times]))
    return sort_chronologically(df)[0].reset_index(drop=True)


@pytest.mark.parametrize("make", [leave_one_out, lambda df: temporal_split(df, 0.7, 0.85)],
                         ids=["leave-one-out", "temporal"])
def test_no_target_leaks_into_training_and_histories_are_strict_prefixes(make):
    df = random_log()
    split = make(df)
    full = dict(zip(*user_sequences(df)))
    trained = np.concatenate(split.train)
    for part in (split.valid, split.test):
        assert len(part) > 20
        # position level: each interaction has its own id, so no target may appear in training
        assert not np.isin(part.targets, trained).any()
        for user, history, target in zip(part.users, part.histories, part.targets):
            seq = full[user]
            pos = int(np.flatnonzero(seq == target)[0])
            assert pos >= 1 and np.array_equal(history, seq[:pos])  # ends right before its target
    for user, seq in zip(split.train_users, split.train):
        assert np.array_equal(seq, full[user][: len(seq)])  # training sequences are prefixes too
    if split.protocol.startswith("global temporal"):
        time_of = dict(zip(df["item_id"], df["timestamp"]))
        t_valid, t_test = df["timestamp"].quantile([0.7, 0.85])
        assert max(time_of[i] for i in trained) < t_valid
        assert all(t_valid <= time_of[i] < t_test for i in split.valid.targets)
        assert all(time_of[i] >= t_test for i in split.test.targets)
    else:
        valid_pos = {u: len(h) for u, h in zip(split.valid.users, split.valid.histories)}
        assert all(len(h) == valid_pos[u] + 1 for u, h in zip(split.test.users, split.test.histories))


def test_no_leakage_on_movielens_100k():
    data = pytest.importorskip("helpers.data")
    if not (SHARED / "ml-100k" / "u.data").is_file():
        pytest.skip("reference data not found; set COURSE_DATA_DIR")
    df = prepare(data.load_interactions("ml-100k", SHARED)).interactions
    assert not df.duplicated(["user_id", "item_id"]).any()  # nobody rates a film twice
    full = dict(zip(*user_sequences(df)))
    for split in (leave_one_out(df), temporal_split(df)):
        train = dict(zip(split.train_users, split.train))
        for part in (split.valid, split.test):
            assert len(part) > 50  # a global temporal split evaluates few ML-100K users (~80)
            for user, history, target in zip(part.users, part.histories, part.targets):
                assert target not in history and target not in train.get(user, [])
                assert np.array_equal(history, full[user][: len(history)])
                assert full[user][len(history)] == target


def test_unsorted_rows_are_refused():
    df = pd.DataFrame({"user_id": [1, 1, 1, 1], "item_id": [1, 2, 3, 4], "timestamp": [9, 0, 1, 2]})
    for make in (leave_one_out, lambda d: temporal_split(d, 0.5, 0.8)):
        with pytest.raises(ValueError, match="sort_chronologically"):
            make(df)


# --- issue 12: bad input fails here, naming the cause, not later in training -----------------------

def test_item08_evalset_with_mismatched_lengths_is_refused():
    from helpers.split import EvalSet

    with pytest.raises(ValueError, match="3 users, 3 histories, 2 targets"):
        EvalSet(np.arange(3), [np.array([1]), np.array([2]), np.array([3])], np.array([4, 5]))
    with pytest.raises(ValueError, match="2 users, 3 histories, 3 targets"):
        EvalSet(np.arange(2), [np.array([1])] * 3, np.array([4, 5, 6]))
    assert len(EvalSet(np.arange(0), [], np.zeros(0, dtype=np.int64))) == 0


def test_no_user_with_three_events_empty_frame_and_bad_ids_are_named():
    with pytest.raises(ValueError, match="no user has the 3 interactions.*the longest has 2"):
        leave_one_out(frame([(1, 1, 0), (1, 2, 1), (2, 3, 0)]))
    with pytest.raises(ValueError, match="frame is empty"):
        leave_one_out(frame([]))
    with pytest.raises(ValueError, match="frame is empty"):
        temporal_split(frame([]))
    with pytest.raises(ValueError, match=r"item ids must be 1..n_items=3.*got 1..9"):
        leave_one_out(frame([(1, 1, 0), (1, 2, 1), (1, 9, 2)]), n_items=3)
    with pytest.raises(ValueError, match=r"got 0..2"):
        leave_one_out(frame([(1, 0, 0), (1, 2, 1), (1, 1, 2)]))


def test_hold_out_users_removes_them_everywhere_and_keeps_their_whole_logs():
    df = pd.DataFrame({"user_id": np.repeat(np.arange(1, 11), 5),
                       "item_id": np.tile([1, 2, 3, 4, 5], 10) + np.repeat(np.arange(10), 5) % 3,
                       "timestamp": np.arange(50)})
    s = split.leave_one_out(df)
    rest, users, sequences = split.hold_out_users(s, 0.3, seed=1)
    assert len(users) == 3 and not set(users) & set(rest.train_users.tolist())
    assert not set(users.tolist()) & (set(rest.valid.users.tolist()) | set(rest.test.users.tolist()))
    assert len(rest.train) == len(rest.train_users) == 7 and len(rest.test) == 7
    for u, seq in zip(users, sequences):
        assert seq.tolist() == df.loc[df.user_id == u, "item_id"].tolist()  # all five events, in order
    again = split.hold_out_users(s, 0.3, seed=1)[1]
    assert again.tolist() == users.tolist()
    with pytest.raises(ValueError, match="share"):
        split.hold_out_users(s, 1.0)
    with pytest.raises(ValueError, match="new users"):
        split.hold_out_users(s, 0.01)
