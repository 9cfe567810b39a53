"""BSARec: the low-pass weights by hand, the filter against the reference's FFT on each prefix,
alpha's two ends, causality, padding, and a tiny training run."""

import math

import pytest
import torch

from helpers import registry
from helpers.bsarec import BSARec, BSARecConfig, FrequencyFilter, lowpass_weights
from helpers.ids import PAD
from helpers.profile import get_profile
from helpers.sasrec import SASRec, SASRecConfig, attention_mask
from helpers.train import TrainConfig, train
from test_train import successor_split

N_ITEMS, T = 30, 6
IDS = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9]])


def make(seed=0, **kw):
    torch.manual_seed(seed)
    config = dict(max_len=T, hidden=16, n_layers=2, n_heads=2, dropout=0.1) | kw
    return BSARec(BSARecConfig(N_ITEMS, **config)).eval()


def make_filter(c=3, hidden=4, max_len=T):
    torch.manual_seed(0)
    return FrequencyFilter(BSARecConfig(N_ITEMS, max_len=max_len, hidden=hidden, n_heads=1, c=c)).eval()


def reference_low(x, c):
    """BSARec's reference filter on one whole sequence x (n, H): rfft, keep c // 2 + 1 bins, irfft."""
    spectrum = torch.fft.rfft(x, dim=0, norm="ortho")
    spectrum[c // 2 + 1:] = 0
    return torch.fft.irfft(spectrum, n=len(x), dim=0, norm="ortho")


def test_shapes():
    model = make()
    logits, loss = model(IDS)
    assert logits.shape == (3, T, N_ITEMS + 1) and loss is None
    assert model.score(IDS).shape == (3, N_ITEMS + 1)
    assert model.attention_maps(IDS).shape == (3, 2, 2, T, T)  # the attention branch's maps
    logits, loss = model.train()(IDS, IDS)
    assert logits is None and loss.shape == () and loss.requires_grad
    assert model.blocks[0].attn.filter.sqrt_beta.shape == (16,)  # one beta per channel


def test_lowpass_weights_by_hand():
    """c = 3 keeps bins 0 and 1: at the last of n >= 3 items, item j steps back weighs
    (1 + 2 cos(2 pi j / n)) / n. One or two items have no higher bin: the filter is the identity."""
    W = lowpass_weights(8, c=3).double()
    assert torch.allclose(W[:2], torch.eye(8, dtype=torch.double)[0], atol=1e-7)  # row n - 1: [1, 0, ..., 0]
    assert torch.allclose(W[3, :4], torch.tensor([3, 1, -1, 1], dtype=torch.double) / 4, atol=1e-7)
    for n in range(3, 9):
        by_hand = torch.tensor([(1 + 2 * math.cos(2 * math.pi * j / n)) / n for j in range(n)], dtype=torch.double)
        assert torch.allclose(W[n - 1, :n], by_hand, atol=1e-7), n
        assert torch.all(W[n - 1, n:] == 0)
    assert torch.allclose(W.sum(1), torch.ones(8, dtype=torch.double), atol=1e-6)  # constants pass whole
    everything_low = lowpass_weights(8, c=15)  # keeps every bin: the low part is the item itself
    assert torch.allclose(everything_low, torch.eye(8)[0].expand(8, 8), atol=1e-6)  # every row: lag 0 weighs 1


@pytest.mark.parametrize("c", [1, 3, 5])
def test_each_position_gets_the_reference_filter_of_its_own_prefix(c):
    filt, x = make_filter(c), torch.randn(3, T, 4)
    low = filt.low(x, attention_mask(IDS))  # (B, T, H)
    for b in range(3):
        first = int((IDS[b] == PAD).sum())
        for t in range(first, T):
            want = reference_low(x[b, first:t + 1], c)[-1]  # the reference at the last item of the prefix
            assert torch.allclose(low[b, t], want, atol=1e-5), (b, t)


def test_a_constant_sequence_is_all_low_and_an_alternating_one_all_high():
    filt, mask = make_filter(), attention_mask(IDS[1:2])
    beta = filt.sqrt_beta.detach() ** 2
    constant = torch.ones(1, T, 4) * torch.tensor([1.0, -2.0, 0.5, 3.0])
    assert torch.allclose(filt.low(constant, mask), constant, atol=1e-6)
    assert torch.allclose(filt(constant, mask), constant, atol=1e-6)  # no high part for beta to scale
    alternating = torch.tensor([1.0, -1.0] * 3)[None, :, None].expand(1, T, 4)  # the highest frequency
    last = filt(alternating, mask)[0, -1]  # an even-length prefix: nothing of it is low
    assert torch.allclose(filt.low(alternating, mask)[0, -1], torch.zeros(4), atol=1e-6)
    assert torch.allclose(last, beta * alternating[0, -1], atol=1e-6)


def test_alpha_one_is_the_filter_alone_and_alpha_zero_is_sasrec():
    pure, mixed = make(alpha=1.0), make(alpha=0.5)
    for model in (pure, mixed):
        before = model.hidden(IDS)
        with torch.no_grad():
            for block in model.blocks:
                block.attn.attn.qkv.weight.normal_()  # another attention branch
        changed = not torch.allclose(before, model.hidden(IDS), atol=1e-5)
        assert changed == (model is mixed)
    sasrec = SASRec(SASRecConfig(N_ITEMS, max_len=T, hidden=16, n_layers=2, n_heads=2)).eval()
    bsarec = make(alpha=0.0)
    state = {k.replace(".attn.", ".attn.attn."): v for k, v in sasrec.state_dict().items()}
    bsarec.load_state_dict(state | {k: v for k, v in bsarec.state_dict().items() if ".filter." in k})
    assert torch.allclose(bsarec.hidden(IDS), sasrec.hidden(IDS), atol=1e-6)


def test_causal_a_future_item_does_not_change_the_past():
    model = make()
    for t in range(1, T):
        changed = IDS.clone()
        changed[:, t:] = 17
        before, after = model.hidden(IDS), model.hidden(changed)
        real = IDS[:, :t] != PAD
        assert torch.allclose(before[:, :t][real], after[:, :t][real], atol=1e-6), t
        assert not torch.allclose(before[:, t:], after[:, t:]), t


def test_padding_does_not_change_the_score():
    model = make()
    short, padded = torch.tensor([[3, 4, 5, 8]]), torch.tensor([[0, 0, 3, 4, 5, 8]])
    assert torch.allclose(model.score(short), model.score(padded), atol=1e-6)
    assert torch.all(model.score(padded)[:, PAD] == float("-inf"))


def test_bad_settings():
    with pytest.raises(ValueError, match="alpha"):
        BSARecConfig(N_ITEMS, alpha=1.5)
    with pytest.raises(ValueError, match="c must"):
        BSARecConfig(N_ITEMS, c=0)
    with pytest.raises(ValueError, match="divisible"):
        BSARecConfig(N_ITEMS, hidden=10, n_heads=3)  # SASRec's checks still apply


def test_the_registry_entry_builds_bsarec_from_the_profile():
    config, _ = registry.configs("bsarec", 20, get_profile("ci", hidden=8, n_heads=2, max_len=7))
    assert type(config) is BSARecConfig and (config.hidden, config.max_len, config.alpha, config.c) == (8, 7, 0.9, 3)
    model = registry.build("bsarec", successor_split(), get_profile("ci", hidden=8, n_layers=1, n_heads=2))
    assert type(model) is BSARec and registry.MODELS["bsarec"].causal


def test_learns_the_successor_pattern():
    torch.manual_seed(0)
    model = BSARec(BSARecConfig(20, max_len=8, hidden=16, n_layers=1, n_heads=2, dropout=0.0))
    config = TrainConfig(epochs=30, batch_size=32, lr=1e-2, max_len=8, patience=30, eval_every=30)
    result = train(model, successor_split(), config, progress=False)
    assert result.history["loss"].iloc[-1] < 0.5 * result.history["loss"].iloc[0]
    assert result.best_metric > 0.9  # item i + 1 ranked first after item i (untrained: NDCG@10 about 0.3)
