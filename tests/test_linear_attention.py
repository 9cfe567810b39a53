"""Linear attention in SASRec's attention slot: the swap itself, the recurrence written out with
loops, PAD keys, causality and padding (the registry's contract tests train it)."""

import pytest
import torch

from helpers import registry
from helpers.ids import PAD
from helpers.linear_attention import CausalLinearAttention
from helpers.profile import get_profile
from helpers.sasrec import CausalSelfAttention, SASRec, SASRecConfig, attention_mask
from test_train import successor_split

N_ITEMS, T = 30, 6
IDS = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9]])


def make(seed=0, **kw):
    torch.manual_seed(seed)
    config = dict(max_len=T, hidden=16, n_layers=2, n_heads=2, dropout=0.1, attention="linear") | kw
    return SASRec(SASRecConfig(N_ITEMS, **config)).eval()


def layer(seed=0):
    torch.manual_seed(seed)
    return CausalLinearAttention(SASRecConfig(N_ITEMS, hidden=8, n_heads=2)).eval()


def test_the_config_swaps_the_attention_layer_and_nothing_else():
    softmax, linear = make(attention="softmax"), make()
    assert all(type(b.attn) is CausalSelfAttention for b in softmax.blocks)
    assert all(type(b.attn) is CausalLinearAttention for b in linear.blocks)
    keys = ["item_emb.weight", "pos_emb.weight"] + [
        f"blocks.{i}.{name}" for i in range(2) for name in (
            "ln_1.weight", "ln_1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
            "ln_2.weight", "ln_2.bias", "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias")
    ] + ["ln_f.weight", "ln_f.bias"]
    assert list(softmax.state_dict()) == keys  # the default SASRec's parameter names, as before the swap
    linear.load_state_dict(softmax.state_dict())  # the same parameters fit either layer ...
    assert not torch.allclose(linear.hidden(IDS), softmax.hidden(IDS), atol=1e-3)  # ... and compute differently
    assert SASRecConfig(N_ITEMS).attention == "softmax"
    with pytest.raises(ValueError, match="attention must be one of"):
        SASRecConfig(N_ITEMS, attention="cosine")


def test_forward_equals_the_running_sums_written_out_with_loops():
    """y_t = phi(q_t) S_t / phi(q_t) . z_t, S_t and z_t summed over the real keys up to t; a
    PAD query reads itself alone (as in SASRec's mask). phi(x) = elu(x) + 1: x + 1, or e^x for x <= 0."""
    attn = layer()
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    x = torch.randn(2, 5, 8)
    q, k, v = attn._heads(x)  # (B, nh, T, hs)
    q, k = (torch.where(t > 0, t + 1, t.exp()) for t in (q, k))
    y = torch.zeros(2, 2, 5, 4)
    for b in range(2):
        for h in range(2):
            S, z = torch.zeros(4, 4), torch.zeros(4)
            for t in range(5):
                if ids[b, t] == PAD:
                    w = q[b, h, t] @ k[b, h, t]
                    y[b, h, t] = w * v[b, h, t] / w
                    continue
                S = S + torch.outer(k[b, h, t], v[b, h, t])
                z = z + k[b, h, t]
                y[b, h, t] = q[b, h, t] @ S / (q[b, h, t] @ z)
    by_hand = attn.proj(y.transpose(1, 2).reshape(2, 5, 8))
    assert torch.allclose(attn(x, attention_mask(ids)), by_hand, atol=1e-5)


def test_weights_are_normalised_and_never_read_pad_or_the_future():
    attn, mask = layer(), attention_mask(IDS)
    w = attn.weights(torch.randn(3, T, 8), mask)  # (B, nh, T, T)
    assert torch.allclose(w.sum(-1), torch.ones(3, 2, T), atol=1e-5)
    assert torch.all(w.triu(1) == 0)  # no query reads the future
    assert torch.all(w[0, :, 2:, :2] == 0) and torch.all(w[2, :, 5, :5] == 0)  # no real query reads PAD
    assert torch.equal(w > 0, mask.expand_as(w))  # every key the mask allows weighs something


def test_a_pad_key_contributes_nothing():
    attn = layer()
    x, mask = torch.randn(3, T, 8), attention_mask(IDS)
    changed = x.clone()
    changed[IDS == PAD] = torch.randn(int((IDS == PAD).sum()), 8)
    real = IDS != PAD
    assert torch.allclose(attn(x, mask)[real], attn(changed, mask)[real], atol=1e-6)
    assert not torch.allclose(attn(x, mask)[~real], attn(changed, mask)[~real])


def test_causal_a_future_item_does_not_change_the_past():
    model = make()
    changed = IDS.clone()
    changed[:, 4] = 17
    before, after = model.hidden(IDS), model.hidden(changed)
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_padding_does_not_change_the_score():
    model = make()
    short, padded = torch.tensor([[3, 4, 5]]), torch.tensor([[0, 0, 0, 3, 4, 5]])
    assert torch.allclose(model.score(short), model.score(padded), atol=1e-6)
    assert model.score(padded).shape == (1, N_ITEMS + 1)
    logits, loss = model.train()(IDS, IDS)
    assert logits is None and loss.shape == () and loss.requires_grad


def test_the_registry_entry_builds_sasrec_with_linear_attention():
    s = successor_split()
    model = registry.build("sasrec_linear", s, get_profile("ci", hidden=8, n_layers=1, n_heads=2))
    assert type(model) is SASRec and type(model.blocks[0].attn) is CausalLinearAttention
    assert registry.MODELS["sasrec_linear"].causal

