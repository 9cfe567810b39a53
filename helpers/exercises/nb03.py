"""Checks of notebook 03 (embeddings and encoders): a causal mask, one GRU step, one attention head.

References: ``torch.tril`` as SASRec's ``attention_mask`` builds it, ``nn.GRUCell`` and
``F.scaled_dot_product_attention``. Known mistakes are recomputed to name them in the hint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from helpers.exercises import Failed, attempt, exercise, expect


@exercise("03.causal_mask", "a causal mask: True where position i may attend to j")
def _causal_mask(fn):
    for T in (1, 4, 6):
        case = f"T={T}"
        got = attempt(fn, T, case=case)
        if not isinstance(got, torch.Tensor) or got.dtype != torch.bool:
            raise Failed(f"for {case}: expected a torch.bool tensor, got {getattr(got, 'dtype', type(got).__name__)}. "
                         "Hint: build it with dtype=torch.bool (True = may attend)")
        ones = torch.ones(T, T, dtype=torch.bool)
        expect(got, ones.tril(), case=case,
               hint="row i (the query) may read keys j <= i: True on and below the diagonal",
               mistakes=[(ones.triu(), "your mask is transposed: rows are queries, columns keys, so query i reads j <= i"),
                         (ones.tril(-1), "a position may also read itself: keep the diagonal"),
                         (~ones.tril(), "True means 'may attend' here (as in F.scaled_dot_product_attention), not 'blocked'")])


def _gru_parts(x, h, cell):
    gi = x @ cell.weight_ih.T + cell.bias_ih  # (B, 3H): r, z, n
    gh = h @ cell.weight_hh.T + cell.bias_hh  # (B, 3H)
    r = torch.sigmoid(gi[:, :cell.hidden_size] + gh[:, :cell.hidden_size])
    z = torch.sigmoid(gi[:, cell.hidden_size:2 * cell.hidden_size] + gh[:, cell.hidden_size:2 * cell.hidden_size])
    W_hn, b_hn = cell.weight_hh[2 * cell.hidden_size:], cell.bias_hh[2 * cell.hidden_size:]
    return gi[:, 2 * cell.hidden_size:], W_hn, b_hn, r, z


@exercise("03.gru_step", "one GRU step with nn.GRUCell's weights")
def _gru_step(fn):
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 4)
    g = torch.Generator().manual_seed(1)
    cases = [("x (2, 3) random, h = zeros (2, 4)", torch.randn(2, 3, generator=g), torch.zeros(2, 4)),
             ("x (2, 3) and h (2, 4) random", torch.randn(2, 3, generator=g), torch.randn(2, 4, generator=g)),
             ("x (5, 3) and h (5, 4) random", 3 * torch.randn(5, 3, generator=g), torch.randn(5, 4, generator=g))]
    for case, x, h in cases:
        got = attempt(fn, x.clone(), h.clone(), cell, case=case)
        with torch.no_grad():
            want = cell(x, h)
            gin, W_hn, b_hn, r, z = _gru_parts(x, h, cell)
            n = torch.tanh(gin + r * (h @ W_hn.T + b_hn))
            n_before = torch.tanh(gin + (r * h) @ W_hn.T + b_hn)
            mistakes = [(z * n + (1 - z) * h, "z keeps the OLD state in PyTorch: h' = (1 - z) * n + z * h"),
                        ((1 - z) * n_before + z * h, "nn.GRUCell applies r after the matrix product: "
                                                     "n = tanh(W_in x + b_in + r * (W_hn h + b_hn))")]
        expect(got, want, case=case, atol=1e-5, mistakes=mistakes,
               hint="the gate rows of weight_ih and weight_hh come in the order r, z, n; "
                    "h' = (1 - z) * n + z * h")


@exercise("03.attention_head", "one causal self-attention head")
def _attention_head(fn):
    g = torch.Generator().manual_seed(3)
    H, d = 8, 4
    wq, wk, wv = (torch.randn(H, d, generator=g) for _ in range(3))
    for case, x in (("x (1, 1, 8): a single position", torch.randn(1, 1, H, generator=g)),
                    ("x (2, 5, 8) random", torch.randn(2, 5, H, generator=g)),
                    ("x (1, 4, 8) with large values", 4 * torch.randn(1, 4, H, generator=g))):
        got = attempt(fn, x.clone(), wq, wk, wv, case=case)
        q, k, v = x @ wq, x @ wk, x @ wv  # (B, T, d)
        scores = q @ k.transpose(1, 2) / math.sqrt(d)  # (B, T, T)
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
        mistakes = [
            ((q @ k.transpose(1, 2)).masked_fill(~causal, -torch.inf).softmax(-1) @ v,
             "scale the scores by 1 / sqrt(d), d = the head's width"),
            (scores.softmax(-1) @ v, "position t may read positions <= t only: mask the future with -inf before the softmax"),
            (scores.masked_fill(~causal.T, -torch.inf).softmax(-1) @ v, "the mask is transposed: query t reads keys <= t"),
            (scores.masked_fill(~causal, -torch.inf).softmax(-2).nan_to_num() @ v,
             "the softmax runs over the keys (the last dim): each query's weights sum to 1"),
        ]
        expect(got, F.scaled_dot_product_attention(q, k, v, is_causal=True), case=case, atol=1e-4, mistakes=mistakes,
               hint="output = softmax(q k^T / sqrt(d), future masked) v with q = x wq, k = x wk, v = x wv")
