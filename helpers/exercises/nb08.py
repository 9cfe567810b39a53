"""Checks of notebook 08 (from notebook to service): occlusion for one history, int8 quantization
of one matrix, a top-k that never recommends what the user has seen.

References: ``explain.occlusion``'s rule (leave each item out, read the fall in log P(item)) on a
small scorer defined here, ``compress.Int8Embedding``'s per-row symmetric quantization.
"""

from __future__ import annotations

import numpy as np
import torch

from helpers.compress import Int8Embedding
from helpers.exercises import Failed, attempt, exercise, expect, require

_V, _H = 8, 3
_E = torch.randn(_V, _H, generator=torch.Generator().manual_seed(0)).numpy()  # item vectors, PAD (row 0) included


def toy_log_probs(history) -> np.ndarray:
    """(V,) log P(next item) of a tiny position-aware scorer: recent items weigh more, PAD is a real vector."""
    h = np.asarray(history, dtype=np.int64)
    weights = 0.5 ** np.arange(len(h))[::-1]  # the last item weighs 1, the one before 1/2, ...
    scores = _E @ (weights[:, None] * _E[h]).sum(0)  # (V,)
    scores[0] = -np.inf  # PAD is never predicted
    return scores - np.logaddexp.reduce(scores[1:])


@exercise("08.occlusion", "occlusion: how much each history item raises log P(item)")
def _occlusion(fn):
    for history, item in (([3, 5, 2], 4), ([1, 1, 6, 7, 2], 6), ([5], 3)):
        case = f"history {history}, item {item}, log_probs = exercises.nb08.toy_log_probs"
        got = attempt(fn, toy_log_probs, list(history), item, case=case)
        full = toy_log_probs(history)[item]
        left_out = np.array([toy_log_probs(np.delete(history, t))[item] for t in range(len(history))])
        padded = np.array([toy_log_probs(np.where(np.arange(len(history)) == t, 0, history))[item]
                           for t in range(len(history))])
        expect(got, full - left_out, case=case, atol=1e-5,
               hint="score t = log P(item | whole history) - log P(item | history without item t); one per history item",
               mistakes=[(left_out - full, "the sign: positive means the item helped, so full minus left-out"),
                         (full - padded, "leave the item OUT (np.delete), do not replace it by PAD: PAD is a "
                                         "vector of its own and keeps the positions")])


@exercise("08.quantize_int8", "symmetric per-row int8 quantization of one matrix")
def _quantize(fn):
    g = torch.Generator().manual_seed(2)
    cases = [("W (2, 3) = [[0.5, -1.0, 0.25], [2.0, 0.1, -0.3]]", torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.1, -0.3]])),
             ("W (6, 5) random, rows of very different scales", torch.randn(6, 5, generator=g) * torch.logspace(-2, 1, 6)[:, None]),
             ("W (3, 4) with a row of zeros", torch.cat([torch.zeros(1, 4), torch.randn(2, 4, generator=g)]))]
    for case, W in cases:
        got = attempt(fn, W.clone(), case=case)
        try:
            q, scale = got
        except Exception:
            raise Failed(f"for {case}: expected a pair (q, scale), got {type(got).__name__}. Hint: return (q, scale)") from None
        if not isinstance(q, torch.Tensor) or q.dtype != torch.int8:
            raise Failed(f"for {case}: q should be a torch.int8 tensor, got {getattr(q, 'dtype', type(q).__name__)}. "
                         "Hint: round, then cast with .to(torch.int8)")
        if torch.as_tensor(scale).numel() == 1:
            raise Failed(f"for {case}: got a single scale. Hint: one scale per row, not one for the whole matrix: "
                         "shape (V, 1), each max |row| / 127")
        ref = Int8Embedding(W, padding_idx=None)
        ref_scale = W.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127  # float32, as the helper computes it
        expect(torch.as_tensor(scale).float(), ref_scale, case=case + ", the scale", rtol=1e-3, atol=1e-9,
               hint="one scale per ROW, shape (V, 1): max |row| / 127 (symmetric: 0 stays 0)",
               mistakes=[(W.abs().amax() / 127 * torch.ones_like(ref_scale), "one scale per row, not one for the whole matrix"),
                         (ref_scale * 127 / 255, "symmetric int8 spans -127..127: divide by 127, not 255")])
        require(not torch.isnan(q.float()).any() and torch.isfinite(torch.as_tensor(scale).float()).all(),
                case=case, got=q, hint="a row of zeros must not divide by zero: clamp the scale to a tiny positive number")
        expect(q, ref.q, case=case + ", q", hint="q = round(W / scale) as int8",
               mistakes=[((W / ref_scale).to(torch.int8), "round to the nearest integer before the cast: .to(int8) truncates")])
        require((q.float() * torch.as_tensor(scale).float() - W).abs().max() <= ref_scale.max() / 2 + 1e-6,
                case=case, got=q, hint="dequantized q * scale should be within half a step of W")


@exercise("08.top_k", "the top k unseen items, best first")
def _top_k(fn):
    cases = [("scores [0, 0.1, 0.9, 0.3, 0.5] (column 0 = PAD), history [], k=2", np.array([0, 0.1, 0.9, 0.3, 0.5]), [], 2),
             ("scores [0, 0.1, 0.9, 0.3, 0.5], history [2], k=3", np.array([0, 0.1, 0.9, 0.3, 0.5]), [2], 3),
             ("scores [5, -1, -2, -3], history [1], k=2: PAD scores highest", np.array([5.0, -1, -2, -3]), [1], 2),
             ("scores [0, 1, 1, 1, 0.5], history [4], k=2: three items tie", np.array([0, 1, 1, 1, 0.5]), [4], 2)]
    for case, scores, history, k in cases:
        got = attempt(fn, scores.copy(), list(history), k, case=case)
        s = scores.astype(float).copy()
        s[0] = -np.inf
        s[history] = -np.inf
        want = np.argsort(-s, kind="stable")[:k]
        unmasked = np.argsort(-np.r_[-np.inf, scores[1:]], kind="stable")[:k]
        expect(np.asarray(got, dtype=np.int64) if isinstance(got, (list, tuple, np.ndarray, torch.Tensor)) else got,
               want, case=case, hint="best first; never PAD (column 0) or an item of the history; ties: the smaller id first",
               mistakes=[(unmasked, "remove the items the user has already seen (set their scores to -inf)"),
                         (np.argsort(s, kind="stable")[:k], "best FIRST: sort by descending score")])
