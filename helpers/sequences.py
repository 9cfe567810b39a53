"""Turning variable-length histories into fixed-width model inputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from helpers.ids import PAD


def pad_left(histories: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """Keep the last ``max_len`` items of each history and left-pad with ``PAD``.

    Returns a ``(B, T)`` LongTensor with ``T = max_len``; column ``T - 1`` always
    holds the most recent item, so causal models read the prediction from it.

    >>> pad_left([np.array([3, 4, 5]), np.array([7])], 2).tolist()
    [[4, 5], [0, 7]]
    """
    out = np.full((len(histories), max_len), PAD, dtype=np.int64)
    for row, h in enumerate(histories):
        tail = np.asarray(h[-max_len:] if max_len else h[:0], dtype=np.int64)
        if len(tail):
            out[row, max_len - len(tail):] = tail
    return torch.from_numpy(out)
