import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from helpers import metrics, slices
from helpers.split import EvalSet

POP = np.array([0, 100, 1, 1, 1])  # item 1 holds 97% of the interactions: the head at share .2


def _result(values, targets, lengths):
    return SimpleNamespace(metrics={"ndcg@10": np.asarray(values, dtype=float)},
                           targets=np.asarray(targets), history_lengths=np.asarray(lengths))


def test_slice_table_means_users_and_cis_by_hand():
    table = slices.slice_table({"hit": np.array([1.0, 0.0, 1.0, 1.0])}, np.array(["a", "a", "b", "b"]),
                               n_resamples=200)
    assert table.loc["a", "users"] == 2 and table.loc["a", "hit"] == 0.5
    assert table.loc["b", "hit"] == 1.0 and table.loc["b", "hit lo"] == table.loc["b", "hit hi"] == 1.0
    assert 0 <= table.loc["a", "hit lo"] <= 0.5 <= table.loc["a", "hit hi"] <= 1


def test_history_length_buckets_include_the_user_cold_start():
    buckets = slices.length_buckets(np.array([1, 3, 4, 60]))
    assert list(buckets) == ["1-3", "1-3", "4-9", "50+"]
    table = slices.by_history_length(_result([1, 0, 1, 0], [1, 2, 3, 4], [1, 3, 4, 60]), n_resamples=100)
    assert table.index.tolist() == ["1-3", "4-9", "50+"]  # empty buckets dropped, order kept
    assert table.loc["1-3", "users"] == 2 and table.loc["1-3", "ndcg@10"] == 0.5


def test_head_and_tail_targets():
    table = slices.by_target_popularity(_result([1, 0, 0], [1, 2, 3], [5, 5, 5]), POP, n_resamples=100)
    assert table.loc["head", "users"] == 1 and table.loc["head", "ndcg@10"] == 1
    assert table.loc["tail", "users"] == 2 and table.loc["tail", "ndcg@10"] == 0


def test_targets_by_training_count_show_the_item_cold_start():
    counts = np.array([0, 0, 3, 50])  # item 1 never trained on
    table = slices.by_target_count(_result([0, 1, 1], [1, 2, 3], [5, 5, 5]), counts, n_resamples=100)
    assert table.loc["0-0", "users"] == 1 and table.loc["0-0", "ndcg@10"] == 0
    assert table.loc["1-4", "users"] == 1 and table.loc["20-99", "users"] == 1


def test_truncate_histories_keeps_the_last_events_and_the_targets():
    data = EvalSet(np.array([7, 8]), [np.array([1, 2, 3]), np.array([4])], np.array([5, 6]))
    short = slices.truncate_histories(data, 2)
    assert [h.tolist() for h in short.histories] == [[2, 3], [4]]
    assert short.targets.tolist() == [5, 6] and short.users.tolist() == [7, 8]
    with pytest.raises(ValueError):
        slices.truncate_histories(data, 0)


def test_first_events_one_row_per_user_and_length_never_the_target_in_the_history():
    new = slices.first_events([np.array([5, 6, 7, 8]), np.array([9, 10])], np.array([3, 4]), max_events=2)
    assert new.users.tolist() == [3, 3, 4]  # user 3: n = 1, 2 (of 3 possible); user 4: n = 1
    assert [h.tolist() for h in new.histories] == [[5], [5, 6], [9]] and new.targets.tolist() == [6, 7, 10]
    with pytest.raises(ValueError, match="two events"):
        slices.first_events([np.array([1])], np.array([1]))


def test_by_events_means_users_and_cis_by_length_by_hand():
    table = slices.by_events(np.array([1, 1, 2, 3, 30]), {"m": [1, 0, 1, 0, 1], "pop": [0, 0, 0, 1, 0]},
                             max_events=20, n_resamples=100)
    assert table.index.tolist() == [1, 2, 3] and table["users"].tolist() == [2, 1, 1]
    assert table["m"].tolist() == [0.5, 1.0, 0.0] and table["pop"].tolist() == [0.0, 0.0, 1.0]
    assert table.loc[1, "m lo"] <= 0.5 <= table.loc[1, "m hi"] and table.loc[2, "m lo"] == 1.0


def test_events_to_beat_by_hand():
    steps = pd.DataFrame({"m": [0, 0, 1, 1, 1], "pop": [0.5] * 5, "content": [0, 0, 0, 2, 0]}, index=range(1, 6))
    assert slices.events_to_beat(steps, "m", "pop", smooth=1) == 3
    assert slices.events_to_beat(steps, "pop", "m", smooth=1) is None
    assert slices.events_to_beat(steps.assign(m=1.0), "m", "pop", smooth=1) == 1
    assert slices.events_to_beat(steps, "m", ["pop", "content"], smooth=1) == 5  # content leads at 4
    assert slices.events_to_beat(steps, "m", ["pop", "content"], smooth=3) is None  # smoothed, still behind at 5


def test_coverage_with_ci():
    top = np.array([[1, 2], [1, 3], [1, 0]])  # items 1, 2, 3 of 4 appear (0 = empty slot)
    value, low, high = slices.coverage_ci(top, n_items=4, k=2, n_resamples=200)
    assert value == 0.75 == metrics.coverage(top, 4)
    assert 0.25 <= low <= high <= 0.75


def test_tail_exposure_by_hand():
    top = np.array([[1, 2], [2, 3], [1, 0]])
    discounted = slices.tail_exposure(top, POP, k=2)
    w2 = 1 / math.log2(3)  # weight of the second slot
    assert discounted == pytest.approx([w2 / (1 + w2), 1.0, 0.0])  # the empty slot carries no weight
    assert slices.tail_exposure(top, POP, k=2, discount=False) == pytest.approx([0.5, 1.0, 0.0])


def test_popularity_percentile_agrees_with_metrics_popularity_bias():
    rng = np.random.default_rng(0)
    pop = np.concatenate([[0], rng.integers(0, 50, 30)])
    top = np.stack([rng.choice(np.arange(1, 31), 10, replace=False) for _ in range(20)])
    per_user = slices.popularity_percentile(top, pop, k=10)
    assert per_user.mean() == pytest.approx(metrics.popularity_bias(top, pop, 10)["pop_percentile"])


def test_beyond_accuracy_reports_every_number_with_a_ci():
    result = SimpleNamespace(top_items=np.array([[1, 2], [2, 3], [1, 4]]))
    out = slices.beyond_accuracy(result, POP, n_items=4, k=2, n_resamples=100)
    assert out["coverage@2"] == 1.0 and out["tail share of catalogue"] == 0.75
    for name in ("coverage@2", "pop percentile@2", "tail exposure@2"):
        assert out[f"{name} lo"] <= out[f"{name} hi"]
