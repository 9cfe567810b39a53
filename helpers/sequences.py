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


def item_pairs(sequences: Sequence[np.ndarray], gap: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``(s[t], s[t + gap])`` pairs inside each sequence, as two aligned (P,) id arrays.

    One shift of the concatenated sequences, no loop over users; a pair never spans two.

    >>> [a.tolist() for a in item_pairs([np.array([1, 2, 3]), np.array([4, 5])], 1)]
    [[1, 2, 4], [2, 3, 5]]
    """
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences] + [np.zeros(0, np.int64)])
    owner = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    same = owner[:-gap] == owner[gap:]  # both ends in one sequence
    return flat[:-gap][same], flat[gap:][same]
