import math

import numpy as np
import pandas as pd
import pytest
import torch
import torchmetrics.functional.retrieval as tmf

from helpers import metrics
from helpers.evaluate import EvalResult, RepeatTargetWarning, compare, evaluate
from helpers.ids import PAD
from helpers.sequences import pad_left
from helpers.split import EvalSet
from toys import FixedScores

# _random_set draws targets independently of histories, so some repeat a history item and
# evaluate() warns about them; tests not about repeats silence that warning, and only that one
random_repeats = pytest.mark.filterwarnings("ignore::helpers.evaluate.RepeatTargetWarning")


class Spy(torch.nn.Module):
    """Records every input and the mode it was called in; scores items at random."""

    def __init__(self, n_items: int, max_len: int):
        super().__init__()
        self.max_len, self.n_items = max_len, n_items
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.inputs: list[torch.Tensor] = []
        self.modes: list[bool] = []

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.inputs.append(input_ids.clone())
        self.modes.append(self.training)
        return torch.rand(len(input_ids), self.n_items + 2)  # + a MASK column


def _eval_set(histories, targets) -> EvalSet:
    return EvalSet(np.arange(len(targets)), [np.asarray(h, dtype=np.int64) for h in histories],
                   np.asarray(targets, dtype=np.int64))


def _random_set(n_users: int, n_items: int, seed: int = 0) -> EvalSet:
    rng = np.random.default_rng(seed)
    histories = [rng.choice(np.arange(1, n_items + 1), rng.integers(1, min(12, n_items)), replace=False) for _ in range(n_users)]
    return _eval_set(histories, rng.integers(1, n_items + 1, n_users))


@random_repeats
def test_agrees_with_torchmetrics_on_random_scores_without_ties():
    n_items, data = 40, _random_set(30, 40)
    scores = torch.randn(30, n_items + 1, generator=torch.Generator().manual_seed(0))
    for exclude_seen in (False, True):
        result = evaluate(FixedScores(scores), data, n_items, ks=(1, 5, 10), exclude_seen=exclude_seen, batch_size=7)
        for u, (h, t) in enumerate(zip(data.histories, data.targets)):
            keep = np.ones(n_items + 1, dtype=bool)
            keep[PAD] = False
            if exclude_seen:
                keep[h] = False
                keep[t] = True  # the target stays a candidate
            preds, rel = scores[u, keep], torch.as_tensor(np.flatnonzero(keep) == t)
            rr = tmf.retrieval_reciprocal_rank(preds, rel).item()
            for k in (1, 5, 10):
                assert result.metrics[f"hr@{k}"][u] == pytest.approx(tmf.retrieval_hit_rate(preds, rel, top_k=k).item())
                assert result.metrics[f"ndcg@{k}"][u] == pytest.approx(
                    tmf.retrieval_normalized_dcg(preds, rel, top_k=k).item())
                assert result.metrics[f"mrr@{k}"][u] == pytest.approx(rr if rr >= 1 / k else 0.0)


def test_constant_model_gets_k_over_the_number_of_candidates():
    n_items = 50
    data = _eval_set([[1, 2, 3], [4, 5, 6]], [7, 8])
    constant = FixedScores(torch.zeros(2, n_items + 1))
    result = evaluate(constant, data, n_items, exclude_seen=False)
    assert result.summary()["hr@10"] == pytest.approx(10 / 50)
    constant.next_row = 0
    result = evaluate(constant, data, n_items)  # 3 seen items excluded: 47 candidates
    assert result.summary()["hr@10"] == pytest.approx(10 / 47)
    assert result.summary()["ndcg@10"] == pytest.approx(sum(1 / math.log2(r + 1) for r in range(1, 11)) / 47)
    assert result.summary()["mrr@5"] == pytest.approx(sum(1 / r for r in range(1, 6)) / 47)


def test_a_seen_item_scoring_highest_is_dropped_only_when_excluding_seen():
    scores = torch.tensor([[0.0, 9.0, 1.0, 5.0, 2.0]])  # item 1 (seen) top, target 3 second
    data = _eval_set([[1, 2]], [3])
    excluded = evaluate(FixedScores(scores), data, 4, ks=(1,))
    kept = evaluate(FixedScores(scores), data, 4, ks=(1,), exclude_seen=False)
    assert excluded.summary()["hr@1"] == 1.0 and excluded.greater.tolist() == [0]
    assert kept.summary()["hr@1"] == 0.0 and kept.greater.tolist() == [1]
    assert excluded.top_items[0, 0] == 3 and kept.top_items[0, 0] == 1


def test_seen_items_are_the_full_history_not_only_the_window():
    scores = torch.tensor([[0.0, 9.0, 1.0, 5.0, 2.0]])  # item 1 is outside a window of 1
    result = evaluate(FixedScores(scores, max_len=1), _eval_set([[1, 2]], [3]), 4, ks=(1,))
    assert result.summary()["hr@1"] == 1.0


def test_a_target_seen_before_stays_rankable():
    # repeat consumption: the user already had item 2 and buys it again
    scores = torch.tensor([[0.0, 1.0, 9.0, 5.0, 2.0]])
    with pytest.warns(RepeatTargetWarning, match="1 of 1 targets"):
        result = evaluate(FixedScores(scores), _eval_set([[2, 3]], [2]), 4, ks=(1,))
    assert result.summary()["hr@1"] == 1.0 and result.top_items[0, 0] == 2


