"""Checks of notebook 06 (GAN-style generation): the discriminator's loss, the generator's
REINFORCE loss, distinct-n.

References: ``gan.discriminator_loss``, ``gan.policy_gradient_loss`` and ``synth_eval.diversity``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from helpers import gan, synth_eval
from helpers.exercises import Failed, attempt, exercise, expect


@exercise("06.discriminator_loss", "the discriminator's loss from logits")
def _discriminator_loss(fn):
    g = torch.Generator().manual_seed(0)
    cases = [("real_logits = fake_logits = zeros (4,): D = 1/2 everywhere", torch.zeros(4), torch.zeros(4)),
             ("real_logits (6,) and fake_logits (3,) random", torch.randn(6, generator=g), torch.randn(3, generator=g)),
             ("confident logits, real [30, 40], fake [-35, 60]", torch.tensor([30.0, 40.0]), torch.tensor([-35.0, 60.0]))]
    for case, real, fake in cases:
        got = attempt(fn, real.clone(), fake.clone(), case=case)
        mistakes = [(gan.discriminator_loss(fake, real), "real sequences are labelled 1 and generated ones 0: "
                                                         "-mean log D(real) - mean log(1 - D(fake))"),
                     (torch.cat([-F.logsigmoid(real), -F.logsigmoid(-fake)]).mean(),
                      "two means, one per batch, then their sum (the batches can differ in size)")]
        expect(got, gan.discriminator_loss(real, fake), case=case, mistakes=mistakes, atol=1e-4,
               hint="L_D = -mean log sigmoid(real_logits) - mean log(1 - sigmoid(fake_logits)); "
                    "use F.logsigmoid, since log(sigmoid(-60)) underflows to -inf")


@exercise("06.reinforce_loss", "the generator's REINFORCE loss with a mean baseline")
def _reinforce_loss(fn):
    g = torch.Generator().manual_seed(1)
    cases = [("log_probs [-2, -3, -1, -4], rewards [1, 1, 1, 1] (all rewards equal)",
              torch.tensor([-2.0, -3.0, -1.0, -4.0]), torch.ones(4)),
             ("log_probs (8,) and rewards (8,) random", -5 * torch.rand(8, generator=g), torch.randn(8, generator=g))]
    for case, log_probs, rewards in cases:
        lp, r = log_probs.clone().requires_grad_(), rewards.clone().requires_grad_()
        got = attempt(fn, lp, r, case=case)
        mistakes = [(-(rewards * log_probs).mean(), "subtract the baseline (the batch's mean reward) from each reward"),
                    (((rewards - rewards.mean()) * log_probs).mean(),
                     "minimise the NEGATIVE: loss = -mean(advantage * log_prob)")]
        expect(got, gan.policy_gradient_loss(log_probs, rewards), case=case, mistakes=mistakes, atol=1e-5,
               hint="loss = -mean((r - mean r) * log_prob), the rewards treated as constants")
        if not isinstance(got, torch.Tensor) or not got.requires_grad:
            raise Failed(f"for {case}: the loss carries no gradient. Hint: compute it with torch from log_probs")
        got.backward()
        if r.grad is not None and r.grad.abs().sum() > 0:
            raise Failed(f"for {case}: the loss sends a gradient into the rewards. Hint: the reward is a "
                         "constant to the generator: use (rewards - rewards.mean()).detach()")


@exercise("06.distinct_n", "distinct-n: the share of distinct n-grams")
def _distinct_n(fn):
    cases = [([[1, 2, 3]], 2, "n-grams are the runs of n consecutive items: [1, 2, 3] has 2 bigrams, both distinct"),
             ([[1, 2, 1, 2], [3, 1, 2]], 2, "count every n-gram of every sequence, then the share that is distinct"),
             ([[5, 5, 5], [5, 5], [4]], 2, "a sequence shorter than n has no n-gram"),
             ([[1, 2, 3], [1, 2, 3], [2, 3, 4]], 3, "n is a parameter: here trigrams")]
    for seqs, n, hint in cases:
        case = f"sequences {seqs}, n={n}"
        got = attempt(fn, [list(s) for s in seqs], n, case=case)
        arrays = [np.asarray(s, dtype=np.int64) for s in seqs]
        per_seq = np.mean([synth_eval.diversity([s], 10, n)[f"distinct_{n}"] for s in arrays if len(s) >= n])
        expect(got, synth_eval.diversity(arrays, 10, n)[f"distinct_{n}"], case=case, hint=hint,
               mistakes=[(per_seq, "distinct across ALL sequences together, not per sequence then averaged")])
