"""Judging generated sequences: distances by hand, AUC at 0.5 and near 1, copies detected."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from helpers import synth_eval as se
from helpers.split import leave_one_out
from helpers.synthetic import SyntheticConfig, generate

N_ITEMS = 40


def random_sequences(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.permutation(N_ITEMS)[: rng.integers(3, 12)] + 1 for _ in range(n)]


def test_distribution_distance_by_hand():
    d = se.distribution_distance([1, 1, 0], [0, 1, 1])  # p = (.5, .5, 0), q = (0, .5, .5)
    assert d["tv"] == pytest.approx(0.5)
    m = np.array([0.25, 0.5, 0.25])
    kl = 0.5 * np.log2(0.5 / 0.25)  # KL(p || m) = KL(q || m)
    assert d["js"] == pytest.approx(kl)
    assert d["js"] == pytest.approx(jensenshannon([1, 1, 0], [0, 1, 1], base=2) ** 2)
    assert se.distribution_distance([2, 0], [0, 5]) == {"tv": 1.0, "js": 1.0}
    with pytest.raises(ValueError):
        se.distribution_distance([1, 2], [1, 2, 3])


def test_identical_sets_have_distance_zero_and_auc_one_half():
    real = random_sequences()
    assert se.popularity_distance(real, real, N_ITEMS) == {"tv": 0.0, "js": 0.0}
    assert se.length_distance(real, real) == {"tv": 0.0, "js": 0.0}
    assert se.transition_distance(real, real, N_ITEMS)["tv"] == 0.0
    assert se.two_sample_auc(real, list(real)) == pytest.approx(0.5, abs=0.02)


def test_auc_near_one_half_for_two_draws_and_near_one_for_obvious_fakes():
    real, other = random_sequences(seed=0), random_sequences(seed=1)
    assert se.two_sample_auc(real, other) == pytest.approx(0.5, abs=0.1)
    narrow = [s[s <= 10] for s in random_sequences(seed=2, n=400) if (s <= 10).sum() >= 3]
    assert se.two_sample_auc(real, narrow) > 0.95  # only items 1..10: easy to spot


def test_transition_distance_sees_order_that_popularity_misses():
    real = [np.sort(s) for s in random_sequences()]  # every step goes up ...
    reversed_ = [s[::-1] for s in real]  # ... and here every step goes down
    assert se.popularity_distance(real, reversed_, N_ITEMS)["tv"] == 0.0
    assert se.transition_distance(real, reversed_, N_ITEMS)["tv"] == pytest.approx(1.0)


def test_transitions_by_hand():
    t = se.transitions([np.array([1, 2, 3]), np.array([1, 2]), np.array([4])], 4)
    assert t.shape == (5, 5) and t[1, 2] == 2 and t[2, 3] == 1 and t.sum() == 3


def test_copied_sequences_are_detected():
    real = random_sequences()
    fresh = random_sequences(seed=1)
    copies = [s.copy() for s in real[:50]]
    assert se.copied_ngrams(copies, real, 3) == 1.0
    assert se.copied_ngrams(fresh, real, 5) < 0.05
    runs = se.longest_copied_run(copies, real)
    assert (runs == np.array([len(s) for s in copies])).all()
    assert (se.nearest_real_distance(copies, real, N_ITEMS) == 0).all()
    assert se.nearest_real_distance(fresh, real, N_ITEMS).mean() > 0.3


def test_longest_copied_run_by_hand():
    real = [np.array([1, 2, 3, 4]), np.array([7, 8])]
    generated = [np.array([9, 2, 3, 4, 8]), np.array([5, 6]), np.array([8, 7])]
    assert se.longest_copied_run(generated, real).tolist() == [3, 0, 1]


def test_nearest_real_distance_by_hand():
    d = se.nearest_real_distance([np.array([1, 2, 3])], [np.array([1, 2]), np.array([3, 4, 5, 6])], 6)
    assert d == pytest.approx([1 - 2 / 3])  # {1,2,3} vs {1,2}: 2 shared of 3


def test_diversity_by_hand():
    d = se.diversity([np.array([1, 2, 3]), np.array([1, 2])], n_items=10)
    assert d == {"distinct_items": 3.0, "coverage": 0.3, "distinct_2": 2 / 3}


def test_report_has_every_number():
    real = random_sequences()
    row = se.report(real, random_sequences(seed=1), N_ITEMS)
    assert {"popularity_js", "length_tv", "transition_tv", "two_sample_auc", "copied_3grams",
            "nearest_real_jaccard", "coverage", "distinct_2"} <= set(row)
    assert all(np.isfinite(v) for v in row.values())


def test_train_on_uses_the_given_sequences_and_the_real_test_split():
    frame, _ = generate(SyntheticConfig(n_users=60, n_items=30, max_len=10, mean_len=8))
    split = leave_one_out(frame, n_items=30)
    seen = {}

    class Popular:
        max_len = 5

        def score(self, input_ids):
            import torch

            return torch.as_tensor(seen["counts"], dtype=torch.float).expand(len(input_ids), -1)

    def fit(s):
        seen["train"] = s.train
        seen["counts"] = np.bincount(np.concatenate(s.train), minlength=31).astype(float)
        return Popular()

    fake = [np.array([1, 2, 3])] * 5
    summary = se.train_on(fake, split, fit, ks=(10,))
    assert seen["train"] == fake and set(summary) >= {"hr@10", "ndcg@10"}
    real = se.train_on(split.train, split, fit, ks=(10,))
    assert real["hr@10"] > summary["hr@10"]  # real popularity beats three fixed items


def test_true_log_likelihood_by_hand_and_prefers_the_truth():
    frame, truth = generate(SyntheticConfig(n_users=50, n_items=30, max_len=10, mean_len=8))
    seqs = [g.item_id.to_numpy() for _, g in frame.groupby("user_id")]
    ll = se.true_log_likelihood(truth, seqs[:3], batch_size=4)
    s = seqs[0]
    by_hand = sum(np.log(truth.oracle_scores([s[:t]])[0, s[t]]) for t in range(len(s)))
    assert ll[0] == pytest.approx(by_hand)
    rng = np.random.default_rng(0)
    shuffled = [rng.permutation(30)[: len(s)] + 1 for s in seqs]
    per_item = lambda x: se.true_log_likelihood(truth, x).sum() / sum(map(len, x))  # noqa: E731
    assert per_item(seqs) > per_item(shuffled) + 0.5
