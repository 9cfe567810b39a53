"""Small data and scorers that several test modules share (imported as ``from toys import ...``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from helpers.ids import PAD


def successor_df(n_users: int = 60, n_items: int = 20, length: int = 8, seed: int = 0) -> pd.DataFrame:
    """Users walk through items in order (i -> i + 1, wrapping), from random starts."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    items = (starts[:, None] + np.arange(length)[None, :]) % n_items + 1
    return pd.DataFrame({"user_id": np.repeat(np.arange(n_users), length), "item_id": items.ravel(),
                         "timestamp": np.tile(np.arange(length), n_users)})


def text_vectors(n_items: int = 20, dim: int = 12, seed: int = 0) -> torch.Tensor:
    """(V, D) unit vectors, row PAD zero: stand-ins for encoded item texts."""
    vectors = F.normalize(torch.randn(n_items + 1, dim, generator=torch.Generator().manual_seed(seed)), dim=1)
    vectors[PAD] = 0
    return vectors


class FixedScores:
    """Scores a fixed (N, V) matrix, one row per user in evaluation order."""

    def __init__(self, scores: torch.Tensor, max_len: int = 4):
        self.scores, self.max_len, self.next_row = scores, max_len, 0

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.scores[self.next_row:self.next_row + len(input_ids)]
        self.next_row += len(input_ids)
        return out
