"""SASRec: shapes, the loss against a hand computation, tying, causality, padding, saving."""

import pytest
import torch
import torch.nn.functional as F

from helpers.ids import IGNORE, PAD
from helpers.sasrec import SASRec, SASRecConfig, attention_mask

N_ITEMS, T = 30, 6



def make(seed=0, **kw):
    torch.manual_seed(seed)
    config = dict(max_len=T, hidden=16, n_layers=2, n_heads=2, dropout=0.1) | kw
    return SASRec(SASRecConfig(N_ITEMS, **config)).eval()


def batch():
    input_ids = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9]])
    labels = torch.tensor([[IGNORE, IGNORE, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7], [IGNORE] * 5 + [10]])
    return input_ids, labels


def test_shapes():
    model, (x, y) = make(), batch()
    logits, loss = model(x)
    assert logits.shape == (3, T, N_ITEMS + 1) and loss is None
    assert model.score(x).shape == (3, N_ITEMS + 1)
    assert model.attention_maps(x).shape == (3, 2, 2, T, T)
    logits, loss = model.train()(x, y)
    assert logits is None and loss.shape == () and loss.requires_grad
    assert model(x[:, -3:], y[:, -3:])[1].shape == ()  # fewer columns than max_len is fine


def test_ce_loss_matches_cross_entropy_on_full_logits():
    model, (x, y) = make(), batch()
    logits, _ = model(x)  # (B, T, V), PAD column -inf
    want = F.cross_entropy(logits.reshape(-1, N_ITEMS + 1), y.reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(model(x, y)[1], want, atol=1e-6)


@pytest.mark.parametrize("loss", ["bce", "sampled"])
def test_other_losses_are_finite_and_train(loss):
    model, (x, y) = make(loss=loss, n_negatives=10), batch()
    value = model.train()(x, y)[1]
    value.backward()
    assert torch.isfinite(value) and model.item_emb.weight.grad.abs().sum() > 0


def test_embeddings_are_tied():
    model, (x, _) = make(), batch()
    tables = [p for p in model.parameters() if p.shape == (N_ITEMS + 1, 16)]
    assert len(tables) == 1  # the output layer is the input embedding
    h = model.hidden(x)
    logits, _ = model(x)
    assert torch.allclose(logits[..., 1:], (h @ model.item_emb.weight.T)[..., 1:])


def test_causal_a_future_item_does_not_change_the_past():
    model, (x, _) = make(), batch()
    changed = x.clone()
    changed[:, 4] = 17
    before, after = model.hidden(x), model.hidden(changed)
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_padding_does_not_change_the_score():
    model = make()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 3, 4, 5]])
    assert torch.allclose(model.score(short), model.score(padded), atol=1e-6)
    maps = model.attention_maps(padded)  # (1, L, nh, T, T)
    assert torch.all(maps[..., 3:, :3] == 0)  # real queries never look at PAD keys
    assert torch.all(maps.triu(1) == 0)  # nor at the future
    assert torch.allclose(maps.sum(-1), torch.ones(1, 2, 2, T))


def test_attention_weights_reproduce_the_fused_kernel():
    model, (x, _) = make(), batch()
    attn = model.blocks[0].attn
    h, mask = torch.randn(3, T, 16), attention_mask(x)
    w = attn.weights(h, mask)  # (B, nh, T, T)
    _, _, v = attn._heads(h)
    by_hand = attn.proj((w @ v).transpose(1, 2).reshape(3, T, 16))
    assert torch.allclose(attn(h, mask), by_hand, atol=1e-6)


def test_pad_is_never_recommended():
    model, (x, _) = make(), batch()
    scores = model.score(x)
    assert torch.all(scores[:, PAD] == float("-inf"))
    assert not (scores.topk(N_ITEMS).indices == PAD).any()


def test_save_load_round_trip(tmp_path):
    model, (x, _) = make(), batch()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = make(seed=1)
    assert not torch.equal(other.score(x), model.score(x))
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert torch.equal(other.score(x), model.score(x))


def test_bad_inputs():
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(N_ITEMS, hidden=10, n_heads=3)
    with pytest.raises(ValueError, match="loss"):
        SASRecConfig(N_ITEMS, loss="mse")
    with pytest.raises(ValueError, match="at most"):
        make().hidden(torch.ones(1, T + 1, dtype=torch.long))
    assert make().score(torch.ones(2, T + 4, dtype=torch.long)).shape == (2, N_ITEMS + 1)  # keeps the last T
