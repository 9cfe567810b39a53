import numpy as np
import pytest
from scipy import stats as sps

from helpers import stats


def test_holm_on_a_hand_worked_example():
    # p = .01, .04, .03, .005 (m = 4). Sorted: .005, .01, .03, .04, times 4, 3, 2, 1:
    # .020, .030, .060, .040; running maximum: .020, .030, .060, .060.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert np.allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert (adjusted <= 0.05).tolist() == [True, False, False, True]


def test_holm_rejects_what_bonferroni_misses():
    # p = .01, .02, .03: Holm .03, .04 (= .02 x 2), .04 (.03 x 1 = .03, raised to the running max .04)
    p = [0.01, 0.02, 0.03]
    assert np.allclose(stats.holm(p), [0.03, 0.04, 0.04])
    assert np.allclose(stats.bonferroni(p), [0.03, 0.06, 0.09])  # only the first below .05


def test_holm_caps_at_one_keeps_order_and_handles_one_test():
    assert np.allclose(stats.holm([0.5, 0.9, 0.4]), [1.0, 1.0, 1.0])
    assert np.allclose(stats.holm([0.2]), [0.2])
    with pytest.raises(ValueError):
        stats.holm([1.5])


def test_holm_sits_between_raw_and_bonferroni_and_above_scipy_bh():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(0, 0.2, rng.integers(2, 12))
        adjusted = stats.holm(p)
        assert np.all(p <= adjusted + 1e-12) and np.all(adjusted <= stats.bonferroni(p) + 1e-12)
        # Benjamini-Hochberg (scipy's only correction) controls the false discovery rate,
        # a weaker guarantee: its adjusted p-values are never above Holm's
        assert np.all(sps.false_discovery_control(p) <= adjusted + 1e-12)


def test_pairwise_compares_every_pair_on_the_same_users_with_holm():
    rng = np.random.default_rng(0)
    base = rng.random(300)
    per_user = {"a": base + 0.2 + rng.normal(0, 0.01, 300), "b": base + rng.normal(0, 0.01, 300), "c": base}
    table = stats.pairwise(per_user, n_resamples=200)
    assert list(zip(table["a"], table["b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert np.allclose(table["p holm"], stats.holm(table["p"]))
    row = table.set_index(["a", "b"]).loc[("a", "c")]
    assert row["diff"] == pytest.approx(0.2, abs=0.01) and row["significant"]
    assert row["diff lo"] <= row["diff"] <= row["diff hi"] and row["diff lo"] > 0.19
    t = stats.pairwise(per_user, n_resamples=200, test="ttest")
    assert t.loc[1, "p"] == pytest.approx(sps.ttest_rel(per_user["a"], per_user["c"]).pvalue)


def test_seed_spread_and_seed_table():
    spread = stats.seed_spread([0.1, 0.2, 0.3])
    assert spread["mean"] == pytest.approx(0.2) and spread["std"] == pytest.approx(0.1)
    assert spread["range"] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        stats.seed_spread([0.1])
    rng = np.random.default_rng(1)
    runs = [rng.random(200) * s for s in (1.0, 1.1)]
    table = stats.seed_table({"m": runs}, n_resamples=200)
    assert table.loc["m", "seeds"] == 2 and table.loc["m", "ci width"] > 0
    row = table.loc["m"]
    assert row["range / ci width"] == pytest.approx(row["range"] / row["ci width"])
