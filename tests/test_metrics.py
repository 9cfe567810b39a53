import math

import numpy as np
import pytest
import torch

from helpers import metrics
from helpers.ids import PAD


def _brute_force(greater: int, ties: int, k: int) -> tuple[float, float, float]:
    """Average HR, NDCG and MRR over every rank the random tie-break can give."""
    ranks = range(greater + 1, greater + ties + 2)
    hr = np.mean([r <= k for r in ranks])
    ndcg = np.mean([1 / math.log2(r + 1) if r <= k else 0.0 for r in ranks])
    mrr = np.mean([1 / r if r <= k else 0.0 for r in ranks])
    return hr, ndcg, mrr


def test_target_ranks_counts_greater_and_other_ties():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.5, 0.1, 0.5],
                           [0.0, 0.3, 0.2, 0.1, 0.4, 0.9]])
    greater, ties = metrics.target_ranks(scores, torch.tensor([1, 5]))
    # row 0: target 0.5; above it 0.9; tied with it items 3 and 5
    # row 1: target 0.9 is the best
    assert greater.tolist() == [1, 0] and ties.tolist() == [2, 0]


def test_hand_worked_values_without_ties():
    greater, ties = torch.tensor([0, 1, 2, 9]), torch.zeros(4, dtype=torch.long)  # ranks 1, 2, 3, 10
    assert metrics.hit_rate(greater, ties, 3).tolist() == [1, 1, 1, 0]
    assert metrics.ndcg(greater, ties, 3).tolist() == pytest.approx([1 / math.log2(2), 1 / math.log2(3),
                                                                     1 / math.log2(4), 0.0])
    assert metrics.mrr(greater, ties, 3).tolist() == pytest.approx([1, 1 / 2, 1 / 3, 0])


def test_hand_worked_values_with_ties():
    # one item above the target and one tied with it: rank 2 or 3, each with probability 1/2
    g, t = torch.tensor([1]), torch.tensor([1])
    assert metrics.hit_rate(g, t, 2).item() == pytest.approx(1 / 2)
    assert metrics.ndcg(g, t, 2).item() == pytest.approx((1 / math.log2(3) + 0) / 2)
    assert metrics.mrr(g, t, 2).item() == pytest.approx((1 / 2 + 0) / 2)
    assert metrics.hit_rate(g, t, 5).item() == 1.0
    assert metrics.ndcg(g, t, 5).item() == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)
    assert metrics.mrr(g, t, 5).item() == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_expected_metrics_match_brute_force_average_over_tie_breaks():
    rng = np.random.default_rng(0)
    greater, ties = rng.integers(0, 30, 200), rng.integers(0, 30, 200)
    for k in (1, 5, 10, 20):
        got = metrics.rank_metrics(torch.as_tensor(greater), torch.as_tensor(ties), (k,))
        want = np.array([_brute_force(g, t, k) for g, t in zip(greater, ties)])
        np.testing.assert_allclose(got[f"hr@{k}"], want[:, 0])
        np.testing.assert_allclose(got[f"ndcg@{k}"], want[:, 1])
        np.testing.assert_allclose(got[f"mrr@{k}"], want[:, 2])
        np.testing.assert_allclose(got[f"hr@{k}"], np.clip((k - greater) / (ties + 1), 0, 1))


def test_all_equal_scores_give_k_over_candidates_not_one():
    scores = torch.ones(4, 51)  # PAD + 50 items, every item scored the same
    metrics.exclude_items(scores, torch.zeros(4, 1, dtype=torch.long), torch.tensor([1, 7, 20, 50]))
    greater, ties = metrics.target_ranks(scores, torch.tensor([1, 7, 20, 50]))
    assert greater.tolist() == [0] * 4 and ties.tolist() == [49] * 4  # PAD never counts
    assert metrics.hit_rate(greater, ties, 10).tolist() == pytest.approx([10 / 50] * 4)


def test_exclude_items_keeps_the_target_and_handles_pad_and_repeats():
    scores = torch.arange(8.0).repeat(2, 1)
    items = torch.tensor([[PAD, 3, 3, 5], [2, 6, 7, 7]])  # row 1: its target 6 was seen before
    metrics.exclude_items(scores, items, torch.tensor([4, 6]))
    inf = -math.inf
    assert scores.tolist() == [[inf, 1, 2, inf, 4, inf, 6, 7], [inf, 1, inf, 3, 4, 5, 6, inf]]


def test_a_target_scoring_minus_inf_does_not_tie_with_excluded_items():
    scores = torch.tensor([[0.0, -math.inf, 5.0, -math.inf, 1.0, -math.inf]])
    seen = torch.tensor([[2, 3]])  # item 3 is excluded; items 1 (target) and 5 score -inf themselves
    metrics.exclude_items(scores, seen, torch.tensor([1]))
    greater, ties = metrics.target_ranks(scores, torch.tensor([1]), seen)
    assert greater.item() == 1 and ties.item() == 1  # item 4 above, item 5 tied; PAD, 2, 3 excluded


def test_target_ranks_refuses_nan_targets():
    with pytest.raises(ValueError, match="NaN"):
        metrics.target_ranks(torch.tensor([[0.0, math.nan, 1.0]]), torch.tensor([1]))


