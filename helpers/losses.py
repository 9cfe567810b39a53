"""Training losses of next-item models: what a model imports instead of the training loop.

Every loss here scores hidden states against an output table of item vectors and never
builds more of the (N, V) logits than it has to:

* :func:`full_cross_entropy`: softmax over every item (chunked on a CPU, see
  :class:`ChunkedCrossEntropy`);
* :func:`sampled_softmax`: softmax over the target and K uniformly sampled items;
* :func:`binary_cross_entropy`: original SASRec, one sampled negative per target;
* :func:`next_item_loss`: picks one of them by name (:data:`LOSSES`) after dropping
  ``IGNORE`` labels; a new loss (gBCE, say) is one function plus one entry in ``LOSSES``.

Letters: N targets, H hidden, K negatives, V rows of the output table (PAD included).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from helpers.ids import IGNORE, PAD


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``h @ weight.T (+ bias)`` against ``y`` without (N, V) arrays.

    Same value and gradients as ``F.cross_entropy(logits, y)`` where column ``masked`` (if
    not None) of the logits is ``-inf``, computed ``chunk`` rows at a time; the gradients
    (softmax minus one-hot, times the inputs) are formed in the forward pass because the
    loss is the last node of the graph, so ``backward`` only scales them. On a CPU this is
    2-3x faster than autograd's version, which streams several fresh (N, V) arrays through
    memory. ``bias`` may be None (a tied output table) and gets no gradient then.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, y: Tensor,
                masked: int | None = PAD, chunk: int = 256) -> Tensor:
        N = len(y)
        grad_h, grad_w = torch.empty_like(h), torch.zeros_like(weight)
        grad_b = None if bias is None else torch.zeros_like(bias)
        logits = torch.empty(min(chunk, N), weight.shape[0], dtype=h.dtype, device=h.device)
        total = h.new_zeros(())
        for start in range(0, N, chunk):
            hc, yc = h[start:start + chunk], y[start:start + chunk]  # (c, H), (c,)
            rows = torch.arange(len(yc), device=h.device)
            z = logits[: len(yc)]  # (c, V)
            if bias is None:
                torch.mm(hc, weight.T, out=z)
            else:
                torch.addmm(bias, hc, weight.T, out=z)
            if masked is not None:
                z[:, masked] = float("-inf")
            z -= z.max(dim=1, keepdim=True).values  # stable: every row's largest logit is 0
            target = z[rows, yc]  # (c,)
            p = z.exp_()  # (c, V), in place; a masked column becomes 0
            norm = p.sum(dim=1)  # (c,)
            total += (norm.log() - target).sum()  # -log softmax at the targets
            p /= norm[:, None]  # softmax
            p[rows, yc] -= 1  # d loss / d logits (times N)
            grad_h[start:start + len(yc)] = p @ weight  # (c, H)
            grad_w.addmm_(p.T, hc)  # (V, H)
            if grad_b is not None:
                grad_b += p.sum(0)
        saved = (grad_h / N, grad_w / N) + (() if grad_b is None else (grad_b / N,))
        ctx.save_for_backward(*saved)
        return total / N

    @staticmethod
    def backward(ctx, grad: Tensor):
        grads = [g * grad for g in ctx.saved_tensors]
        grad_b = grads[2] if len(grads) == 3 else None
        return grads[0], grads[1], grad_b, None, None, None


def full_cross_entropy(h: Tensor, weight: Tensor, y: Tensor, bias: Tensor | None = None,
                       masked: int | None = PAD) -> Tensor:
    """Softmax cross-entropy of states ``h`` (N, H) over every row of ``weight`` (V, H).

    Column ``masked`` (PAD by default; None for none) is never a candidate. On a CPU through
    :class:`ChunkedCrossEntropy` (same numbers, less memory traffic), elsewhere
    ``F.cross_entropy`` on the (N, V) logits.
    """
    if h.device.type == "cpu":
        return ChunkedCrossEntropy.apply(h.float(), weight.float(), None if bias is None else bias.float(),
                                         y, masked)
    logits = (h @ weight.T).float() if bias is None else F.linear(h, weight, bias).float()  # (N, V)
    if masked is not None:
        logits[:, masked] = float("-inf")
    return F.cross_entropy(logits, y)


def sampled_softmax(h: Tensor, weight: Tensor, y: Tensor, n_negatives: int = 3000) -> Tensor:
    """Softmax over the target and ``n_negatives`` uniformly sampled items shared by the batch.

    A sampled item equal to a row's target is masked out for that row. Items are rows
    1..V-1 of ``weight``.
    """
    n_items = weight.shape[0] - 1
    pos = (h * weight[y]).sum(-1).float()  # (N,)
    neg_ids = torch.randint(1, n_items + 1, (n_negatives,), device=y.device)  # (K,)
    neg = (h @ weight[neg_ids].T).float()  # (N, K)
    neg = neg.masked_fill(neg_ids[None, :] == y[:, None], float("-inf"))
    logits = torch.cat([pos[:, None], neg], dim=1)  # (N, 1 + K); the target is column 0
    return F.cross_entropy(logits, torch.zeros_like(y))


def binary_cross_entropy(h: Tensor, weight: Tensor, y: Tensor, n_negatives: int = 1) -> Tensor:
    """Original SASRec: the target against one uniformly sampled negative, as two logistic losses.

    ``n_negatives`` is accepted for a uniform signature; one negative per target is drawn.
    """
    n_items = weight.shape[0] - 1
    pos = (h * weight[y]).sum(-1).float()  # (N,)
    neg_ids = torch.randint(1, n_items + 1, y.shape, device=y.device)  # (N,)
    neg = (h * weight[neg_ids]).sum(-1).float()  # (N,)
    return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
            + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))


def _full(h: Tensor, weight: Tensor, y: Tensor, n_negatives: int) -> Tensor:
    return full_cross_entropy(h, weight, y)


# name -> loss(h (N, H), items (V, H), y (N,), n_negatives) -> scalar
LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor, int], Tensor]] = {
    "ce": _full,
    "sampled": sampled_softmax,
    "bce": binary_cross_entropy,
}


def check_loss(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is in :data:`LOSSES` (for model configs)."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {name!r}")


def next_item_loss(hidden: Tensor, labels: Tensor, items: Tensor, loss: str = "ce",
                   n_negatives: int = 3000) -> Tensor:
    """Mean loss of predicting ``labels`` (B, T) from ``hidden`` (B, T, H).

    ``items`` (V, H) is the output table, row ``PAD`` included. Positions whose label is
    ``IGNORE`` are dropped *before* the output product, so training never builds the
    (B, T, V) logits. ``loss`` names an entry of :data:`LOSSES`: ``"ce"`` full softmax
    (PAD column masked), ``"sampled"`` softmax over ``n_negatives`` shared negatives,
    ``"bce"`` one negative per target.
    """
    check_loss(loss)
    keep = labels != IGNORE
    return LOSSES[loss](hidden[keep], items, labels[keep], n_negatives)  # (N, H), (N,)
