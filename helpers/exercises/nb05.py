"""Checks of notebook 05 (a pretrained BERT): mean pooling with an attention mask, a LoRA update
of one linear layer, the nearest items by cosine similarity.

References: the masked mean that ``helpers.text`` pools with, ``W x + b + (alpha / r) B A x``
as LoRA (and ``peft``) define it, and a cosine ranking on normalised rows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from helpers.exercises import attempt, exercise, expect


@exercise("05.mean_pool", "mean pooling of token vectors under an attention mask")
def _mean_pool(fn):
    g = torch.Generator().manual_seed(0)
    cases = [("hidden (1, 3, 2), attention_mask [[1, 1, 1]]", torch.randn(1, 3, 2, generator=g), torch.tensor([[1, 1, 1]])),
             ("hidden (2, 4, 3), attention_mask [[1, 1, 0, 0], [1, 1, 1, 1]]", torch.randn(2, 4, 3, generator=g),
              torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))]
    for case, hidden, mask in cases:
        got = attempt(fn, hidden.clone(), mask.clone(), case=case)
        m = mask[..., None].float()  # (B, T, 1)
        expect(got, (hidden * m).sum(1) / m.sum(1), case=case, atol=1e-5,
               hint="average each row's vectors over its REAL tokens: sum(hidden * mask) / sum(mask), per row",
               mistakes=[(hidden.mean(1), "padding tokens (mask 0) must not enter the mean"),
                         ((hidden * m).sum(1) / hidden.shape[1], "divide by the number of real tokens of each row, not by T"),
                         ((hidden * m).sum(1), "a mean, not a sum: divide by the number of real tokens")])


@exercise("05.lora", "a linear layer with a LoRA update")
def _lora(fn):
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(2, 6, generator=g), torch.randn(4, 2, generator=g)  # r = 2
    cases = [("x (3, 6), A (2, 6), B (4, 2) random, alpha=2", torch.randn(3, 6, generator=g), 2.0),
             ("x (1, 6), the same A and B, alpha=8", torch.randn(1, 6, generator=g), 8.0)]
    for case, x, alpha in cases:
        got = attempt(fn, x.clone(), layer, A.clone(), B.clone(), alpha, case=case)
        with torch.no_grad():
            base, update = layer(x), x @ A.T @ B.T  # (N, 4) both
            r = A.shape[0]
            expect(got, base + alpha / r * update, case=case, atol=1e-4,
                   hint="y = layer(x) + (alpha / r) * x A^T B^T, with r = A.shape[0] (the rank)",
                   mistakes=[(base + update, "scale the update by alpha / r"),
                             (base + r / alpha * update, "the scale is alpha / r, not r / alpha"),
                             (alpha / r * update, "LoRA ADDS its update to the frozen layer's output")])


@exercise("05.most_similar", "the k items most similar to one item, by cosine")
def _most_similar(fn):
    table = np.array([[0, 0], [1, 0], [10, 1], [0.9, 1.1], [-1, 0], [3, 3]])  # row 0 = PAD
    for item, k in ((1, 2), (3, 3), (5, 1)):  # item 5: the long row 2 has the larger dot product, row 3 the larger cosine
        case = f"table rows {table.tolist()} (row 0 = PAD), item {item}, k={k}"
        got = attempt(fn, item, table.copy(), k, case=case)
        unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
        cos = unit @ unit[item]
        cos[[0, item]] = -np.inf
        dot = table @ table[item]
        dot[[0, item]] = -np.inf
        with_self = unit @ unit[item]
        with_self[0] = -np.inf
        expect(np.asarray(got, dtype=np.int64) if isinstance(got, (list, tuple, np.ndarray, torch.Tensor)) else got,
               np.argsort(-cos, kind="stable")[:k], case=case,
               hint="cosine = dot product of the L2-normalised rows; leave out PAD (row 0) and the item itself; best first",
               mistakes=[(np.argsort(-dot, kind="stable")[:k], "normalise the rows first: a plain dot product favours long vectors"),
                         (np.argsort(-with_self, kind="stable")[:k], "leave the item itself out: it is always its own nearest")])
