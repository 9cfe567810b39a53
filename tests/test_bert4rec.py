"""BERT4Rec: the stock BertForMaskedLM's loss and gradients, cloze masking, MASK inference, saving."""

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertForMaskedLM

from helpers import evaluate, split, train
from helpers.bert4rec import (BERT4Rec, BERT4RecConfig, ClozeBatches, bert_config,
                              cloze_batches, item_windows, mask_items)
from helpers.ids import IGNORE, PAD, mask_id

N_ITEMS, T = 30, 6
MASK = mask_id(N_ITEMS)


def make(seed=0, **kw):
    torch.manual_seed(seed)
    config = dict(max_len=T, hidden=16, n_layers=2, n_heads=2, dropout=0.1) | kw
    return BERT4Rec(BERT4RecConfig(N_ITEMS, **config)).eval()


def batch():
    """Left-padded windows with masks at hand-picked positions."""
    input_ids = torch.tensor([[0, 0, 3, MASK, 5, 6], [1, MASK, 3, 4, 5, MASK], [0, 0, 0, 0, 0, MASK]])
    labels = torch.full_like(input_ids, IGNORE)
    labels[0, 3], labels[1, 1], labels[1, 5], labels[2, 5] = 4, 2, 7, 9
    return input_ids, labels


def test_bert_config_is_the_item_vocabulary():
    config = bert_config(BERT4RecConfig(N_ITEMS, max_len=T, hidden=16, n_heads=2))
    assert config.vocab_size == N_ITEMS + 2  # PAD, items, MASK
    assert (config.max_position_embeddings, config.type_vocab_size, config.pad_token_id) == (T, 1, PAD)
    assert (config.hidden_size, config.intermediate_size, config.num_attention_heads) == (16, 64, 2)
    assert type(make().mlm) is BertForMaskedLM  # the stock model, no subclass


def test_shapes():
    model, (x, y) = make(), batch()
    logits, loss = model(x)
    assert logits.shape == (3, T, N_ITEMS + 2) and loss is None
    assert model.score(x).shape == (3, N_ITEMS + 1)
    _, loss = model.train()(x, y)
    assert loss.shape == () and loss.requires_grad
    assert model(x[:, -3:], y[:, -3:])[1].shape == ()  # fewer columns than max_len is fine
    assert model.score(x[:, -2:]).shape == (3, N_ITEMS + 1)
    with pytest.raises(ValueError, match="at most"):
        model(torch.ones(1, T + 1, dtype=torch.long))


@pytest.mark.parametrize("bad", [dict(hidden=15), dict(max_len=1), dict(mask_prob=0.0), dict(last_item_prob=2.0)])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValueError):
        BERT4RecConfig(N_ITEMS, **({"max_len": T, "hidden": 16, "n_heads": 2} | bad))


def test_loss_and_gradients_equal_bert_for_masked_lm():
    """Full-width batch: our masked-positions-only fused loss against the stock forward."""
    model, (x, y) = make(), batch()
    model.train()
    torch.manual_seed(1)  # the same dropout masks in both passes
    theirs = model.mlm(input_ids=x, attention_mask=(x != PAD).long(), labels=y).loss
    theirs.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    torch.manual_seed(1)
    _, ours = model(x, y)
    ours.backward()
    assert torch.allclose(ours, theirs, atol=1e-6)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, want[name], atol=1e-6), name


def test_dropping_pad_columns_changes_nothing():
    """Positions count from the right, so a batch trimmed of its PAD-only columns reads the same."""
    model, (x, y) = make(), batch()
    wide = torch.cat([torch.zeros(3, 0, dtype=torch.long), x], 1)
    short_x, short_y = x[2:, -1:], y[2:, -1:]  # the third row alone is one column wide
    assert torch.allclose(model(short_x, short_y)[1], model(wide[2:], y[2:])[1], atol=1e-6)


def test_bidirectional_a_later_item_changes_an_earlier_position():
    model, (x, _) = make(), batch()
    changed = x.clone()
    changed[1, 4] = 17
    before, after = model.hidden(x), model.hidden(changed)
    assert not torch.allclose(before[1, :4], after[1, :4])
    assert torch.allclose(before[0], after[0])  # other rows untouched


def test_item_windows_cut_from_the_recent_end():
    got = item_windows([np.array([1, 2, 3, 4, 5]), np.array([7, 8]), np.array([], dtype=np.int64)], 3)
    assert got.tolist() == [[3, 4, 5], [0, 1, 2], [0, 7, 8]]


def test_masking_by_hand():
    """mask_prob=1 masks every real item; PAD never; labels carry the originals only there."""
    items = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]])
    input_ids, labels = mask_items(items, N_ITEMS, 1.0, torch.Generator().manual_seed(0))
    assert input_ids.tolist() == [[0, 0, MASK, MASK], [MASK] * 4, [0, 0, 0, 0]]
    assert labels.tolist() == [[IGNORE, IGNORE, 3, 4], [5, 6, 7, 8], [IGNORE] * 4]


