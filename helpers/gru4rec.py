"""GRU4Rec: a recurrent encoder over item ids (Hidasi et al., 2016), with the SASRec head.

``embedding -> GRU -> linear -> tied output``. Same signature and losses as SASRec.

Letters: B batch, T time, H hidden, V = n_items + 1. Inputs are left-padded with ``PAD``.
A GRU would read the leading PADs and drift away from its zero start state, so each row is
rotated to right padding before the GRU (real items first, the state starts at zero on the
first real item) and rotated back after it: outputs do not depend on the amount of padding.

Item embeddings are scaled by sqrt(H) on the way in (as SASRec's): with the tied output table
initialised small, unscaled inputs barely move the GRU. A GRU also wants a larger step than a
Transformer: ``LR`` (5e-3) is the rate to train it with (the sweep that chose it:
benchmarks/README.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from helpers.ids import PAD
from helpers.losses import check_loss, next_item_loss
from helpers.profile import Profile

LR = 5e-3  # AdamW learning rate GRU4Rec trains well with (SASRec's 1e-3 is too slow for it)


def rotate(x: Tensor, shift: Tensor) -> Tensor:
    """Roll each row of ``x`` (B, T, ...) left by ``shift`` (B,) places, cyclically."""
    B, T = x.shape[:2]
    idx = (torch.arange(T, device=x.device)[None, :] + shift[:, None]) % T  # (B, T)
    idx = idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


@dataclass
class GRU4RecConfig:
    n_items: int  # catalogue size: items are 1..n_items, 0 is PAD
    max_len: int = 50  # longest history the model reads
    hidden: int = 64  # H: item embedding and GRU width
    n_layers: int = 1  # stacked GRU layers
    dropout: float = 0.2  # on embeddings and on GRU outputs
    loss: str = "ce"  # "ce" full softmax, "sampled" softmax, or "bce" (one negative)
    n_negatives: int = 3000  # shared negatives per batch for loss="sampled"

    def __post_init__(self):
        check_loss(self.loss)

    @classmethod
    def from_profile(cls, n_items: int, profile: Profile, **overrides) -> GRU4RecConfig:
        """The profile's max_len, hidden and dropout (one GRU layer), then ``overrides``."""
        return cls(**{"n_items": n_items, "max_len": profile.max_len, "hidden": profile.hidden,
                      "dropout": profile.dropout, **overrides})


class GRU4Rec(nn.Module):
    """A GRU over item embeddings; item embeddings tied between input and output."""

    def __init__(self, config: GRU4RecConfig):
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=PAD)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.zeros_(self.item_emb.weight[PAD])
        self.drop = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.hidden, config.hidden, config.n_layers, batch_first=True,
                          dropout=config.dropout if config.n_layers > 1 else 0.0)
        self.proj = nn.Linear(config.hidden, config.hidden)

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def _embed(self, item_ids: Tensor) -> Tensor:
        return self.item_emb(item_ids) * math.sqrt(self.config.hidden)

    def hidden(self, input_ids: Tensor) -> Tensor:
        """(B, T) left-padded item ids -> (B, T, H); position t has read items 0..t."""
        n_pad = (input_ids == PAD).sum(1)  # (B,) leading PADs
        x = self.drop(self._embed(rotate(input_ids, n_pad)))  # (B, T, H), right-padded
        out, _ = self.gru(x)  # (B, T, H)
        out = rotate(out, -n_pad)  # (B, T, H), left-padded again
        return self.proj(self.drop(out))

    def logits(self, h: Tensor) -> Tensor:
        """(..., H) states -> (..., V) scores against every item; the PAD column is -inf."""
        logits = h @ self.item_emb.weight.T
        logits[..., PAD] = float("-inf")
        return logits

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Without labels: ``(logits (B, T, V), None)``. With labels (B, T): ``(None, loss)``,
        computed only where ``labels != IGNORE``."""
        h = self.hidden(input_ids)
        if labels is None:
            return self.logits(h), None
        loss = next_item_loss(h, labels, self.item_emb.weight, self.config.loss, self.config.n_negatives)
        return None, loss

    @torch.no_grad()
    def step(self, item_ids: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Read one more item per row: ``item_ids`` (B,) after the items summarised by ``state``
        (n_layers, B, H; ``None`` before the first item) -> ``(logits (B, V), new state)``.

        The same numbers as the last column of ``forward`` over the whole prefix (in eval
        mode), at the cost of one GRU step: what sampling a sequence item by item needs.
        """
        out, state = self.gru(self.drop(self._embed(item_ids))[:, None], state)  # (B, 1, H)
        return self.logits(self.proj(self.drop(out[:, 0]))), state

    @torch.no_grad()
    def score(self, input_ids: Tensor) -> Tensor:
        """(B, T) left-padded histories -> (B, V) next-item scores, from the last column."""
        return self.logits(self.hidden(input_ids[:, -self.max_len:])[:, -1]).float()