def test_pad_and_columns_past_n_items_are_never_ranked():
    scores = torch.tensor([[99.0, 1.0, 2.0, 3.0, 99.0], [99.0, 3.0, 2.0, 1.0, 99.0]])  # PAD, 3 items, MASK
    result = evaluate(FixedScores(scores), _eval_set([[], []], [3, 1]), 3, ks=(1, 5), exclude_seen=False)
    assert result.summary()["hr@1"] == 1.0
    assert result.top_items.tolist() == [[3, 2, 1, PAD, PAD], [1, 2, 3, PAD, PAD]]


def test_the_model_sees_only_the_padded_history_never_the_target():
    n_items, max_len = 30, 4
    rng = np.random.default_rng(0)
    # targets 21..30 are never in any history, so any appearance in an input is a leak
    histories = [rng.choice(np.arange(1, 21), rng.integers(0, 8), replace=False) for _ in range(10)]
    data = _eval_set(histories, np.arange(21, 31))
    spy = Spy(n_items, max_len)
    evaluate(spy, data, n_items, batch_size=3)
    seen = torch.cat(spy.inputs)
    assert torch.equal(seen, pad_left(data.histories, max_len))
    assert not torch.isin(seen, torch.as_tensor(data.targets)).any()


@random_repeats
def test_modules_run_in_eval_mode_and_get_their_training_mode_back():
    spy = Spy(10, 3)
    spy.train()
    evaluate(spy, _random_set(5, 10), 10)
    assert spy.modes == [False] and spy.training
    spy.eval()
    evaluate(spy, _random_set(5, 10), 10)
    assert not spy.training


@random_repeats
def test_results_do_not_depend_on_the_batch_size():
    data, scores = _random_set(50, 20), torch.randint(0, 4, (50, 21)).float()  # many ties
    one = evaluate(FixedScores(scores), data, 20, batch_size=50)
    many = evaluate(FixedScores(scores), data, 20, batch_size=6)
    for name in one.metrics:
        np.testing.assert_array_equal(one.metrics[name], many.metrics[name])
    np.testing.assert_array_equal(one.top_items[:, 0] > 0, many.top_items[:, 0] > 0)


@random_repeats
def test_sampled_metrics_are_never_below_full_ranking():
    n_items, data = 300, _random_set(200, 300, seed=1)
    scores = torch.randn(200, n_items + 1, generator=torch.Generator().manual_seed(1))
    pop = np.arange(n_items + 1)
    full = evaluate(FixedScores(scores), data, n_items)
    for protocol in ("uniform100", "popular100"):
        sampled = evaluate(FixedScores(scores), data, n_items, protocol=protocol, popularity=pop)
        assert protocol in sampled.protocol
        for name in full.metrics:
            assert (sampled.metrics[name] >= full.metrics[name] - 1e-12).all()
        assert sampled.summary()["hr@10"] > 2 * full.summary()["hr@10"]  # the sampled number flatters
        np.testing.assert_array_equal(sampled.top_items, full.top_items)


def test_sampled_protocols_are_seeded():
    data, scores = _random_set(40, 300), torch.randn(40, 301)
    a, b, c = (evaluate(FixedScores(scores), data, 300, protocol="uniform100", seed=s).greater for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_integer_scores_are_accepted():
    scores = torch.tensor([[0, 5, 3, 7]])
    result = evaluate(FixedScores(scores), _eval_set([[1]], [3]), 3, ks=(1,), exclude_seen=False)
    assert result.greater.tolist() == [0] and result.summary()["hr@1"] == 1.0


@random_repeats
def test_result_summary_table_ci_and_compare():
    data = _random_set(60, 20)
    result = evaluate(FixedScores(torch.randn(60, 21)), data, 20)
    assert isinstance(result, EvalResult) and len(result) == 60
    assert list(result.summary()) == [f"{m}@{k}" for k in (5, 10, 20) for m in ("hr", "ndcg", "mrr")]
    assert result.top_items.shape == (60, 20)
    assert metrics.coverage(result.top_items, 20) == 1.0  # every item is in someone's top-20
    assert result.history_lengths.tolist() == [len(h) for h in data.histories]
    lo, hi = result.ci("hr@10", n_resamples=200)
    assert lo <= result.summary()["hr@10"] <= hi
    table = compare({"a": result, "b": result}, ci=["hr@10"], n_resamples=200)
    assert isinstance(table, pd.DataFrame) and list(table.index) == ["a", "b"]
    assert table.loc["a", "hr@10 lo"] == lo and table.loc["b", "users"] == 60


@pytest.mark.parametrize("kwargs, message", [
    ({"protocol": "sampled"}, "protocol"),
    ({"protocol": "popular100"}, "popularity"),
    ({"ks": ()}, "ks"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate(FixedScores(torch.zeros(1, 5)), _eval_set([[1]], [2]), 4, **kwargs)


def test_bad_targets_and_bad_scores_are_refused():
    with pytest.raises(ValueError, match="targets"):
        evaluate(FixedScores(torch.zeros(1, 5)), _eval_set([[1]], [5]), 4)
    with pytest.raises(ValueError, match="score"):
        evaluate(FixedScores(torch.zeros(1, 4)), _eval_set([[1]], [2]), 4)  # one column short
    with pytest.raises(ValueError, match="NaN"):
        evaluate(FixedScores(torch.tensor([[0.0, 1.0, math.nan, 0.0, 0.0]])), _eval_set([[1]], [3]), 4)