def test_masking_rules_hold_over_many_draws():
    gen = torch.Generator().manual_seed(0)
    items = item_windows([np.arange(1, n + 1) for n in np.random.default_rng(0).integers(1, 15, 2000)], 10)
    input_ids, labels = mask_items(items, N_ITEMS, 0.2, gen)
    real, masked = items != PAD, input_ids == MASK
    assert not (masked & ~real).any()  # PAD is never masked
    assert (input_ids[~real] == PAD).all() and (input_ids[real & ~masked] == items[real & ~masked]).all()
    assert (labels[masked] == items[masked]).all() and (labels[~masked] == IGNORE).all()
    assert masked.any(1).all()  # at least one mask per window
    assert 0.2 <= masked.sum() / real.sum() < 0.3  # ~0.2, plus the forced single masks
    only_last, _ = mask_items(items, N_ITEMS, 0.2, gen, last_item_prob=1.0)
    assert (only_last[:, -1] == MASK).all() and ((only_last == MASK).sum(1) == 1).all()


def test_cloze_batches_cover_every_window_with_fresh_masks():
    seqs = [np.arange(1, n + 1) for n in (3, 5, 12, 2, 7)]
    batches = ClozeBatches(seqs, N_ITEMS, max_len=T, batch_size=2, mask_prob=0.3)
    assert len(batches.items) == 7 and len(batches) == 4  # 12 and 7 items make two windows each
    epoch = list(batches.epoch(torch.Generator().manual_seed(0)))
    rows = torch.cat([torch.where(y != IGNORE, y, x) for x, y in epoch for x, y in zip(x, y)])
    assert sorted(rows[rows != PAD].tolist()) == sorted(np.concatenate(seqs).tolist())
    assert all(((x != PAD).sum(1).max() == x.shape[1]) for x, _ in epoch)  # PAD-only columns dropped
    again = list(batches.epoch(torch.Generator().manual_seed(0)))
    other = list(batches.epoch(torch.Generator().manual_seed(1)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch, again))
    assert not all(a[0].shape == b[0].shape and torch.equal(a[0], b[0]) for a, b in zip(epoch, other))


def test_score_reads_mask_appended_after_the_recent_items():
    model = make()
    history = torch.tensor([[1, 2, 3, 4, 5, 6], [0, 0, 0, 7, 8, 9]])
    appended = torch.cat([history[:, 1:], torch.full((2, 1), MASK)], 1)  # oldest item dropped
    want = model.mlm(input_ids=appended, attention_mask=(appended != PAD).long()).logits[:, -1, : N_ITEMS + 1]
    got = model.score(history)
    assert torch.allclose(got[:, 1:], want[:, 1:], atol=1e-5)


def test_mask_and_pad_are_never_recommended():
    model = make()
    with torch.no_grad():  # make MASK and PAD the most likely outputs
        model.mlm.cls.predictions.decoder.bias[[PAD, MASK]] = 100.0
    scores = model.score(batch()[0])
    assert scores.shape[1] == N_ITEMS + 1 and torch.isneginf(scores[:, PAD]).all()
    eval_set = split.EvalSet(np.arange(3), [np.array([1, 2]), np.array([3]), np.array([4, 5, 6])], np.array([7, 8, 9]))
    top = evaluate.evaluate(model, eval_set, N_ITEMS, ks=(10,)).top_items
    assert ((top >= 1) & (top <= N_ITEMS)).all()


def test_score_ignores_pad_positions():
    model = make()
    x = torch.tensor([[0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6]])  # the full row keeps every column
    before = model.score(x)
    assert torch.allclose(before[:1, 1:], model.score(torch.tensor([[3, 4, 5]]))[:, 1:], atol=1e-5)
    with torch.no_grad():  # a PAD embedding that would change everything if attended to
        model.mlm.bert.embeddings.word_embeddings.weight[PAD] = 5.0
    assert torch.allclose(model.score(x)[:, 1:], before[:, 1:], atol=1e-5)


def test_save_load_round_trip(tmp_path):
    model, (x, _) = make(), batch()
    torch.save(model.state_dict(), tmp_path / "bert4rec.pt")
    loaded = make(seed=1)
    assert not torch.allclose(loaded.score(x)[:, 1:], model.score(x)[:, 1:])
    loaded.load_state_dict(torch.load(tmp_path / "bert4rec.pt", weights_only=True))
    assert torch.equal(loaded.score(x), model.score(x))
    model.mlm.save_pretrained(tmp_path / "hf")  # the stock model saves the Hugging Face way
    loaded.mlm = BertForMaskedLM.from_pretrained(tmp_path / "hf")
    assert torch.allclose(loaded.score(x), model.score(x))


def test_trains_with_the_shared_loop():
    """A repeated pattern: after a few epochs the next item is ranked first."""
    rng = np.random.default_rng(0)
    rows = [(u, t, int(i)) for u in range(40) for t, i in enumerate(np.roll(np.arange(1, 9), -rng.integers(8)))]
    df = pd.DataFrame(rows, columns=["user_id", "timestamp", "item_id"])
    s = split.leave_one_out(df, n_items=N_ITEMS)
    model = make(dropout=0.0, max_len=8, mask_prob=0.3)
    config = train.TrainConfig(epochs=40, batch_size=16, lr=5e-3, max_len=8, patience=40, eval_every=20)
    result = train.train(model, s, config, make_batches=cloze_batches(model.config), progress=False)
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0]
    assert evaluate.evaluate(model, s.test, N_ITEMS, ks=(1,)).summary()["hr@1"] > 0.9
