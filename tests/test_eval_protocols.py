"""Evaluation protocols: precision/recall@K by hand, repeated targets, temporal-split leakage,
and a results table that refuses numbers from another profile or data version."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import metrics, results_table, split
from helpers.evaluate import RepeatTargetWarning, evaluate, honest_exclude_seen, repeat_targets
from helpers.split import EvalSet
from toys import FixedScores


class Recorder:
    """Scores every item by its id and remembers every input it was given."""

    def __init__(self, n_items: int, max_len: int = 50):
        self.n_items, self.max_len, self.inputs = n_items, max_len, []

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.inputs.append(input_ids.clone())
        return torch.arange(self.n_items + 1, dtype=torch.float32).repeat(len(input_ids), 1)


def _eval_set(histories, targets) -> EvalSet:
    return EvalSet(np.arange(len(targets)), [np.asarray(h, dtype=np.int64) for h in histories],
                   np.asarray(targets, dtype=np.int64))


# ------------------------------------------------------------ precision / recall
def test_precision_and_recall_at_k_by_hand():
    top = np.array([[3, 1, 2], [5, 6, 7], [4, 0, 0]])  # the third list has one item (PAD = empty slot)
    relevant = [{1, 9}, {8}, {4}]
    precision, recall = metrics.precision_recall_at_k(top, relevant, k=3)
    # user 0: one hit (item 1) of K = 3 slots and of 2 relevant items; user 1: none; user 2: 1 of 3, 1 of 1
    assert np.allclose(precision, [1 / 3, 0, 1 / 3]) and np.allclose(recall, [1 / 2, 0, 1])
    precision, recall = metrics.precision_recall_at_k(top, relevant, k=1)  # only items 3, 5, 4 count
    assert np.allclose(precision, [0, 0, 1]) and np.allclose(recall, [0, 0, 1])


def test_precision_recall_reject_short_lists_and_count_empty_relevant_as_zero_recall():
    with pytest.raises(ValueError, match="lists"):
        metrics.precision_recall_at_k(np.array([[1, 2]]), [{1}], k=3)
    precision, recall = metrics.precision_recall_at_k(np.array([[1, 2]]), [set()], k=2)
    assert precision[0] == 0 and recall[0] == 0


def test_under_leave_one_out_recall_is_hr_and_precision_is_hr_over_k():
    rng = np.random.default_rng(0)
    n_items, n_users = 30, 40
    data = _eval_set([rng.choice(np.arange(1, n_items + 1), 4, replace=False) for _ in range(n_users)],
                     rng.integers(1, n_items + 1, n_users))
    result = evaluate(FixedScores(torch.randn(n_users, n_items + 1, generator=torch.Generator().manual_seed(1))),
                      data, n_items, ks=(5, 10), exclude_seen=False)
    for k in (5, 10):
        precision, recall = metrics.precision_recall_at_k(result.top_items, [[t] for t in data.targets], k)
        assert np.allclose(recall, result.metrics[f"hr@{k}"])
        assert np.allclose(precision, result.metrics[f"hr@{k}"] / k)


# ------------------------------------------------------------ repeated targets
def test_a_repeated_target_is_flagged_and_warned_about_under_exclude_seen():
    data = _eval_set([[1, 2, 3], [4, 5], [6, 7]], [2, 8, 9])  # user 0's target 2 is a re-consumption
    assert repeat_targets(data).tolist() == [True, False, False]
    assert not honest_exclude_seen(data)
    scores = torch.arange(11, dtype=torch.float32).repeat(3, 1)  # item 10 scores highest, then 9, ...
    with pytest.warns(RepeatTargetWarning, match="1 of 3 targets"):
        result = evaluate(FixedScores(scores), data, 10, exclude_seen=True)
    assert result.repeats.tolist() == [True, False, False]
    kinds = result.by_target_kind()
    assert kinds.loc["repeat item", "users"] == 1 and kinds.loc["new item", "users"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(FixedScores(scores), data, 10, exclude_seen=False)  # the honest setting: no warning


def test_exclude_seen_inflates_a_model_that_favours_seen_items():
    """Keeping the target while dropping every other seen item tells the model the answer."""
    n_items = 20
    histories = [np.arange(1, 11)] * 4  # everyone saw items 1..10
    data = _eval_set(histories, [3, 3, 3, 3])  # and comes back to item 3
    scores = torch.zeros(4, n_items + 1)
    scores[:, 1:11] = 1.0  # a "buy again" model: every seen item scores the same, above the rest
    kept = evaluate(FixedScores(scores), data, n_items, ks=(1,), exclude_seen=False)
    with pytest.warns(RepeatTargetWarning):
        dropped = evaluate(FixedScores(scores.clone()), data, n_items, ks=(1,), exclude_seen=True)
    assert np.allclose(kept.metrics["hr@1"], 1 / 10)  # one of 10 tied seen items
    assert np.allclose(dropped.metrics["hr@1"], 1.0)  # the only seen item left is the answer


def test_no_warning_without_repeats():
    data = _eval_set([[1, 2], [3, 4]], [5, 6])
    assert honest_exclude_seen(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate(FixedScores(torch.randn(2, 11)), data, 10)
    assert not result.repeats.any()


# ------------------------------------------------------------ temporal split
def test_temporal_split_evaluation_never_sees_events_after_the_cut():
    """Item ids grow with time, so 'an event after the cut' is 'an id at or above the cut's id'."""
    rng = np.random.default_rng(0)
    n_events, n_users = 600, 30
    users = rng.integers(0, n_users, n_events)
    df = pd.DataFrame({"user_id": users, "item_id": np.arange(1, n_events + 1),
                       "timestamp": np.arange(n_events) * 10})
    df = df.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    sp = split.temporal_split(df, 0.8, 0.9)
    t_valid, t_test = df["timestamp"].quantile([0.8, 0.9]).to_numpy()
    first_valid_id = int(df.loc[df["timestamp"] >= t_valid, "item_id"].min())
    first_test_id = int(df.loc[df["timestamp"] >= t_test, "item_id"].min())
    assert max(int(s.max()) for s in sp.train) < first_valid_id  # training stops at the first cut
    model = Recorder(sp.n_items)
    evaluate(model, sp.test, sp.n_items, exclude_seen=False)
    for inputs, target in zip(torch.cat(model.inputs), sp.test.targets):
        assert target >= first_test_id and int(inputs.max()) < target  # only the past is read
    assert all(int(h.max()) < first_test_id for h in sp.test.histories)


