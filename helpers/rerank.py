"""A BERT click cross-encoder, and re-ranking a base model's top-K candidates with it.

The cross-encoder reads one pair ``[CLS] history text [SEP] candidate text [SEP]`` and
outputs one click logit (a sequence classifier with C = 1, trained with binary
cross-entropy by :func:`helpers.finetune.fit`). Positives are the true next items; each
comes with ``n_negatives`` items sampled uniformly, never the positive and never an item
of the history (``click_pairs``).

``Reranker`` is a course scorer (``max_len``, ``score``): it asks a base scorer (e.g. a
trained SASRec) for its scores, takes the best K items the user has not seen, re-orders
only those K by the cross-encoder and puts them above every other item, which keep the base
model's scores. So it plugs into :func:`helpers.evaluate.evaluate` unchanged: HR@K cannot
change, only the order inside the top K.

Letters: B batch, T window, K candidates per user, V = n_items + 1, P pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from datasets import Dataset
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from helpers.textdata import clip_texts, history_text, text_dataset
from helpers.ids import PAD
from helpers.split import EvalSet


def click_pairs(examples: EvalSet, n_items: int, n_negatives: int,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows (P,), candidates (P,), labels (P,))``, P = N * (1 + n_negatives).

    For example ``n`` (``rows == n``): its target with label 1, then ``n_negatives``
    distinct items with label 0 drawn uniformly from 1..n_items, excluding the target and
    every item of the history.
    """
    rng = np.random.default_rng(seed)
    rows, candidates, labels = [], [], []
    for n, (history, target) in enumerate(zip(examples.histories, examples.targets)):
        banned = set(history.tolist()) | {int(target)}
        if n_items - len(banned) < n_negatives:
            raise ValueError(f"example {n}: fewer than {n_negatives} items left to sample")
        negatives: list[int] = []
        while len(negatives) < n_negatives:
            for item in rng.integers(1, n_items + 1, size=2 * n_negatives).tolist():
                if item not in banned and len(negatives) < n_negatives:
                    banned.add(item)
                    negatives.append(item)
        rows += [n] * (1 + n_negatives)
        candidates += [int(target), *negatives]
        labels += [1] + [0] * n_negatives
    return (np.array(rows, dtype=np.int64), np.array(candidates, dtype=np.int64),
            np.array(labels, dtype=np.int64))


def pair_dataset(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], examples: EvalSet,
                 n_items: int, n_negatives: int, *, max_items: int | None = None,
                 max_length: int = 256, seed: int = 0) -> Dataset:
    """Tokenised (history text, candidate text) -> clicked pairs from :func:`click_pairs`."""
    rows, candidates, labels = click_pairs(examples, n_items, n_negatives, seed)
    histories = [history_text(texts, h, max_items) for h in examples.histories]
    return text_dataset(tokenizer, [histories[r] for r in rows], labels,
                        pairs=[texts[c] for c in candidates], max_length=max_length)


class CrossEncoder:
    """Click logits of (history, candidate) pairs from a fine-tuned sequence classifier (C = 1)."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *,
                 max_items: int | None = None, max_length: int = 256, batch_size: int = 64):
        if tokenizer.truncation_side != "left":
            raise ValueError("load the tokenizer with truncation_side='left' (see textdata.load_tokenizer)")
        self.model, self.tokenizer, self.texts = model, tokenizer, list(texts)
        self.candidate_texts = clip_texts(tokenizer, self.texts, max_length // 2)  # as in text_dataset
        self.max_items, self.max_length, self.batch_size = max_items, max_length, batch_size

    @torch.inference_mode()
    def __call__(self, input_ids: Tensor, candidates: Tensor) -> Tensor:
        """input_ids (B, T) left-padded histories, candidates (B, K) item ids -> logits (B, K)."""
        B, K = candidates.shape
        histories = [history_text(self.texts, row[row != PAD].cpu().numpy(), self.max_items)
                     for row in input_ids]
        firsts = [histories[b] for b in range(B) for _ in range(K)]  # P = B * K, row-major
        seconds = [self.candidate_texts[int(c)] for c in candidates.reshape(-1)]
        self.model.eval()
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(firsts), self.batch_size):
            stop = start + self.batch_size
            batch = self.tokenizer(firsts[start:stop], seconds[start:stop], truncation="only_first",
                                   max_length=self.max_length, padding=True, return_tensors="pt")
            logits = self.model(**batch.to(device)).logits  # (P', 1)
            if logits.shape[1] != 1:
                raise ValueError(f"a cross-encoder has one click logit, got {logits.shape[1]}")
            out.append(logits[:, 0].float().cpu())
        return torch.cat(out).view(B, K).to(candidates.device)  # (B, K)


class Reranker:
    """A course scorer: the base scorer's top-K unseen items, re-ordered by ``cross_encoder``.

    ``cross_encoder(input_ids (B, T), candidates (B, K)) -> (B, K)`` scores, higher = better
    (a :class:`CrossEncoder` or any callable). ``max_len`` is the window this scorer reads:
    candidates exclude every item in it, and the base scorer gets its own last
    ``base.max_len`` items. Give it a window as long as the longest history to exclude every
    item the harness excludes (otherwise a seen item may take a candidate slot).
    """

    def __init__(self, base, cross_encoder: Callable[[Tensor, Tensor], Tensor], n_items: int,
                 k: int = 50, max_len: int | None = None):
        if not 1 <= k <= n_items:
            raise ValueError(f"k must be in 1..n_items={n_items}, got {k}")
        self.base, self.cross_encoder, self.n_items, self.k = base, cross_encoder, n_items, k
        self.max_len = int(max_len or base.max_len)

    def candidates(self, input_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(base scores (B, V) float64, top (B, K) item ids, valid (B, K))``, best first.

        ``valid`` is False where fewer than K unseen items have a finite score.
        """
        window = input_ids[:, max(0, input_ids.shape[1] - self.base.max_len):]
        scores = self.base.score(window)[:, : self.n_items + 1].double()  # (B, V)
        open_ = scores.clone()
        open_[:, PAD] = float("-inf")
        open_.scatter_(1, input_ids, float("-inf"))  # seen items (and PAD) are never candidates
        values, top = open_.topk(self.k, dim=1)  # (B, K)
        return scores, top, torch.isfinite(values)

    @torch.inference_mode()
    def score(self, input_ids: Tensor) -> Tensor:
        """(B, T) -> (B, V): re-ranked candidates above every other item, others as the base scored them."""
        scores, top, valid = self.candidates(input_ids)
        ce = self.cross_encoder(input_ids, top).double().masked_fill(~valid, float("-inf"))  # (B, K)
        order = ce.argsort(dim=1, descending=True, stable=True)  # ties keep the base order
        ranked, ranked_valid = top.gather(1, order), valid.gather(1, order)  # (B, K)
        finite = scores.masked_fill(~torch.isfinite(scores), float("-inf"))
        ceiling = finite.max(1, keepdim=True).values.clamp(min=0) + 1  # (B, 1) above every base score
        steps = torch.arange(self.k, 0, -1, device=scores.device, dtype=scores.dtype)  # K .. 1
        new = torch.where(ranked_valid, ceiling + steps, scores.gather(1, ranked))  # (B, K)
        return scores.scatter(1, ranked, new)
