"""Checks of notebook 09 (online and private): HMAC pseudonyms, one DP-SGD step's clipped and
noised gradient, the loss-threshold attack's AUC.

References: ``privacy.Pseudonymiser``, DP-SGD's rule (clip each user's gradient to norm C, sum,
add N(0, (sigma C)^2), divide by the batch) and ``privacy.attack_auc``. The noise is random, so
its check reads the noise's standard deviation over many coordinates.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import torch

from helpers import privacy
from helpers.exercises import Failed, attempt, exercise, expect, require

_KEY = bytes(range(32))


@exercise("09.pseudonym", "an HMAC-SHA256 pseudonym of a user id")
def _pseudonym(fn):
    for user in (42, "alice", 7):
        case = f"user_id {user!r}, key bytes(range(32))"
        got = attempt(fn, user, _KEY, case=case)
        expect(got, privacy.Pseudonymiser(_KEY)(user), case=case,
               hint="hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()",
               mistakes=[(hashlib.sha256(_KEY + str(user).encode()).hexdigest(),
                          "a hash of key + id is not an HMAC (it is open to length extension): use hmac.new"),
                         (hashlib.sha256(str(user).encode()).hexdigest(),
                          "a hash without the key can be reversed by hashing every id: use the key, with hmac.new"),
                         (hmac.new(str(user).encode(), _KEY, hashlib.sha256).hexdigest(),
                          "hmac.new takes the KEY first, then the message (the id)")])


@exercise("09.dp_gradient", "one DP-SGD step: clip each user's gradient, sum, add noise, average")
def _dp_gradient(fn):
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(6, 4, generator=g) * torch.tensor([0.1, 0.5, 1, 2, 4, 8])[:, None]  # (B, D), norms around 0.2..16
    C = 1.0
    norms = grads.norm(dim=1, keepdim=True)
    clipped = grads * (C / norms).clamp(max=1)
    case = "6 per-user gradients (6, 4) with norms from about 0.2 to 16, C=1, sigma=0 (no noise)"
    got = attempt(fn, grads.clone(), C, 0.0, torch.Generator().manual_seed(1), case=case)
    expect(got, clipped.sum(0) / len(grads), case=case, atol=1e-5,
           hint="clip EACH user's gradient to norm at most C (g * min(1, C / |g|)), sum them, divide by the batch size",
           mistakes=[(grads.sum(0) / len(grads) * min(1, C / (grads.sum(0) / len(grads)).norm().item()),
                      "clip each user's gradient separately, not the batch's mean: DP bounds one user's influence"),
                     ((grads * (C / norms)).sum(0) / len(grads), "clip means norm AT MOST C: a small gradient keeps its norm"),
                     (clipped.sum(0), "divide the noisy sum by the batch size")])
    zeros = torch.zeros(10, 20000)
    for C, sigma in ((1.0, 1.0), (2.0, 0.5)):
        case = f"10 zero gradients of 20000 coordinates, C={C}, sigma={sigma}: the output is pure noise"
        got = attempt(fn, zeros.clone(), C, sigma, torch.Generator().manual_seed(2), case=case)
        if not isinstance(got, torch.Tensor) or got.shape != (20000,):
            raise Failed(f"for {case}: expected a (20000,) tensor, got {getattr(got, 'shape', type(got).__name__)}. "
                         "Hint: one averaged gradient of D coordinates")
        std = got.float().std().item()
        require(abs(std / (sigma * C / 10) - 1) < 0.05, case=case + ", the standard deviation of the output",
                got=round(std, 4), hint="the noise N(0, (sigma * C)^2) is added once to the SUM of the clipped "
                                        "gradients, then divided by the batch size, like the sum")
        require(abs(got.float().mean().item()) < 5 * sigma * C / 10 / 20000 ** 0.5, case=case + ", the mean",
                got=round(got.float().mean().item(), 4), hint="the noise has mean 0")


@exercise("09.attack_auc", "the AUC of the loss-threshold membership attack")
def _attack_auc(fn):
    cases = [([0.1, 0.2], [0.5, 0.9], "members have the LOWER losses: AUC = P(member loss < non-member loss)"),
             ([0.3, 0.8, 0.5], [0.4, 0.6], "compare every member with every non-member"),
             ([0.5, 0.5], [0.5, 0.7], "a tie counts 1/2")]
    for m, n, hint in cases:
        case = f"member losses {m}, non-member losses {n}"
        got = attempt(fn, np.array(m), np.array(n), case=case)
        want = privacy.attack_auc(np.array(m), np.array(n))
        M, N = np.array(m)[:, None], np.array(n)[None, :]
        expect(got, want, case=case, hint=hint,
               mistakes=[(1 - want, "lower loss = member: count the pairs where the member's loss is the smaller"),
                         ((M < N).mean(), "a tie counts 1/2, not 0"), ((M <= N).mean(), "a tie counts 1/2, not 1")])
