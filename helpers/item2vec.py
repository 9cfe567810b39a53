"""item2vec: skip-gram with negative sampling over item sequences (Barkan and Koenigstein, 2016).

The simplest learned item embedding: items that appear near each other in users'
sequences get similar vectors. Trained by the course's one loop
(``train(model, split, config, make_batches=skipgram_batches(window))``): each batch is a
set of (centre item, context item) pairs, in the loop's ``(input_ids, labels)`` shape.

Letters: B batch (pairs), T time, H hidden, K negatives, V = n_items + 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.ids import IGNORE, PAD
from helpers.metrics import item_popularity
from helpers.sequences import item_pairs
from helpers.profile import Profile


def skipgram_pairs(sequences: Sequence[np.ndarray], window: int) -> tuple[Tensor, Tensor]:
    """All (centre, context) pairs at distance 1..window inside a sequence, both directions.

    Returns two (P,) LongTensors. Built with one shift per distance, no loop over users.
    """
    centres, contexts = [], []
    for d in range(1, window + 1):
        a, b = item_pairs(sequences, d)
        centres += [a, b]
        contexts += [b, a]
    return torch.from_numpy(np.concatenate(centres)), torch.from_numpy(np.concatenate(contexts))


class SkipGramBatches:
    """Shuffled skip-gram pairs as ``(input_ids (B, 1), labels (B, 1))``."""

    def __init__(self, sequences: Sequence[np.ndarray], window: int, batch_size: int):
        self.centres, self.contexts = skipgram_pairs(sequences, window)  # (P,) each
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.centres) / self.batch_size)

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(self.centres), generator=generator)
        for rows in order.split(self.batch_size):
            yield self.centres[rows, None], self.contexts[rows, None]


def skipgram_batches(window: int = 5) -> Callable:
    """A ``make_batches`` for :func:`helpers.train.train`: pairs within ``window`` positions."""
    return lambda sequences, config: SkipGramBatches(sequences, window, config.batch_size)


def item_counts(sequences: Sequence[np.ndarray], n_items: int) -> Tensor:
    """(V,) how often each item occurs in ``sequences`` (PAD's count is 0), as a float tensor:
    :func:`helpers.metrics.item_popularity`, the noise distribution's input."""
    return torch.from_numpy(item_popularity(sequences, n_items)).float()


@dataclass
class Item2VecConfig:
    n_items: int  # catalogue size: items are 1..n_items, 0 is PAD
    hidden: int = 64  # H: embedding width
    n_negatives: int = 5  # K: noise items per (centre, context) pair
    power: float = 0.75  # noise distribution: count ** power (word2vec's choice)
    max_len: int = 50  # history items averaged by `score`

    @classmethod
    def from_profile(cls, n_items: int, profile: Profile, **overrides) -> Item2VecConfig:
        """The profile's hidden and max_len, then ``overrides``."""
        return cls(**{"n_items": n_items, "hidden": profile.hidden, "max_len": profile.max_len, **overrides})


class Item2Vec(nn.Module):
    """Two tables: ``item_emb`` (an item as centre) and ``context_emb`` (as context)."""

    def __init__(self, config: Item2VecConfig, counts: Tensor | None = None):
        super().__init__()
        self.config = config
        V = config.n_items + 1
        self.item_emb = nn.Embedding(V, config.hidden, padding_idx=PAD)
        self.context_emb = nn.Embedding(V, config.hidden, padding_idx=PAD)
        nn.init.uniform_(self.item_emb.weight, -0.5 / config.hidden, 0.5 / config.hidden)
        nn.init.zeros_(self.context_emb.weight)  # word2vec's initialisation
        with torch.no_grad():
            self.item_emb.weight[PAD] = 0
        noise = torch.ones(V) if counts is None else counts.float() ** config.power
        noise[PAD] = 0
        self.register_buffer("noise", noise / noise.sum())  # (V,)

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Each item in ``input_ids`` (B, T) predicts its context item in ``labels`` (B, T).

        Without labels: ``(logits (B, T, V), None)``, scores of every item as context.
        With labels: ``(None, loss)``, the negative-sampling loss
        ``-log s(u.v) - sum_k log s(-u.n_k)`` averaged over pairs with a label.
        """
        u = self.item_emb(input_ids)  # (B, T, H)
        if labels is None:
            return u @ self.context_emb.weight.T, None
        keep = (labels != IGNORE) & (input_ids != PAD)
        u, y = u[keep], labels[keep]  # (N, H), (N,)
        neg = torch.multinomial(self.noise, len(y) * self.config.n_negatives, replacement=True)
        neg = self.context_emb(neg.view(len(y), -1))  # (N, K, H)
        pos_logit = (u * self.context_emb(y)).sum(-1)  # (N,)
        neg_logit = (neg @ u[:, :, None]).squeeze(-1)  # (N, K)
        loss = F.logsigmoid(pos_logit) + F.logsigmoid(-neg_logit).sum(-1)
        return None, -loss.mean()

    def user_vector(self, input_ids: Tensor) -> Tensor:
        """(B, T) histories -> (B, H): the mean embedding of the non-PAD items."""
        input_ids = input_ids[:, -self.max_len:]
        real = (input_ids != PAD).float()[..., None]  # (B, T, 1)
        return (self.item_emb(input_ids) * real).sum(1) / real.sum(1).clamp(min=1)

    @torch.no_grad()
    def score(self, input_ids: Tensor) -> Tensor:
        """(B, T) histories -> (B, V): the mean history embedding dotted with every item's
        *context* embedding, i.e. how strongly skip-gram expects each item next to them
        (it ranks better than the item-item dot product: benchmarks/README.md)."""
        scores = self.user_vector(input_ids) @ self.context_emb.weight.T
        scores[:, PAD] = float("-inf")  # context vectors are ~0 at PAD, which would outrank real items
        return scores

    @torch.no_grad()
    def most_similar(self, item: int, k: int = 10) -> tuple[Tensor, Tensor]:
        """The ``k`` items closest to ``item`` by cosine similarity: (ids (k,), similarities (k,))."""
        emb = F.normalize(self.item_emb.weight[1:], dim=1)  # (n_items, H), PAD row dropped
        sims = emb @ emb[item - 1]  # (n_items,)
        sims[item - 1] = float("-inf")
        top = sims.topk(min(k, len(sims) - 1))
        return top.indices + 1, top.values
