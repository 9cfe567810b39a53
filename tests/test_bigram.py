import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from helpers.bigram import BigramConfig, NeuralBigram
from helpers.ids import IGNORE, PAD
from helpers.split import leave_one_out
from helpers.train import TrainConfig, train


def test_shapes_and_pad_never_predicted():
    model = NeuralBigram(BigramConfig(n_items=7, hidden=4))
    logits, loss = model(torch.tensor([[PAD, 3, 4]]))
    assert logits.shape == (1, 3, 8) and loss is None
    assert torch.isinf(logits[..., PAD]).all()
    scores = model.score(torch.tensor([[1, 2], [PAD, 5]]))
    assert scores.shape == (2, 8)
    assert torch.allclose(scores[:, 1:].exp().sum(1), torch.ones(2))


def test_loss_is_cross_entropy_at_target_positions_only():
    torch.manual_seed(0)
    model = NeuralBigram(BigramConfig(n_items=5, hidden=3))
    inputs = torch.tensor([[PAD, 1, 2], [3, 4, 5]])
    labels = torch.tensor([[IGNORE, 2, 3], [4, 5, IGNORE]])
    _, loss = model(inputs, labels)
    logits = model.out(model.embed(inputs))  # by hand: the four positions with a target
    by_hand = [-F.log_softmax(logits[b, t, 1:], -1)[labels[b, t] - 1]
               for b, t in [(0, 1), (0, 2), (1, 0), (1, 1)]]
    assert math.isclose(loss.item(), torch.stack(by_hand).mean().item(), rel_tol=1e-5)


def test_learns_a_deterministic_cycle_with_the_shared_loop():
    seqs = [np.array([(u + t) % 6 + 1 for t in range(12)]) for u in range(60)]
    df = pd.DataFrame([(u, i, t) for u, s in enumerate(seqs) for t, i in enumerate(s)],
                      columns=["user_id", "item_id", "timestamp"])
    split = leave_one_out(df, n_items=6)
    model = NeuralBigram(BigramConfig(n_items=6, hidden=8))
    config = TrainConfig(epochs=15, batch_size=128, lr=0.1, max_len=1, patience=100, eval_every=15)
    train(model, split, config, progress=False)
    predicted = model.score(torch.tensor([[h[-1]] for h in split.test.histories])).argmax(1)
    assert torch.equal(predicted, torch.as_tensor(split.test.targets))
