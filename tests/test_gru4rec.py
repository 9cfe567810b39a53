"""GRU4Rec: shapes, the loss against a hand computation, padding, causality, saving."""

import pytest
import torch
import torch.nn.functional as F

from helpers.gru4rec import GRU4Rec, GRU4RecConfig, rotate
from helpers.ids import IGNORE, PAD

N_ITEMS, T = 30, 6



def make(seed=0, **kw):
    torch.manual_seed(seed)
    return GRU4Rec(GRU4RecConfig(N_ITEMS, **(dict(max_len=T, hidden=16, n_layers=2) | kw))).eval()


def batch():
    input_ids = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9]])
    labels = torch.tensor([[IGNORE, IGNORE, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7], [IGNORE] * 5 + [10]])
    return input_ids, labels


def test_rotate_by_hand():
    x = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]])
    assert rotate(x, torch.tensor([2, 0])).tolist() == [[1, 2, 0, 0], [3, 4, 5, 6]]
    assert rotate(rotate(x, torch.tensor([2, 1])), -torch.tensor([2, 1])).tolist() == x.tolist()


def test_shapes_and_ce_loss_by_hand():
    model, (x, y) = make(), batch()
    logits, loss = model(x)
    assert logits.shape == (3, T, N_ITEMS + 1) and loss is None
    assert model.score(x).shape == (3, N_ITEMS + 1)
    want = F.cross_entropy(logits.reshape(-1, N_ITEMS + 1), y.reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(model(x, y)[1], want, atol=1e-6)


@pytest.mark.parametrize("loss", ["bce", "sampled"])
def test_other_losses(loss):
    model, (x, y) = make(loss=loss, n_negatives=10), batch()
    value = model.train()(x, y)[1]
    value.backward()
    assert torch.isfinite(value) and model.item_emb.weight.grad.abs().sum() > 0


def test_tied_and_pad_never_recommended():
    model, (x, _) = make(), batch()
    assert len([p for p in model.parameters() if p.shape == (N_ITEMS + 1, 16)]) == 1
    scores = model.score(x)
    assert torch.all(scores[:, PAD] == float("-inf"))
    assert torch.allclose(scores[:, 1:], (model.hidden(x)[:, -1] @ model.item_emb.weight.T)[:, 1:])


def test_padding_does_not_change_the_state():
    model = make()
    assert torch.allclose(model.score(torch.tensor([[3, 4, 5]])),
                          model.score(torch.tensor([[0, 0, 0, 3, 4, 5]])), atol=1e-6)


def test_causal():
    model, (x, _) = make(), batch()
    changed = x.clone()
    changed[:2, 4] = 17  # a real item in rows 0 and 1 (row 2 would lose a PAD, whose output is unused)
    before, after = model.hidden(x), model.hidden(changed)
    real = x[:, :4] != PAD  # outputs at PAD positions are never used
    assert torch.allclose(before[:, :4][real], after[:, :4][real], atol=1e-6)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_save_load_round_trip(tmp_path):
    model, (x, _) = make(), batch()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = make(seed=1)
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert torch.equal(other.score(x), model.score(x))


def test_bad_loss():
    with pytest.raises(ValueError, match="loss"):
        GRU4RecConfig(N_ITEMS, loss="mse")


def test_step_by_step_equals_reading_the_whole_prefix():
    torch.manual_seed(0)
    model = GRU4Rec(GRU4RecConfig(12, max_len=6, hidden=8, n_layers=2)).eval()
    items = torch.tensor([[3, 5, 1, 9], [2, 2, 7, 4]])  # (B, T)
    full, _ = model(items)  # (B, T, V)
    state = None
    for t in range(items.shape[1]):
        logits, state = model.step(items[:, t], state)
        assert torch.allclose(logits[:, 1:], full[:, t, 1:], atol=1e-5), t
    assert state.shape == (2, 2, 8) and (logits[:, 0] == float("-inf")).all()
