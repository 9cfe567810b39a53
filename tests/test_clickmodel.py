"""Click features over a base model's candidates, three click learners, and the re-ranker."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import clickmodel, evaluate, textrec
from helpers.ids import PAD
from helpers.preprocess import IdMap
from helpers.split import EvalSet

N_ITEMS = 30


class Linear:
    """A base scorer that prefers higher item ids (item 30 best), the same for every user."""

    max_len = 4

    def score(self, input_ids):
        return torch.arange(N_ITEMS + 1, dtype=torch.float32).expand(len(input_ids), -1).clone()


def facts(seed=0) -> clickmodel.ItemFacts:
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(N_ITEMS + 1, 8, generator=g), dim=1)
    text[PAD] = 0
    genres = (torch.rand(N_ITEMS + 1, 4, generator=g) > 0.5).float()
    genres[PAD] = 0
    train = [np.array([1, 2, 3, 4]), np.array([2, 3, 5]), np.array([7, 8, 9, 10, 11, 12])]
    return clickmodel.item_facts(train, N_ITEMS, text, genres, genres[:, :2], recent=2)


def eval_set(n=40, seed=0) -> EvalSet:
    rng = np.random.default_rng(seed)
    histories = [rng.choice(np.arange(1, N_ITEMS + 1), rng.integers(1, 6), replace=False) for _ in range(n)]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(1, N_ITEMS + 1), h)) for h in histories])
    return EvalSet(np.arange(n), histories, targets)


def test_item_facts_and_multi_hot_by_hand():
    f = facts()
    assert f.popularity[[0, 2, 3, 5, 13]].tolist() == [0, 2, 2, 1, 0]
    assert f.recent[[3, 4, 5, 11, 12, 1]].tolist() == [2, 1, 1, 1, 1, 0]  # last 2 of each sequence
    items = pd.DataFrame({"item_id": [10, 20, 30], "genres": [["a", "b"], ["b"], []]})
    ids = IdMap(users=pd.Index([1]), items=pd.Index([10, 20, 30]))  # course items 1, 2, 3
    hot = clickmodel.multi_hot(items, ids, "genres")
    assert hot.tolist() == [[0, 0], [1, 1], [1, 0], [0, 0]]  # vocabulary by count: b, a
    assert clickmodel.multi_hot(items, ids, "genres", min_items=2).tolist() == [[0], [1], [1], [0]]


def test_features_by_hand_and_candidates_in_base_order():
    f = facts()
    features = clickmodel.ClickFeatures(f, decay=0.5)
    input_ids = torch.tensor([[0, 0, 3, 4]])
    candidates = torch.tensor([[30, 29, 2]])
    X = features(input_ids, candidates, torch.tensor([[3.0, 2.0, 0.5]]))
    assert X.shape == (1, 3, len(clickmodel.FEATURES))
    col = {name: X[0, :, j] for j, name in enumerate(clickmodel.FEATURES)}
    assert col["base gap"].tolist() == [0.0, -1.0, -2.5]
    assert torch.allclose(col["log rank"], torch.log(torch.tensor([1.0, 2.0, 3.0])))
    user = F.normalize(0.5 * f.text[3] + f.text[4], dim=0)  # item 4 is the latest: weight 1
    assert torch.allclose(col["text sim"], f.text[[30, 29, 2]] @ user, atol=1e-6)
    assert torch.allclose(col["text sim last"], f.text[[30, 29, 2]] @ f.text[4], atol=1e-6)
    assert torch.allclose(col["log popularity"], torch.log1p(f.popularity[[30, 29, 2]]))
    assert torch.allclose(col["log history length"], torch.full((3,), float(np.log1p(2))))
    top, scores, _ = clickmodel.candidates(Linear(), eval_set(3), N_ITEMS, k=5)
    assert (scores[:, :-1] > scores[:, 1:]).all()  # best first
    for row, h in zip(top, eval_set(3).histories):
        assert not np.isin(row.numpy(), h).any() and (row != PAD).all()


def test_features_never_read_the_target():
    data = eval_set()
    other = EvalSet(data.users, data.histories, np.where(data.targets == 1, 2, 1))
    features = clickmodel.ClickFeatures(facts())
    X1, y1, g1 = clickmodel.candidate_table(Linear(), features, data, N_ITEMS, k=10)
    X2, y2, g2 = clickmodel.candidate_table(Linear(), features, other, N_ITEMS, k=10)
    assert np.array_equal(X1, X2) and np.array_equal(g1, g2) and not np.array_equal(y1, y2)
    assert X1.shape == (len(data) * 10, len(clickmodel.FEATURES))
    hit = y1.reshape(-1, 10).sum(1)
    assert hit.max() == 1  # one click at most per example, only when the target is a candidate
    assert (hit == 1).sum() == sum(int(t) in row for t, row in zip(data.targets, X1.reshape(len(data), 10, -1)[:, :, 0]
                                                                 .astype(int).tolist()))


def test_candidate_ndcg_and_auc_by_hand():
    clicked = np.array([0, 1, 0, 0, 0, 0, 0, 0])  # example 1: click at base position 2; example 2: none
    base = -np.tile(np.arange(4.0), 2)
    assert clickmodel.candidate_ndcg(base, clicked, 10, 4).tolist() == [1 / np.log2(3), 0.0]
    better = np.array([0, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    assert clickmodel.candidate_ndcg(better, clicked, 10, 4).tolist() == [1.0, 0.0]
    assert clickmodel.candidate_ndcg(better, clicked, 1, 4)[0] == 1.0
    # click pairs: .9 > .1, .9 > .3, .2 > .1, .2 < .3
    assert clickmodel.auc(np.array([0.1, 0.9, 0.3, 0.2]), np.array([0, 1, 0, 1])) == pytest.approx(3 / 4)


@pytest.mark.parametrize("learner", list(clickmodel.LEARNERS))
def test_learners_find_a_planted_signal(learner):
    rng = np.random.default_rng(0)
    n, k = 300, 10
    X = rng.normal(size=(n * k, 3))
    group = np.repeat(np.arange(n), k)
    clicked = np.zeros(n * k, dtype=np.int64)
    clicked[np.arange(n) * k + X[:, 1].reshape(n, k).argmax(1)] = 1  # the click: highest feature 1
    model = clickmodel.LEARNERS[learner](X, clicked, group)
    assert clickmodel.auc(model.predict(X), clicked) > 0.85
    cv = clickmodel.cross_validate(X, clicked, group, learner, folds=3, k=k)
    assert cv["ndcg@10"] > cv["base ndcg@10"] + 0.2 and cv["auc"] > 0.8


def test_reranker_only_reorders_the_candidates_it_was_given():
    data = eval_set(20, seed=1)
    base, features = Linear(), clickmodel.ClickFeatures(facts())
    X, y, group = clickmodel.candidate_table(base, features, data, N_ITEMS, k=8)
    model = clickmodel.fit_logistic(X, y)
    longest = max(len(h) for h in data.histories)
    reranker = clickmodel.click_reranker(base, features, model, N_ITEMS, k=8, max_len=longest)
    plain = evaluate.evaluate(base, data, N_ITEMS, ks=(8, 10), max_len=longest)
    moved = evaluate.evaluate(reranker, data, N_ITEMS, ks=(8, 10), max_len=longest)
    top, _, _ = clickmodel.candidates(base, data, N_ITEMS, k=8)
    for row, new, old in zip(top.numpy(), moved.top_items, plain.top_items):
        assert set(new[:8]) == set(row) == set(old[:8])  # the same K items on top
        assert list(new[8:]) == list(old[8:])  # everything below keeps the base order
    assert np.array_equal(moved.metrics["hr@8"], plain.metrics["hr@8"])
    ndcg = clickmodel.candidate_ndcg(model.predict(X), y, 10, 8)
    assert np.allclose(moved.metrics["ndcg@10"], np.where(y.reshape(-1, 8).any(1), ndcg,
                                                          plain.metrics["ndcg@10"]))


def test_on_a_cold_split_click_models_lift_cold_targets_they_never_saw_clicked():
    """Cold items have no training interaction (popularity 0) and are never a validation click, so
    a click model learns nothing about them from behaviour; when text says which item comes next
    (items on a circle, sequences walk around it), re-ranking must still lift cold test targets
    above the base order, and the base order's HR@K stays."""
    rng = np.random.default_rng(0)
    starts = rng.integers(0, N_ITEMS, 120)
    seqs = (starts[:, None] + np.arange(8)[None, :]) % N_ITEMS + 1
    df = pd.DataFrame({"user_id": np.repeat(np.arange(120), 8), "item_id": seqs.ravel(),
                       "timestamp": np.tile(np.arange(8), 120)})
    s, cold = textrec.cold_start_split(df, N_ITEMS, cold_items=[3, 17, 25])
    angle = torch.arange(N_ITEMS + 1) * 2 * np.pi / N_ITEMS
    text = torch.stack([angle.cos(), angle.sin()], 1)  # (V, 2): neighbours on the circle are similar
    text[PAD] = 0
    f = clickmodel.item_facts(s.train, N_ITEMS, text, torch.zeros(N_ITEMS + 1, 1), torch.zeros(N_ITEMS + 1, 1))
    assert (f.popularity[cold] == 0).all() and (f.recent[cold] == 0).all()
    features = clickmodel.ClickFeatures(f)
    X, clicked, group = clickmodel.candidate_table(Linear(), features, s.valid, N_ITEMS, k=20)
    assert clicked.sum() > 0 and not np.isin(s.valid.targets, cold).any()  # no cold click to learn from
    longest = max(len(h) for h in s.test.histories)
    plain = evaluate.evaluate(Linear(), s.test, N_ITEMS, ks=(10, 20), max_len=longest)
    is_cold = np.isin(s.test.targets, cold)
    assert is_cold.sum() >= 10
    for name, fit in clickmodel.LEARNERS.items():
        reranker = clickmodel.click_reranker(Linear(), features, fit(X, clicked, group), N_ITEMS, 20, longest)
        moved = evaluate.evaluate(reranker, s.test, N_ITEMS, ks=(10, 20), max_len=longest)
        assert np.array_equal(moved.metrics["hr@20"], plain.metrics["hr@20"])
        assert moved.metrics["ndcg@10"][is_cold].mean() > plain.metrics["ndcg@10"][is_cold].mean() + 0.05, name