def test_sample_negatives_never_draws_excluded_items_nor_repeats_and_is_seeded():
    excluded = torch.tensor([[3, 4, PAD], [1, 2, 3]])
    draw = [metrics.sample_negatives(excluded, 11, n=5, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    (items, valid), (again, _) = draw
    assert torch.equal(items, again) and valid.all()
    for row, ex in zip(items.tolist(), excluded.tolist()):
        assert len(set(row)) == 5 and not set(row) & (set(ex) | {PAD})
    items, valid = metrics.sample_negatives(excluded, 6, n=5)  # rows have 3 and 2 candidates
    assert valid.sum(1).tolist() == [3, 2]
    assert set(items[0][valid[0]].tolist()) == {1, 2, 5} and set(items[1][valid[1]].tolist()) == {4, 5}


def test_popularity_sampling_follows_the_weights_and_skips_zero_weight_items():
    weights = torch.tensor([0.0, 1.0, 2.0, 0.0, 7.0])
    excluded = torch.zeros(20_000, 1, dtype=torch.long)
    items, _ = metrics.sample_negatives(excluded, 5, n=1, weights=weights,
                                        generator=torch.Generator().manual_seed(0))
    share = torch.bincount(items[:, 0], minlength=5) / len(items)
    assert share[0] == 0 and share[3] == 0
    assert share.tolist() == pytest.approx([0, 0.1, 0.2, 0, 0.7], abs=0.015)


def test_sampled_target_ranks_only_count_valid_negatives():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.5, 0.7]])
    negatives, valid = torch.tensor([[2, 3, 4]]), torch.tensor([[True, True, False]])
    greater, ties = metrics.sampled_target_ranks(scores, torch.tensor([1]), negatives, valid)
    assert greater.item() == 1 and ties.item() == 1


def test_coverage_and_popularity_bias_by_hand():
    top = np.array([[1, 2], [1, 3], [1, PAD]])  # PAD = no recommendation left
    assert metrics.coverage(top, n_items=6) == pytest.approx(3 / 6)
    assert metrics.coverage(top, n_items=6, k=1) == pytest.approx(1 / 6)
    pop = np.array([0, 8, 4, 2, 1, 0, 0])
    bias = metrics.popularity_bias(top, pop)
    assert bias["arp"] == pytest.approx((8 + 4 + 8 + 2 + 8) / 5)
    assert bias["mean_log_pop"] == pytest.approx(np.log1p([8, 4, 8, 2, 8]).mean())
    # percentiles among the 6 items (ranks 1..6, items 5 and 6 share rank 1.5): 8 -> 6/6, 4 -> 5/6, 2 -> 4/6
    assert bias["pop_percentile"] == pytest.approx((1 + 5 / 6 + 1 + 4 / 6 + 1) / 5)


def test_head_items_hold_the_requested_share_of_interactions():
    pop = np.array([0, 50, 30, 10, 5, 5])  # 100 interactions
    assert metrics.head_items(pop, 0.5).tolist() == [False, True, False, False, False, False]
    assert metrics.head_items(pop, 0.6).tolist() == [False, True, True, False, False, False]
    with pytest.raises(ValueError):
        metrics.head_items(pop, 1.0)


def test_metrics_by_target_popularity():
    per_user = {"hr@10": np.array([1.0, 0.0, 1.0, 1.0])}
    table = metrics.by_popularity(per_user, np.array([1, 1, 4, 5]), np.array([0, 50, 30, 10, 5, 5]), 0.5)
    assert table.loc["head", "hr@10"] == 0.5 and table.loc["tail", "hr@10"] == 1.0
    assert table["users"].tolist() == [2, 2]


def test_item_popularity_counts_ids():
    assert metrics.item_popularity([np.array([1, 2, 2]), np.array([3, 2])], 4).tolist() == [0, 1, 3, 1, 0]


def test_bootstrap_ci_contains_the_mean_narrows_with_n_and_is_seeded():
    rng = np.random.default_rng(0)
    small, large = rng.random(200) < 0.3, rng.random(20_000) < 0.3
    lo_s, hi_s = metrics.bootstrap_ci(small, n_resamples=500)
    lo_l, hi_l = metrics.bootstrap_ci(large, n_resamples=500)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5  # width shrinks like 1 / sqrt(N): 10x here
    assert metrics.bootstrap_ci(small, n_resamples=500) == (lo_s, hi_s)
    assert metrics.bootstrap_ci(np.ones(5)) == (1.0, 1.0)


def test_paired_comparison_of_a_model_with_itself_and_with_a_better_one():
    rng = np.random.default_rng(0)
    a = (rng.random(2000) < 0.2).astype(float)
    same = metrics.paired_comparison(a, a.copy())
    assert same["diff"] == 0 and same["ci_low"] == same["ci_high"] == 0 and same["p_wilcoxon"] == 1.0
    better = np.maximum(a, rng.random(2000) < 0.1)  # hits everything a hits, and more
    out = metrics.paired_comparison(better, a)
    assert out["diff"] == pytest.approx(better.mean() - a.mean())
    assert 0 < out["ci_low"] < out["diff"] < out["ci_high"]
    assert out["p_wilcoxon"] < 1e-6 and out["p_ttest"] < 1e-6
    with pytest.raises(ValueError):
        metrics.paired_comparison(a, a[:-1])
