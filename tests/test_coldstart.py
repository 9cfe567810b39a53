"""Cold-start remedies: ID dropout, a softmax over trained items, the content blend, new users."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import coldstart, evaluate, textrec
from helpers.ids import IGNORE, PAD
from helpers.losses import next_item_loss
from helpers.sasrec import SASRecConfig
from helpers.split import EvalSet
from helpers.train import TrainConfig, train
from toys import successor_df, text_vectors


def cold_split(n_items=20, cold=(4, 11)):
    df = successor_df(n_users=80, n_items=n_items)
    return df, *textrec.cold_start_split(df, n_items, cold_items=list(cold))


# ---------------------------------------------------------------- the split and never-trained items
def test_cold_items_absent_from_every_training_sequence_and_validation():
    df, s, cold = cold_split()
    for seq in s.train:
        assert not np.isin(seq, cold).any()
    assert not np.isin(s.valid.targets, cold).any()
    assert all(not np.isin(h, cold).any() for h in s.valid.histories + s.test.histories)
    assert set(cold) <= set(coldstart.never_trained(s))
    assert np.isin(s.test.targets, cold).any()  # some test targets stay cold


def test_validation_with_cold_is_the_previous_event_and_never_the_test_target():
    df, s, cold = cold_split()
    valid = coldstart.validation_with_cold(df, s, cold)
    seqs = {u: g["item_id"].to_numpy() for u, g in df.groupby("user_id", sort=False)}
    for u, h, t in zip(valid.users, valid.histories, valid.targets):
        assert t == seqs[u][-2]  # the event before the test target
        assert not np.isin(h, cold).any()
        assert np.array_equal(h, seqs[u][:-2][~np.isin(seqs[u][:-2], cold)])
    assert np.isin(valid.targets, cold).any()
    warm = ~np.isin(valid.targets, cold)  # where the previous event is warm: split.valid's example
    by_user = dict(zip(s.valid.users.tolist(), zip(s.valid.histories, s.valid.targets)))
    for u, h, t in zip(valid.users[warm], np.array(valid.histories, dtype=object)[warm], valid.targets[warm]):
        assert t == by_user[u][1] and np.array_equal(h, by_user[u][0])


# ---------------------------------------------------------------- training remedies
def test_id_dropout_masks_ids_in_training_only():
    emb = coldstart.IDDropoutEmbedding(text_vectors(), hidden=8, p=0.5)
    with torch.no_grad():
        emb.ids.normal_()
    text_only = emb.proj(emb.text) * emb.keep
    emb.train()
    torch.manual_seed(0)
    emb.resample()
    keep = emb.id_keep[:, 0].bool()
    assert 0 < keep[1:].sum() < 20  # some items keep their ID, some do not
    w = emb.weight
    assert torch.allclose(w[~keep], text_only[~keep])  # dropped: text alone
    assert torch.allclose(w[keep][1:], (text_only + emb.ids)[keep][1:])
    assert torch.equal(w, emb.weight)  # one mask until the next resample
    emb.eval()
    assert torch.allclose(emb.weight[1:], (text_only + emb.ids)[1:])
    assert (emb.weight[PAD] == 0).all()
    with pytest.raises(ValueError, match="p must"):
        coldstart.IDDropoutEmbedding(text_vectors(), hidden=8, p=1.5)


def test_warm_softmax_equals_cross_entropy_over_the_kept_items_and_leaves_others_untouched():
    torch.manual_seed(0)
    config = SASRecConfig(n_items=20, max_len=6, hidden=8, n_layers=1, n_heads=1, dropout=0.0)
    warm = np.array([i for i in range(1, 21) if i not in (4, 11)])
    model = coldstart.dropout_text_sasrec(config, text_vectors(), p=0.0, softmax_items=warm)
    input_ids = torch.tensor([[0, 0, 1, 2, 3, 5], [0, 6, 7, 8, 9, 10]])
    labels = torch.tensor([[IGNORE, IGNORE, 2, 3, 5, 6], [IGNORE, 7, 8, 9, 10, 12]])
    model.train()
    _, loss = model(input_ids, labels)
    h = model.hidden(input_ids)[labels != IGNORE]  # (N, H); dropout 0, so deterministic
    logits = h @ model.item_emb.weight.T  # (N, V)
    kept = torch.tensor([0, *warm])
    by_hand = F.cross_entropy(logits[:, kept[1:]], torch.searchsorted(kept[1:], labels[labels != IGNORE]))
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    full = next_item_loss(model.hidden(input_ids), labels, model.item_emb.weight)
    assert full.item() > loss.item()  # the cold items only ever added to the denominator
    loss.backward()
    assert model.item_emb.ids.grad[[4, 11]].abs().sum() == 0  # excluded items get no gradient
    with pytest.raises(ValueError, match="outside softmax_items"):
        model(input_ids, labels.masked_fill(labels == 12, 4))


def test_trained_remedies_leave_cold_ids_untouched_and_rank_cold_items_by_their_text():
    """A cold item whose text matches the warm item that follows the same history lands in
    the top 10 of every cold-target user; its ID row never moved from zero."""
    df = successor_df(n_users=120)
    vectors = text_vectors()
    vectors[4], vectors[11] = vectors[5], vectors[12]  # cold 4 reads like 5, the item after 3 in training
    s, cold = textrec.cold_start_split(df, 20, cold_items=[4, 11])
    warm = np.setdiff1d(np.arange(1, 21), coldstart.never_trained(s))
    config = SASRecConfig(n_items=20, max_len=7, hidden=16, n_layers=1, n_heads=1, dropout=0.0)
    torch.manual_seed(0)
    model = coldstart.dropout_text_sasrec(config, vectors, 0.5, softmax_items=warm)
    train(model, s, TrainConfig(epochs=30, batch_size=32, lr=5e-3, max_len=7, patience=30, eval_every=30),
          progress=False)
    assert (model.item_emb.ids[cold] == 0).all() and (model.item_emb.ids[warm] != 0).any()
    result = evaluate.evaluate(model, s.test, 20, ks=(10,))
    is_cold = np.isin(result.targets, cold)
    assert is_cold.sum() >= 3 and (result.metrics["hr@10"][is_cold] == 1).all()
    assert result.metrics["ndcg@10"][~is_cold].mean() > 0.9  # warm targets still learned


# ---------------------------------------------------------------- the blend
class Fixed:
    """A scorer that returns the same scores for every user."""

    def __init__(self, scores, max_len=5):
        self.scores, self.max_len = torch.as_tensor(scores, dtype=torch.float32), max_len

    def score(self, input_ids):
        return self.scores.expand(len(input_ids), -1).clone()


def test_cold_blend_keeps_the_warm_order_and_moves_cold_items_by_weight_and_offset():
    base = Fixed([0.0, 5.0, 4.0, 3.0, 2.0, 1.0])  # warm order 1 > 2 > 3; items 4, 5 cold
    content = Fixed([0.0, 0.0, 0.0, 0.0, 1.0, 3.0])
    x = torch.zeros(1, 5, dtype=torch.long)
    plain = coldstart.ColdBlend(base, content, [4, 5], 5, weight=0.0, offset=0.0).score(x)[0]
    z = (base.scores[1:] - base.scores[1:].mean()) / base.scores[1:].std(unbiased=False)
    assert plain[PAD] == float("-inf") and torch.allclose(plain[1:], z)
    lifted = coldstart.ColdBlend(base, content, [4, 5], 5, weight=1.0, offset=2.0).score(x)[0]
    assert torch.equal(lifted[1:4], plain[1:4])  # warm items untouched
    assert lifted[5] > lifted[4] and lifted[5] > lifted[1]  # content puts 5 first among cold, then on top


def test_choose_blend_finds_the_weight_that_ranks_cold_targets():
    base = Fixed([0.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    content = Fixed([0.0, 0.0, 0.0, 0.0, 1.0, 3.0])
    valid = EvalSet(np.arange(4), [np.array([1])] * 4, np.array([5, 5, 5, 2]))  # mostly cold item 5
    w, b, grid = coldstart.choose_blend(base, content, np.array([4, 5]), valid, 5,
                                        weights=(0.0, 1.0), offsets=(0.0, 3.0), metric="ndcg@10")
    assert (w, b) == (1.0, 3.0) and len(grid) == 4
    # item 5 first for the three cold targets; the warm target 2 comes after both cold items
    assert grid["ndcg@10"].max() == pytest.approx((3 * 1.0 + 1 / np.log2(4)) / 4)


# ---------------------------------------------------------------- new users
# ---------------------------------------------------------------- knobs chosen without the test's items
@pytest.mark.parametrize("how", ["newest", "random"])
def test_pseudo_cold_split_holds_no_test_item_and_no_test_target(how):
    df, s, cold = cold_split(n_items=40, cold=(4, 11, 30))
    ps, pseudo = coldstart.pseudo_cold_split(df, s, cold, cold_fraction=0.1, how=how)
    assert len(pseudo) == round(0.1 * (40 - 3)) and not np.isin(pseudo, cold).any()  # disjoint
    seqs = {u: g["item_id"].to_numpy() for u, g in df.groupby("user_id", sort=False)}
    tested = set(s.test.users.tolist())
    for u, h, t in zip(ps.test.users, ps.test.histories, ps.test.targets):
        past = seqs[u][:-1] if u in tested else seqs[u]  # the real test target is gone
        past = past[~np.isin(past, cold)]
        assert t == past[-1] and not np.isin(np.r_[h, t], cold).any()
    assert all(not np.isin(seq, np.r_[cold, pseudo]).any() for seq in ps.train)
    assert np.isin(ps.test.targets, pseudo).any()  # something to choose the knobs on


def test_against_content_pairs_the_same_cold_target_users():
    users, targets = np.arange(4), np.array([4, 5, 11, 6])  # users 0 and 2 have a cold target

    def result(ndcg, users=users):  # the fields of an evaluate.EvalResult that the comparison reads
        return SimpleNamespace(metrics={"ndcg@10": np.array(ndcg)}, users=users, targets=targets)

    out = coldstart.against_content(result([1.0, 0.2, 0.5, 0.0]), result([0.5, 0.9, 0.5, 1.0]),
                                    cold_items=np.array([4, 11]), n_resamples=100)
    assert out["users"] == 2 and out["diff"] == pytest.approx((0.5 + 0.0) / 2)
    assert out["mean_a"] == pytest.approx(0.75) and out["mean_b"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        coldstart.against_content(result([1.0] * 4), result([1.0] * 4, users[::-1]), np.array([4]))
