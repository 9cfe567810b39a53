"""Notebook 10's helpers: de-duplication, codes, splits, the two-head model, behaviour metrics."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from helpers import behaviour_metrics, mbsasrec
from helpers import multibehaviour as mb
from helpers.evaluate import evaluate
from helpers.ids import IGNORE

SHARED = Path(os.environ.get("COURSE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_retail = pytest.mark.skipif(not (SHARED / "multibehaviour/mbht_retail/retail_beh.train.inter").is_file(),
                                  reason="no local copy of MBHT's RetailRocket file")


def rows_of(*rows):
    """MBHT-style rows from (items, codes, target) triples."""
    return pd.DataFrame({"row": np.arange(1, len(rows) + 1),
                         "items": [np.array(i) for i, _, _ in rows], "codes": [np.array(c) for _, c, _ in rows],
                         "target": [t for _, _, t in rows]})


# user A: view 5, cart 5, buy 5, view 7, cart 7, buy 7 -> copies cut before each purchase (the
# first purchase shown masked as 0 in one copy, unmasked as 3 in another); user B: view 9, buy 9.
TOY = rows_of(([5, 5], [2, 1], 5),
              ([5, 5, 5, 7, 7], [2, 1, 0, 2, 1], 7),
              ([5, 5, 5, 7, 7], [2, 1, 3, 2, 1], 7),
              ([9], [2], 9), ([9], [2], 9), ([9], [2], 9))


def test_deduplicate_keeps_each_user_once_and_every_purchase():
    users, owner = mb.deduplicate(TOY)
    assert len(users) == 2 and sorted(users.rows) == [3, 3]
    assert owner.tolist() == [0, 0, 0, 1, 1, 1]
    a = users.iloc[0]
    assert a["items"].tolist() == [5, 5, 5, 7, 7, 7]
    assert a["behaviours"].tolist() == [mb.VIEW, mb.CART, mb.BUY, mb.VIEW, mb.CART, mb.BUY]
    for r in range(len(TOY)):  # no purchase lost: each target is a buy right after its history
        u, t = users.iloc[owner[r]], len(TOY["items"].iat[r])
        assert u["items"][t] == TOY.target.iat[r] and u["behaviours"][t] == mb.BUY


def test_identical_histories_of_two_users_become_two_users():
    users, _ = mb.deduplicate(rows_of(*[([9], [2], 9)] * 6))
    assert len(users) == 2 and users.rows.tolist() == [3, 3]


def test_code_order_reads_the_funnel():
    order = mb.code_order(TOY)
    assert order.loc[2, 1] == 1.0 and order.loc[1, 2] == 0.0  # views come before carts
    assert order.loc[1, 0] == 1.0 and order.loc[1, 3] == 1.0  # carts before purchases
    assert np.isnan(order.loc[0, 3])  # masked and unmasked purchase never meet on one item


@needs_retail
def test_the_real_file_codes_and_copies():
    rows = mb.read_mbht("train", SHARED)
    order = mb.code_order(rows)
    assert order.loc[2, 1] > 0.9 and order.loc[1, 0] > 0.99 and order.loc[2, 0] > 0.9
    users, owner = mb.deduplicate(rows)
    assert len(rows) == 30690 and (users.rows <= 3).all() and (users.rows == 3).mean() > 0.95
    for r in range(0, len(rows), 97):
        u = users.iloc[owner[r]]
        t = len(rows["items"].iat[r])
        assert u["items"][t] == rows.target.iat[r] and u["behaviours"][t] == mb.BUY


def toy_split():
    rng = np.random.default_rng(0)
    users = [(i, rng.integers(1, 30, n), rng.integers(1, 4, n)) for i, n in enumerate(rng.integers(2, 12, 60))]
    frame = pd.DataFrame(users, columns=["user", "items", "behaviours"])
    return mb.split_users(frame, 30, held_out=0.2, seed=1)


def test_split_is_by_user_and_the_target_never_enters_the_input():
    s = toy_split()
    for part in ("valid", "test"):
        items, behaviours = s.parts[part]
        assert not any(any(x is y for y in s.train_items) for x in items)
        for behaviour in (mb.VIEW, mb.BUY):
            ev, behs = s.task(part, behaviour)
            for u, h, b, t in zip(ev.users, ev.histories, behs, ev.targets):
                full_items, full_behs = items[u], behaviours[u]
                at = len(h)
                assert full_items[at] == t and full_behs[at] == behaviour  # the target is the next event
                assert np.array_equal(h, full_items[:at]) and np.array_equal(b, full_behs[:at])
                assert not (full_behs[at + 1:] == behaviour).any()  # it is the last of that behaviour


def tiny_model(**changes):
    return mbsasrec.MBSASRec(mbsasrec.MBSASRecConfig(n_items=30, max_len=8, hidden=16, n_layers=1, n_heads=2,
                                                     dropout=0.0, n_negatives=10, **changes))


def test_behaviour_head_is_a_softmax_and_the_loss_trains():
    torch.manual_seed(0)
    model = tiny_model()
    x = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    b = torch.tensor([[0, 0, 1, 2, 3], [1, 1, 2, 2, 3]])
    out = model(x, b)
    assert out.behaviour_logits.shape == (2, 5, 4) and out.hidden.shape == (2, 5, 16)
    p = model.predict([np.array([3, 4, 5])], [np.array([1, 2, 3])])
    assert p.shape == (1, 4) and p[0, 0] == 0 and torch.allclose(p.sum(1), torch.ones(1))
    y = torch.tensor([[IGNORE, IGNORE, 4, 5, 6], [2, 3, 4, 5, 6]])
    by = torch.tensor([[IGNORE, IGNORE, 2, 3, 1], [1, 2, 2, 3, 1]])
    loss = model(x, b, y, by).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert model.beh_head.weight.grad.abs().sum() > 0 and model.item_emb.weight.grad.abs().sum() > 0


def test_weight_one_trains_the_behaviour_head_only():
    model = tiny_model(behaviour_weight=1.0)
    x, b = torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2, 3]])
    model(x, b, torch.tensor([[2, 3, 4]]), torch.tensor([[2, 3, 1]])).loss.backward()
    assert model.query_emb.weight.grad is None  # the item head was never asked


def test_fit_keeps_the_best_epoch():
    s = toy_split()
    train = mbsasrec.MBBatches(s.train_items, s.train_behaviours, 8, 16)
    valid = mbsasrec.MBBatches(*s.parts["valid"], 8, 16)
    model = tiny_model()
    log = mbsasrec.fit(model, train, valid, epochs=3, patience=5)
    assert len(log) == 3
    assert np.isclose(mbsasrec.loss_on(model, valid), min(r["valid_loss"] for r in log))


def test_behaviour_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    pred[pred == 2] = 1  # class 2 never predicted: precision 0 by convention
    m = behaviour_metrics.confusion(y, pred, 3)
    assert (m == confusion_matrix(y, pred, labels=[0, 1, 2])).all()
    ours = behaviour_metrics.per_class(m)
    theirs = precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    for column, values in zip(["precision", "recall", "f1", "support"], theirs):
        assert np.allclose(ours[column], values)
    assert np.isclose(behaviour_metrics.summary(y, pred, 3)["macro_f1"],
                      f1_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0))


def test_user_bootstrap_brackets_the_value():
    rng = np.random.default_rng(1)
    y, pred, groups = rng.integers(0, 3, 400), rng.integers(0, 3, 400), rng.integers(0, 40, 400)
    ci = behaviour_metrics.user_bootstrap(y, pred, groups, 3, n_resamples=200)
    assert ((ci.lo <= ci.value) & (ci.value <= ci.hi)).all()


def test_paired_user_bootstrap_of_identical_predictions_is_exactly_zero():
    rng = np.random.default_rng(2)
    y, pred, groups = rng.integers(0, 3, 300), rng.integers(0, 3, 300), rng.integers(0, 30, 300)
    c = behaviour_metrics.paired_user_bootstrap(y, pred, pred, groups, 3, n_resamples=200)
    # the same users score both models in every resample, so each resampled difference is 0
    assert (c[["diff", "lo", "hi"]] == 0).all().all()


def test_paired_user_bootstrap_by_hand():
    # four users, two examples each (classes 0 then 1); a is always right, b swaps user 3's two
    y = np.array([0, 1] * 4)
    groups = np.repeat([0, 1, 2, 3], 2)
    pred_b = y.copy()
    pred_b[groups == 3] = [1, 0]
    c = behaviour_metrics.paired_user_bootstrap(y, y, pred_b, groups, 2, n_resamples=500, seed=0)
    # b: 6 of 8 right; per class precision = recall = 3/4, so F1 3/4 and macro-F1 3/4
    assert np.allclose(c["a"], [1, 1]) and np.allclose(c["b"], [6 / 8, 3 / 4])
    assert np.allclose(c["diff"], [1 / 4, 1 / 4])
    # a resample without user 3 (probability (3/4)^4 = 0.32) ties: the CI starts at 0, never below
    assert (c.lo == 0).all() and (c.hi >= 1 / 4).all()
    # b wrong on half the users: a resample has to miss all five of them to tie, so the CI excludes 0
    y10, groups10 = np.array([0, 1] * 10), np.repeat(np.arange(10), 2)
    pred_b10 = np.where(groups10 < 5, 1 - y10, y10)
    c10 = behaviour_metrics.paired_user_bootstrap(y10, y10, pred_b10, groups10, 2, n_resamples=500, seed=0)
    assert np.isclose(c10.loc["accuracy", "diff"], 0.5)
    assert ((c10.lo > 0) & (c10.lo <= c10["diff"]) & (c10["diff"] <= c10.hi)).all()


def test_paired_user_bootstrap_resamples_users_not_examples():
    # user 0 has 100 examples, all of them wrong for b; nine users have one example, right for both
    y = np.zeros(109, dtype=int)
    groups = np.concatenate([np.zeros(100, dtype=int), np.arange(1, 10)])
    pred_b = np.where(groups == 0, 1, 0)
    by_user = behaviour_metrics.paired_user_bootstrap(y, y, pred_b, groups, 2, n_resamples=500)
    by_example = behaviour_metrics.paired_user_bootstrap(y, y, pred_b, np.arange(109), 2, n_resamples=500)
    assert np.isclose(by_user.loc["accuracy", "diff"], 100 / 109)
    # user 0's 100 examples come or go together: about a third of the resamples miss them (diff 0)
    assert by_user.loc["accuracy", "lo"] == 0
    # drawn one by one, the 100 examples never all go missing: the interval stays near 100/109
    assert by_example.loc["accuracy", "lo"] > 0.8


def test_paired_user_bootstrap_is_seeded():
    rng = np.random.default_rng(3)
    y, a, b, groups = (rng.integers(0, 3, 300), rng.integers(0, 3, 300), rng.integers(0, 3, 300),
                       rng.integers(0, 30, 300))
    first = behaviour_metrics.paired_user_bootstrap(y, a, b, groups, 3, n_resamples=100, seed=5)
    again = behaviour_metrics.paired_user_bootstrap(y, a, b, groups, 3, n_resamples=100, seed=5)
    other = behaviour_metrics.paired_user_bootstrap(y, a, b, groups, 3, n_resamples=100, seed=6)
    pd.testing.assert_frame_equal(first, again)
    assert not first[["lo", "hi"]].equals(other[["lo", "hi"]])
    assert np.allclose(first["diff"], other["diff"])  # the full-data difference needs no draw


def test_reliability_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    table, ece = behaviour_metrics.reliability(probs, y, n_bins=10)
    # bins: 0.9 (two, one right), 0.6 (one, right), 0.7 (one, right)
    assert np.isclose(ece, (2 * abs(0.9 - 0.5) + abs(0.6 - 1) + abs(0.7 - 1)) / 4)
    assert table["count"].sum() == 4


def test_last_cart_heuristic_through_the_harness():
    histories = [np.array([4, 5, 6]), np.array([7, 8])]
    behaviours = [np.array([mb.CART, mb.CART, mb.VIEW]), np.array([mb.VIEW, mb.VIEW])]
    scores = mb.recency_scores(histories, behaviours, n_items=10)
    s = scores(np.array([0, 1]))
    assert s[0].argmax() == 5 and s[0, 5] > s[0, 4] > s[0, 6]  # the last cart, an older cart, then views
    assert s[1].argmax() == 8  # no cart: the last view
    ev = mb.EvalSet(np.array([0, 1]), histories, np.array([5, 8]))
    r = evaluate(mb.RowScorer(scores, histories, 4), ev, 10, exclude_seen=False, max_len=4)
    assert np.allclose(r.metrics["hr@5"], 1) and np.allclose(r.metrics["ndcg@5"], 1)


def test_row_scorer_refuses_rows_out_of_order():
    histories = [np.array([1, 2]), np.array([3])]
    scorer = mb.RowScorer(lambda rows: torch.zeros(len(rows), 5), histories, 4)
    with pytest.raises(ValueError, match="another order"):
        scorer.score(torch.tensor([[0, 0, 0, 3]]))


def test_static_negatives_are_shared_except_where_the_user_has_the_item():
    ev = mb.EvalSet(np.array([0, 1]), [np.array([2]), np.array([7])], np.array([3, 8]))
    neg = mb.static_negatives(ev, np.array([1, 2, 3, 4]), n_items=20, n=4, seed=0)
    assert neg[1].tolist() == [1, 2, 3, 4]  # nothing of user 1 among them: the fixed list as is
    assert neg[0, 0] == 1 and neg[0, 3] == 4 and not {2, 3} & set(neg[0].tolist())


def test_rank_against_counts_ties_at_their_expected_value():
    ev = mb.EvalSet(np.array([0]), [np.array([1])], np.array([5]))

    class Constant:
        def score(self, input_ids):
            return torch.zeros(len(input_ids), 11)

    negatives = np.array([[2, 3, 4, 6, 7, 8, 9, 10, 1, 2, 3, 4, 6, 7, 8, 9, 10, 1, 2]])  # 19 negatives, all tied
    m = mb.rank_against(Constant(), ev, negatives, max_len=2, ks=(10,))
    assert np.isclose(m["hr@10"][0], 10 / 20)