# ------------------------------------------------------------ the results table reader
def _table(tmp_path, profile="ci", versions=None):
    path = tmp_path / "benchmark.json"
    rows = [{"dataset": "ml-100k", "model": "pop", "ndcg@10": 0.05}]
    results_table.write_table(path, pd.DataFrame(rows), profile, versions or {"ml-100k": "abc"})
    return path


def test_the_table_reader_returns_the_rows_of_the_same_profile_and_data(tmp_path):
    table = results_table.read_table(_table(tmp_path), "ci", {"ml-100k": "abc"})
    assert table.loc[0, "ndcg@10"] == 0.05


def test_the_table_reader_refuses_another_profile(tmp_path):
    with pytest.raises(results_table.StaleResults, match="profile 'cpu'.*'ci'"):
        results_table.read_table(_table(tmp_path, profile="cpu"), "ci", {"ml-100k": "abc"})


def test_the_table_reader_refuses_another_data_version(tmp_path):
    with pytest.raises(results_table.StaleResults, match="ml-100k"):
        results_table.read_table(_table(tmp_path), "ci", {"ml-100k": "def"})


def test_the_table_reader_refuses_a_file_without_data_versions(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"profile": "ci", "rows": [{"dataset": "ml-100k", "model": "pop"}]}))
    with pytest.raises(results_table.StaleResults, match="data version"):
        results_table.read_table(path, "ci", {"ml-100k": "abc"})


def test_split_fingerprint_changes_with_the_data():
    df = pd.DataFrame({"user_id": [1] * 4 + [2] * 4, "item_id": [1, 2, 3, 4, 2, 3, 4, 1],
                       "timestamp": list(range(8))})
    a = split.leave_one_out(df)
    b = split.leave_one_out(df.assign(item_id=[1, 2, 3, 4, 2, 3, 1, 4]))
    assert results_table.data_version(a) == results_table.data_version(split.leave_one_out(df))
    assert results_table.data_version(a) != results_table.data_version(b)


def test_recorded_numbers_of_another_profile_are_refused(tmp_path, monkeypatch):
    from helpers import course

    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    monkeypatch.setattr(course, "_session", None)
    assert results_table.read_recorded("99_nothing", "cpu") is None
    course.record("sasrec/ndcg@10", 0.07, notebook="99_test")
    assert results_table.read_recorded("99_test", "cpu") == {"sasrec/ndcg@10": 0.07}
    assert results_table.read_recorded("99_test", "ci") is None  # nothing recorded under ci
    misplaced = course.results_path("99_test", "ci")  # a cpu file copied into the ci folder
    misplaced.parent.mkdir(parents=True, exist_ok=True)
    misplaced.write_text(course.results_path("99_test", "cpu").read_text())
    with pytest.raises(results_table.StaleResults, match="'cpu'"):
        results_table.read_recorded("99_test", "ci")


def test_per_user_results_round_trip_and_refuse_another_profile_or_data(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from helpers import course

    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(course, "_session", None)
    df = pd.DataFrame({"user_id": [1] * 4 + [2] * 4, "item_id": [1, 2, 3, 4, 2, 3, 4, 1],
                       "timestamp": list(range(8))})
    a, b = split.leave_one_out(df), split.leave_one_out(df.assign(item_id=[1, 2, 3, 4, 2, 3, 1, 4]))
    result = SimpleNamespace(metrics={"hr@10": np.array([1.0, 0.0]), "ndcg@10": np.array([0.5, 0.0])})
    assert results_table.read_per_user("99_test", "toy", a, "cpu") is None
    results_table.write_per_user("99_test", "toy", a, {"text model": result}, "cpu")
    back = results_table.read_per_user("99_test", "toy", a, "cpu")
    assert list(back) == ["text model"] and back["text model"]["ndcg@10"].tolist() == [0.5, 0.0]
    with pytest.raises(results_table.StaleResults, match="data version"):
        results_table.read_per_user("99_test", "toy", b, "cpu")
    misplaced = results_table.per_user_path("99_test", "toy", "ci")
    misplaced.parent.mkdir(parents=True, exist_ok=True)
    misplaced.write_text(results_table.per_user_path("99_test", "toy", "cpu").read_text())
    with pytest.raises(results_table.StaleResults, match="'cpu'"):
        results_table.read_per_user("99_test", "toy", a, "ci")
