"""Attributions on a synthetic model whose answer is known, and the deletion test."""

import numpy as np
import pytest
import torch
from torch import nn

from helpers import explain
from helpers.sasrec import SASRec, SASRecConfig

N_ITEMS, DRIVER, TARGET = 9, 3, 7  # item 3 in the history makes item 7 score high


class BagOfItems(nn.Module):
    """score(j) = 5 * [j == TARGET] * (times DRIVER occurs in the window): the answer is known."""

    max_len = 6

    def __init__(self):
        super().__init__()
        self.item_emb = nn.Embedding(N_ITEMS + 1, N_ITEMS + 1)
        with torch.no_grad():
            self.item_emb.weight.copy_(torch.eye(N_ITEMS + 1))  # one-hot item vectors
        self.out = torch.zeros(N_ITEMS + 1, N_ITEMS + 1)
        self.out[TARGET, DRIVER] = 5.0

    def hidden(self, input_ids):
        return self.item_emb(input_ids).cumsum(1)  # (B, T, H): counts of each item so far

    def logits(self, h):
        return h @ self.out.T  # (..., V)

    def score(self, input_ids):
        return self.logits(self.hidden(input_ids)[:, -1])


HISTORY = np.array([1, 2, DRIVER, 4, 5])


@pytest.mark.parametrize("method", ["occlusion", "gradient"])
def test_attribution_finds_the_item_that_drives_the_score(method):
    attribution = explain.attribute(BagOfItems(), HISTORY, torch.tensor([TARGET, 8]), method)
    assert attribution.shape == (2, len(HISTORY))
    assert int(attribution[0].argmax()) == 2  # the position of DRIVER
    assert attribution[0, 2] > 0 and torch.allclose(attribution[0, [0, 1, 3, 4]], torch.zeros(4), atol=1e-6)
    assert attribution[1, 2] < 0  # item 8 loses probability mass to item 7 when item 3 is present


def test_occlusion_by_hand():
    model = BagOfItems()

    def logp(window):  # log P(TARGET) over items 1..N_ITEMS
        return torch.log_softmax(model.score(torch.tensor([window]))[0, 1:], 0)[TARGET - 1]

    expected = logp([0, 1, 2, DRIVER, 4, 5]) - logp([0, 0, 1, 2, 4, 5])
    assert torch.isclose(explain.occlusion(model, HISTORY, torch.tensor([TARGET]))[0, 2], expected)


def test_deletion_test_deletes_the_driver():
    histories = [HISTORY, np.array([DRIVER, 6, 2]), np.array([8, 2, 1, DRIVER])]
    table = explain.deletion_test(BagOfItems(), histories, methods=["occlusion", "gradient"], n_remove=1)
    assert set(table["method"]) == {"occlusion", "gradient", "random"}
    faithful = table[table["method"] != "random"]
    assert (faithful["logp_drop"] > 1).all()  # removing item 3 removes the reason for item 7
    summary = explain.faithfulness(table, k=1)
    assert summary.loc["occlusion", "share out of top 1"] == 1.0


def test_attention_rows_are_weights_over_the_window():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(N_ITEMS, max_len=4, hidden=8, n_layers=2, n_heads=2)).eval()
    history = np.array([5, 1, 2, 3, 4, 6])  # longer than the window: the last 4 are read
    for method in explain.METHODS:
        a = explain.attribute(model, history, torch.tensor([7, 8, 9]), method)
        assert a.shape == (3, 4) and torch.isfinite(a).all()
    att = explain.attribute(model, history, torch.tensor([7]), "attention")
    assert torch.isclose(att.sum(), torch.tensor(1.0)) and (att >= 0).all()


def test_unknown_method_and_empty_history():
    with pytest.raises(ValueError, match="method"):
        explain.attribute(BagOfItems(), HISTORY, torch.tensor([1]), "shap")
    assert explain.attribute(BagOfItems(), np.array([], dtype=np.int64), torch.tensor([1, 2])).shape == (2, 0)
