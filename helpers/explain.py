"""Which history items drove a recommendation, and how faithful each answer is.

Three attribution methods, each giving one number per (recommended item, history item):

* ``"occlusion"``: drop history item t, re-score, and measure how much the recommended
  item's log-probability falls. It asks the model directly; it costs one forward pass per
  history item (batched). Works for any scorer (``max_len`` + ``score``).
* ``"gradient"``: gradient x input on the item embeddings of the history,
  ``sum_h e_t,h * d log p(item) / d e_t,h``: one forward and one backward pass, a
  first-order guess of occlusion. Needs ``item_emb``, ``hidden`` and ``logits`` (SASRec,
  GRU4Rec).
* ``"attention"``: the last layer's attention weights of the last position (mean over
  heads); the same for every recommended item. SASRec only. Notebook 03 warns that
  attention describes the model's reading, not why it chose: :func:`deletion_test` measures it.

Faithfulness (:func:`deletion_test`): remove the ``n_remove`` history items a method ranks
highest for the user's top recommendation, re-score, and see how far that item falls; a
faithful method makes it fall further than removing the same number of random items.

Letters: T window (``max_len``), T' items in the window (<= T), K recommended items, V items + PAD.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from helpers.ids import PAD
from helpers.sequences import pad_left

METHODS = ("occlusion", "gradient", "attention")


def _log_probs(scores: Tensor) -> Tensor:
    """(B, V) scores -> log-softmax over items 1..V-1 (PAD never counts)."""
    scores = scores.float().clone()
    scores[:, PAD] = float("-inf")
    return scores.log_softmax(dim=1)


def occlusion(model, history: np.ndarray, targets: Tensor) -> Tensor:
    """(K, T') fall in log P(target) when each history item is left out (positive = it helped).

    ``history``: course IDs, oldest first (its last ``max_len`` are read); ``targets`` (K,).
    """
    window = np.asarray(history, dtype=np.int64)[-model.max_len:]
    variants = [window] + [np.delete(window, t) for t in range(len(window))]  # T' + 1 histories
    with torch.inference_mode():
        logp = _log_probs(model.score(pad_left(variants, model.max_len)))  # (T' + 1, V)
    picked = logp[:, torch.as_tensor(targets)]  # (T' + 1, K)
    return (picked[0:1] - picked[1:]).T  # (K, T')


def gradient_x_input(model, history: np.ndarray, targets: Tensor) -> Tensor:
    """(K, T') gradient x input of log P(target) on each history item's embedding.

    Thread-safe: the hook that captures the embeddings is registered on the shared model,
    so it fires for every thread's forward pass; it acts only in the thread that registered
    it (a service scores many requests at once in worker threads). A model in training
    mode is switched to eval for the call, which is not thread-safe; a served model is in
    eval mode already (``recommender.bake``).
    """
    window = np.asarray(history, dtype=np.int64)[-model.max_len:]
    targets = torch.as_tensor(targets)
    inputs = pad_left([window] * len(targets), model.max_len)  # (K, T): one copy per target
    owner, captured = threading.get_ident(), []

    def capture(module, args, out: Tensor) -> Tensor | None:
        if threading.get_ident() != owner or captured:
            return None  # another thread's forward pass, or not the first call: leave it alone
        captured.append(out.detach().requires_grad_())  # a leaf even when the table is frozen
        return captured[-1]

    hook = model.item_emb.register_forward_hook(capture)
    training = model.training
    if training:
        model.eval()
    try:
        with torch.enable_grad():
            h = model.hidden(inputs)[:, -1]  # (K, H)
            embedded = captured[0]  # (K, T, H), the history's item vectors
            logp = _log_probs(model.logits(h))  # (K, V)
            objective = logp[torch.arange(len(targets)), targets].sum()  # rows are independent
            (grad,) = torch.autograd.grad(objective, embedded)
    finally:
        hook.remove()
        if training:
            model.train()
    return (grad * embedded).sum(-1).detach()[:, model.max_len - len(window):]  # (K, T')


def attention(model, history: np.ndarray, targets: Tensor) -> Tensor:
    """(K, T') the last layer's attention from the last position, mean over heads (same row for every K)."""
    window = np.asarray(history, dtype=np.int64)[-model.max_len:]
    maps = model.attention_maps(pad_left([window], len(window)))  # (1, L, nh, T', T')
    row = maps[0, -1].mean(0)[-1]  # (T',)
    return row.expand(len(torch.as_tensor(targets)), -1).clone()


def attribute(model, history: np.ndarray, targets: Tensor, method: str = "occlusion") -> Tensor:
    """(K, T') attribution of each of the last T' = min(len(history), max_len) items by ``method``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if len(history) == 0:
        return torch.zeros(len(torch.as_tensor(targets)), 0)
    return {"occlusion": occlusion, "gradient": gradient_x_input, "attention": attention}[method](
        model, history, torch.as_tensor(targets))


def _rank(scores: Tensor, item: int, seen: np.ndarray) -> int:
    """1-based rank of ``item`` among items 1..V-1 not in ``seen`` (ties count half)."""
    scores = scores.float().clone()
    scores[PAD] = float("-inf")
    scores[torch.as_tensor(seen)] = float("-inf")
    value = scores[item]
    return int((scores > value).sum()) + 1 + int((scores == value).sum() - 1) // 2


def deletion_test(model, histories: Sequence[np.ndarray], methods: Sequence[str] = METHODS,
                  n_remove: int = 2, seed: int = 0) -> pd.DataFrame:
    """One row per (user, method): the rank of the user's top recommendation after deleting
    the ``n_remove`` history items the method attributes most to it.

    A ``"random"`` row per user deletes ``n_remove`` random items instead (the baseline).
    Users with fewer than ``n_remove + 1`` items in the window are skipped. Columns:
    ``user`` (position in ``histories``), ``method``, ``rank_after`` (1 = still first; seen
    items excluded), ``logp_drop`` (fall in the item's log-probability).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for user, history in enumerate(histories):
        history = np.asarray(history, dtype=np.int64)
        window = history[-model.max_len:]
        if len(window) <= n_remove:
            continue
        with torch.inference_mode():
            base = model.score(pad_left([window], model.max_len))[0]  # (V,)
        masked = base.float().clone()
        masked[PAD] = float("-inf")
        masked[torch.as_tensor(history)] = float("-inf")
        top = int(masked.argmax())
        removals = {"random": rng.choice(len(window), n_remove, replace=False)}
        for method in methods:
            scores = attribute(model, window, torch.tensor([top]), method)[0]  # (T',)
            removals[method] = scores.argsort(descending=True)[:n_remove].numpy()
        names = list(removals)
        variants = [np.delete(window, removals[m]) for m in names]
        with torch.inference_mode():
            after = model.score(pad_left(variants, model.max_len))  # (M, V)
        drop = (_log_probs(base[None])[0, top] - _log_probs(after)[:, top]).tolist()
        for name, scores, d in zip(names, after, drop):
            rows.append({"user": user, "method": name, "rank_after": _rank(scores, top, history),
                         "logp_drop": d})
    return pd.DataFrame(rows)


def faithfulness(table: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Per method: users, median rank after deletion, share that left the top ``k``, mean log-prob drop."""
    grouped = table.groupby("method", sort=False)
    return pd.DataFrame({
        "users": grouped.size(),
        "median rank after": grouped["rank_after"].median(),
        f"share out of top {k}": grouped["rank_after"].apply(lambda r: float((r > k).mean())),
        "mean log-prob drop": grouped["logp_drop"].mean(),
    })
