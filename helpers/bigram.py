"""The neural bigram model: the smallest learned softmax next-item model.

``P(x_{t+1} | x_t) = softmax(W e(x_t) + b)``: an item embedding, one linear layer to a
score for every item, a softmax. It sees only the last item, like the Markov chain, but
shares statistical strength between items through the embedding (notebook 02).

Letters: B batch, T time, H hidden, V = n_items + 1 (column PAD is never predicted).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from helpers.ids import IGNORE, PAD
from helpers.losses import full_cross_entropy
from helpers.profile import Profile


@dataclass
class BigramConfig:
    n_items: int  # items are 1..n_items, 0 is PAD
    hidden: int = 64  # H: embedding width
    dropout: float = 0.0  # on the embedding

    @classmethod
    def from_profile(cls, n_items: int, profile: Profile, **overrides) -> BigramConfig:
        """The profile's hidden and dropout, then ``overrides``."""
        return cls(**{"n_items": n_items, "hidden": profile.hidden, "dropout": profile.dropout, **overrides})


class NeuralBigram(nn.Module):
    """Item embedding -> linear -> softmax over items."""

    max_len = 1  # it reads only the most recent item

    def __init__(self, config: BigramConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=PAD)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden, config.n_items + 1)

    def logits(self, input_ids: Tensor) -> Tensor:
        """(B, T) item ids -> (B, T, V) next-item scores; the PAD column is -inf."""
        logits = self.out(self.drop(self.embed(input_ids)))  # (B, T, V)
        logits[..., PAD] = float("-inf")
        return logits

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Without labels: ``(logits (B, T, V), None)``. With labels (B, T): ``(None, loss)``,
        the mean cross-entropy over positions where ``labels != IGNORE``."""
        if labels is None:
            return self.logits(input_ids), None
        keep = labels != IGNORE
        h = self.drop(self.embed(input_ids[keep]))  # (N, H): only positions with a target
        return None, full_cross_entropy(h, self.out.weight, labels[keep], bias=self.out.bias)

    @torch.no_grad()
    def score(self, input_ids: Tensor) -> Tensor:
        """(B, T) left-padded histories -> (B, V) log-probabilities of the next item."""
        return torch.log_softmax(self.logits(input_ids[:, -1]).float(), dim=-1)
