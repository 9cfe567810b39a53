"""Checks of notebook 02 (the softmax formulation): NDCG@10 with ties, cross-entropy, perplexity.

References: ``helpers.metrics`` (the harness's NDCG, ties at their expected value) and PyTorch's
``F.cross_entropy``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from helpers import metrics
from helpers.exercises import attempt, exercise, expect


@exercise("02.ndcg", "NDCG@10 of one user, ties at their expected rank")
def _ndcg(fn):
    rng = np.random.default_rng(2)
    cases = [
        ("scores [0.1, 0.9, 0.3, 0.2] and target 1 (ranked first)", np.array([0.1, 0.9, 0.3, 0.2]), 1,
         "rank r (1 = best) gains 1 / log2(r + 1): the first rank gains 1"),
        ("scores [0.5, 0.9, 0.7, 0.2] and target 0 (ranked third)", np.array([0.5, 0.9, 0.7, 0.2]), 0,
         "the target's rank is 1 + the number of items scored strictly higher; the gain uses log base 2 of (rank + 1)"),
        ("20 random scores and the target ranked 11th", np.sort(rng.random(20))[::-1].copy(), 10,
         "NDCG@10 counts 0 beyond rank 10"),
        ("20 equal scores (a model that knows nothing)", np.zeros(20), 4,
         "ties count at their expected value: average the gain over every rank the target could take among its ties"),
        ("scores where the target ties with 3 others just above rank 10", np.r_[np.full(8, 2.0), np.ones(4), np.zeros(8)], 9,
         "average over the possible ranks 9..12 and count the ones beyond 10 as 0"),
    ]
    for case, scores, target, hint in cases:
        got = attempt(fn, scores.copy(), target, case=case)
        s = torch.as_tensor(scores)[None]  # (1, V)
        greater, ties = metrics.target_ranks(s, torch.tensor([target]))
        first = 1 / np.log2(greater.item() + 2) if greater.item() < 10 else 0.0
        last = 1 / np.log2(greater.item() + ties.item() + 2) if greater.item() + ties.item() < 10 else 0.0
        mistakes = [(first, "your target is placed FIRST among its ties: count ties at their expected value"),
                    (last, "your target is placed LAST among its ties: count ties at their expected value")]
        expect(got, float(metrics.ndcg(greater, ties, 10)[0]), case=case, hint=hint,
               mistakes=mistakes if ties.item() else ())


@exercise("02.cross_entropy", "softmax cross-entropy from logits, mean over the batch")
def _cross_entropy(fn):
    g = torch.Generator().manual_seed(0)
    cases = [
        ("logits of 2 rows over 3 items, targets [0, 2]", torch.tensor([[2.0, 1.0, 0.1], [0.5, 0.5, 3.0]]),
         torch.tensor([0, 2]), "loss = -log softmax(logits)[target], averaged over the rows (not summed)"),
        ("logits (4, 6) random, targets [5, 0, 3, 1]", torch.randn(4, 6, generator=g), torch.tensor([5, 0, 3, 1]),
         "the softmax runs over the items of each row (dim=1), then pick each row's target column"),
        ("logits with large values (around 1000)", torch.tensor([[1000.0, 990.0, 0.0], [5.0, 1005.0, 1000.0]]),
         torch.tensor([1, 2]), "exp(1000) overflows: subtract each row's max first (log-sum-exp)"),
    ]
    for case, logits, targets, hint in cases:
        got = attempt(fn, logits.clone(), targets.clone(), case=case)
        mistakes = [(F.cross_entropy(logits, targets, reduction="sum").item(), "average over the rows, do not sum them"),
                    (-logits.log_softmax(0)[torch.arange(len(targets)), targets].mean().item(),
                     "the softmax runs over the items of each row (dim=1), not over the batch")]
        expect(got, F.cross_entropy(logits, targets).item(), case=case, hint=hint, atol=1e-4, mistakes=mistakes)


@exercise("02.perplexity", "perplexity from the log-probabilities of the targets")
def _perplexity(fn):
    cases = [
        ("log_probs = log(1/4) for 3 targets (a uniform guess over 4 items)", np.log(np.full(3, 0.25)),
         "a uniform guess over V items has perplexity V: exp of minus the MEAN log-probability"),
        ("log_probs = log([0.5, 0.25, 0.125])", np.log([0.5, 0.25, 0.125]),
         "perplexity = exp(-mean(log p)) with natural logs (the log_probs are natural logs)"),
        ("one target with log_prob log(0.1)", np.log([0.1]), "one target with probability 0.1 gives perplexity 10"),
    ]
    for case, log_probs, hint in cases:
        got = attempt(fn, log_probs.copy(), case=case)
        mistakes = [(float(np.exp(-log_probs.sum())), "the MEAN log-probability, not the sum"),
                    (float(2 ** -log_probs.mean()), "the log_probs are natural logs: use exp, not 2 **")]
        expect(got, float(np.exp(-log_probs.mean())), case=case, hint=hint, mistakes=mistakes)
