"""Training batches: next-item windows and the length bucketing every batch builder shares.

A batch builder has ``len()`` and ``epoch(generator)``, which yields ``(input_ids, labels)``
pairs of (B, T) tensors (:class:`Batches`). :class:`CausalBatches` makes next-item windows;
masked models (``helpers.bert4rec.ClozeBatches``) and skip-gram
(``helpers.item2vec.SkipGramBatches``) bring their own and share :func:`bucketed_batches`.
Models may import this module; it never imports a model or the training loop.

Letters: W windows, B batch, T time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from helpers.ids import IGNORE, PAD


class Batches(Protocol):
    """What the loop needs from a batch builder."""

    def __len__(self) -> int: ...

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]: ...


def bucketed_batches(lengths: Tensor, generator: torch.Generator, batch_size: int, bucket: int,
                     budget: float | None = None) -> list[Tensor]:
    """Row indices of one epoch's batches, in a random order.

    The rows are shuffled; with ``bucket`` they are then sorted by ``lengths`` (W,) inside
    chunks of ``bucket * batch_size`` rows, so short rows travel together and a batch can
    drop the PAD columns none of its rows uses. Batches hold ``batch_size`` rows, or, with
    ``budget``, about ``budget`` summed lengths (targets) each.
    """
    order = torch.randperm(len(lengths), generator=generator)
    if bucket:
        chunks = order.split(batch_size * bucket)
        order = torch.cat([c[lengths[c].argsort(stable=True)] for c in chunks])
    if budget is None:
        batches = order.split(batch_size)
    else:
        batch_of = (lengths[order].cumsum(0) - 1) // budget  # (W,) non-decreasing
        sizes = torch.unique_consecutive(batch_of, return_counts=True)[1]
        batches = order.split(sizes.tolist())
    return [batches[b] for b in torch.randperm(len(batches), generator=generator).tolist()]


def causal_windows(sequences: Sequence[np.ndarray], max_len: int) -> tuple[Tensor, Tensor]:
    """Next-item windows: input ``seq[:-1]``, labels ``seq[1:]``, both (W, max_len).

    A sequence of n items has n - 1 targets. They are cut *from the most recent end* into
    windows of ``max_len``, so every target appears in exactly one window; the oldest window
    of a sequence is left-padded (input ``PAD``, label ``IGNORE``). The price: the first
    positions of an older window do not see the history before that window.
    """
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    n_targets = np.maximum(lengths - 1, 0)
    n_windows = -(-n_targets // max_len)  # ceil
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences] + [np.zeros(0, np.int64)])
    seq_start = np.cumsum(lengths) - lengths
    seq_of_target = np.repeat(np.arange(len(sequences)), n_targets)
    j = np.arange(n_targets.sum()) - np.repeat(np.cumsum(n_targets) - n_targets, n_targets) + 1
    from_end = n_targets[seq_of_target] - j  # 0 for each sequence's last target
    window = np.repeat(np.cumsum(n_windows) - n_windows, n_targets) + from_end // max_len
    column = max_len - 1 - from_end % max_len
    inputs = np.full((int(n_windows.sum()), max_len), PAD, dtype=np.int64)
    labels = np.full_like(inputs, IGNORE)
    target_at = seq_start[seq_of_target] + j
    inputs[window, column] = flat[target_at - 1]
    labels[window, column] = flat[target_at]
    return torch.from_numpy(inputs), torch.from_numpy(labels)


class CausalBatches:
    """Shuffled next-item windows, each batch trimmed to its longest history.

    The windows are built once (one tensor). Every epoch draws batches with
    :func:`bucketed_batches`. Trimming PAD columns is exact, not an approximation, for
    models whose positions count from the most recent item and which mask PAD (SASRec,
    GRU4Rec here).

    Batches hold about the same number of *targets* (``batch_size`` windows of average
    length), not the same number of windows: a batch of short histories has more rows.
    Each target then weighs the same in the loss, as in unsorted batches; with a fixed
    number of rows, sorting would give a target of a short history several times the
    weight of one from a long history.
    """

    def __init__(self, sequences: Sequence[np.ndarray], max_len: int, batch_size: int,
                 bucket: int = 50):
        self.inputs, self.labels = causal_windows(sequences, max_len)  # (W, T) each
        self.lengths = (self.labels != IGNORE).sum(1)  # (W,) targets per window
        mean = float(self.lengths.float().mean()) if len(self.lengths) else 1.0  # no window: no NaN
        self.budget = batch_size * max(mean, 1.0)  # targets per batch
        self.batch_size, self.bucket = batch_size, bucket

    def __len__(self) -> int:
        return math.ceil(int(self.lengths.sum()) / self.budget)  # 0 when there is no target

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        for rows in bucketed_batches(self.lengths, generator, self.batch_size, self.bucket, self.budget):
            width = int(self.lengths[rows].max())
            yield self.inputs[rows, -width:], self.labels[rows, -width:]  # (B, width) each


def causal_batches(sequences: Sequence[np.ndarray], config) -> CausalBatches:
    """The default ``make_batches`` of the loop: next-item windows of ``config.max_len``.

    Refuses (``ValueError``) sequences with no target at all (every one shorter than 2 items).
    """
    batches = CausalBatches(sequences, config.max_len, config.batch_size)
    if len(batches) == 0:
        raise ValueError(f"nothing to train on: none of the {len(sequences)} training sequences has "
                         "2 or more items (a target needs an item before it)")
    return batches
