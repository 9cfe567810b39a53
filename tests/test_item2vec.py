"""item2vec: pairs by hand, the negative-sampling loss by hand, neighbours, scoring, the loop."""

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from helpers.ids import IGNORE, PAD
from helpers.item2vec import (Item2Vec, Item2VecConfig, SkipGramBatches, item_counts, skipgram_batches,
                              skipgram_pairs)
from helpers.split import leave_one_out
from helpers.train import TrainConfig, train



def test_pairs_by_hand():
    centres, contexts = skipgram_pairs([np.array([1, 2, 3]), np.array([4, 5])], window=1)
    assert sorted(zip(centres.tolist(), contexts.tolist())) == [(1, 2), (2, 1), (2, 3), (3, 2), (4, 5), (5, 4)]
    centres, contexts = skipgram_pairs([np.array([1, 2, 3]), np.array([4, 5])], window=2)
    assert (1, 3) in zip(centres.tolist(), contexts.tolist()) and len(centres) == 8
    assert (3, 4) not in zip(centres.tolist(), contexts.tolist())  # never across users


def test_batches_shape_and_cover():
    batches = SkipGramBatches([np.array([1, 2, 3, 4])], window=2, batch_size=4)
    got = list(batches.epoch(torch.Generator().manual_seed(0)))
    assert len(got) == len(batches) == 3 and got[0][0].shape == (4, 1)
    assert sum(len(x) for x, _ in got) == 10


def test_counts():
    assert item_counts([np.array([1, 2, 2]), np.array([3])], 4).tolist() == [0, 1, 2, 1, 0]


def test_loss_by_hand():
    torch.manual_seed(0)
    model = Item2Vec(Item2VecConfig(6, hidden=4, n_negatives=3), counts=torch.tensor([0, 1, 2, 3, 4, 5, 6.0]))
    torch.nn.init.normal_(model.context_emb.weight)
    x, y = torch.tensor([[1], [2], [3]]), torch.tensor([[2], [IGNORE], [4]])
    torch.manual_seed(1)
    noise = torch.tensor([0, 1, 2, 3, 4, 5, 6.0]) ** 0.75
    neg = torch.multinomial(noise / noise.sum(), 6, replacement=True).view(2, 3)
    u, v, n = model.item_emb.weight[[1, 3]], model.context_emb.weight[[2, 4]], model.context_emb.weight[neg]
    want = -(F.logsigmoid((u * v).sum(1)) + F.logsigmoid(-(n @ u[:, :, None]).squeeze(-1)).sum(1)).mean()
    torch.manual_seed(1)
    assert torch.allclose(model(x, y)[1], want)
    assert model(x)[0].shape == (3, 1, 7)
    assert model.noise[PAD] == 0


def clustered_split(n_users=200, seed=0):
    """Two disjoint catalogues: users 0..99 buy items 1..10, the others items 11..20."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        low = 1 if user < n_users // 2 else 11
        rows += [(user, int(item), t) for t, item in enumerate(rng.permutation(10)[:6] + low)]
    return leave_one_out(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), 20)


def test_trained_neighbours_and_scores_stay_in_the_cluster():
    split = clustered_split()
    torch.manual_seed(0)
    model = Item2Vec(Item2VecConfig(20, hidden=8), item_counts(split.train, 20))
    train(model, split, TrainConfig(epochs=10, batch_size=64, lr=0.05, max_len=10, patience=10),
          make_batches=skipgram_batches(window=3), progress=False)
    ids, sims = model.most_similar(3, k=5)
    assert ids.shape == sims.shape == (5,) and 3 not in ids.tolist()
    assert (ids <= 10).all() and (sims[:-1] >= sims[1:]).all()
    scores = model.score(torch.tensor([[0, 0, 12, 15], [0, 1, 2, 3]]))  # (B, V)
    assert scores.shape == (2, 21)
    assert (scores[0].topk(5).indices > 10).all() and (scores[1].topk(5).indices <= 10).all()


def test_padding_is_left_out_of_the_mean():
    model = Item2Vec(Item2VecConfig(20, hidden=8))
    torch.nn.init.normal_(model.item_emb.weight)
    assert torch.allclose(model.score(torch.tensor([[0, 0, 4, 5]])), model.score(torch.tensor([[4, 5]])))