def test_learner_table_marks_the_validation_choice_and_adjusts_by_holm():
    base = {"hr@10": np.array([0.0, 1, 1, 0] * 10), "ndcg@10": np.array([0.0, 0.5, 1, 0] * 10)}
    reranked = {"worse": {"hr@10": base["hr@10"], "ndcg@10": base["ndcg@10"] - np.array([0, 0.2, 0.5, 0] * 10)},
                "same": {"hr@10": base["hr@10"], "ndcg@10": base["ndcg@10"]},
                "better": {"hr@10": np.ones(40), "ndcg@10": np.array([0.5, 1, 1, 0.5] * 10)}}
    table = clickmodel.learner_table(base, reranked, {"worse": 0.3, "same": 0.2, "better": 0.1}, n_resamples=200)
    assert table.index[table["chosen"]].tolist() == ["worse"]  # validation decides, not the test
    assert table.loc["better", "hr@10 diff"] == pytest.approx(0.5)  # half the users gain a hit
    assert table.loc["worse", "ndcg@10 diff"] == pytest.approx(-0.7 / 4)
    assert table.loc["same", "ndcg@10 p"] == 1.0 and table.loc["same", "ndcg@10 lo"] == 0.0
    p = table["ndcg@10 p"].to_numpy()
    order = np.argsort(p)  # Holm: smallest p times 3, next times 2, running maximum
    assert table["ndcg@10 p Holm"].to_numpy()[order[0]] == pytest.approx(min(1, 3 * p[order[0]]))
    assert table["ndcg@10 p Holm"].to_numpy()[order[1]] == pytest.approx(min(1, max(3 * p[order[0]], 2 * p[order[1]])))
    line = clickmodel.verdict(table)
    assert line.startswith("worse (chosen on validation), ndcg@10: -0.1750") and line.endswith("worse than the base order")


def test_cross_validation_keeps_the_base_order_where_a_fold_has_no_click_to_learn_from():
    X = np.random.default_rng(0).normal(size=(100, 3))
    clicked = np.zeros(100, dtype=np.int64)
    clicked[3] = 1  # one click in all: the folds that train without it keep the base order
    cv = clickmodel.cross_validate(X, clicked, np.repeat(np.arange(10), 10), "logistic", folds=5, k=10)
    assert cv["ndcg@10"] == cv["base ndcg@10"] == pytest.approx(1 / np.log2(5) / 10)
