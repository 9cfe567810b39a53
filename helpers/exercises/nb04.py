"""Checks of notebook 04 (BERT4Rec): BERT's 80/10/10 rule, the inference input, the masked loss.

The 80/10/10 rule is random, so its check reads shares on a large batch (tolerances several
standard deviations wide) and the rules that hold for every position. The loss's reference is
``F.cross_entropy(..., ignore_index=IGNORE)``, as ``bert4rec.mlm_loss`` uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers.exercises import Failed, attempt, exercise, expect, require
from helpers.ids import IGNORE, PAD, mask_id


@exercise("04.rule_80_10_10", "BERT's 80/10/10 rule on the chosen positions")
def _rule(fn):
    n_items = 50
    MASK = mask_id(n_items)
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, n_items + 1, (400, 25), generator=g)  # (B, T)
    items[:, :5] = PAD  # left padding
    chosen = (torch.rand(items.shape, generator=g) < 0.3) & (items != PAD)
    case = "items (400, 25) over 50 items, 5 PAD columns, about 30% of the real positions chosen"
    got = attempt(fn, items.clone(), chosen.clone(), n_items, torch.Generator().manual_seed(1), case=case)
    if not isinstance(got, torch.Tensor) or got.shape != items.shape:
        raise Failed(f"for {case}: expected input_ids, a tensor of shape {tuple(items.shape)}, "
                     f"got {getattr(got, 'shape', type(got).__name__)}. Hint: return the model's input, shaped like items")
    expect(got[~chosen], items[~chosen], case=case + ", the positions NOT chosen",
           hint="only the chosen positions change; every other position (PAD included) keeps its id")
    picked, original = got[chosen], items[chosen]
    n = len(picked)
    mask_share = (picked == MASK).float().mean().item()
    kept_share = (picked == original).float().mean().item()
    changed = picked[(picked != MASK) & (picked != original)]
    require(((changed >= 1) & (changed <= n_items)).all().item(), case=case + ", chosen positions neither MASK nor kept",
            got=changed.unique()[:10], hint=f"a random replacement is a real item, 1..n_items: never PAD (0) or MASK ({MASK})")
    sd = (0.1 * 0.9 / n) ** 0.5
    require(abs(mask_share - 0.8) < 5 * sd, case=case + f", share of the {n} chosen positions set to MASK",
            got=round(mask_share, 3), hint="80% of the chosen positions become MASK")
    # a random item equals the original with probability 1/n_items: kept share = 0.1 + 0.1 / n_items
    require(abs(kept_share - 0.1 - 0.1 / n_items) < 5 * sd, case=case + ", share of the chosen positions kept as they were",
            got=round(kept_share, 3), hint="10% of the chosen positions keep their item, 10% get a random item")
    same_row = (items[:, None, :] == got[:, :, None]).any(2)[chosen & (got != MASK) & (got != items)]
    require(same_row.float().mean().item() < 0.8, case=case + ", the random replacements",
            got=round(same_row.float().mean().item(), 3),
            hint="draw a random item from the whole catalogue (1..n_items), not a shuffle of the same row")


@exercise("04.inference_input", "the input for next-item inference: history, then MASK, left-padded")
def _inference_input(fn):
    n_items = 9
    MASK = mask_id(n_items)
    cases = [([3, 1, 4], 6), ([5, 9, 2, 6, 5, 3, 5], 4), ([7], 1), ([2, 8], 3)]
    for history, max_len in cases:
        case = f"history {history}, max_len={max_len}, n_items={n_items}"
        got = attempt(fn, list(history), max_len, n_items, case=case)
        window = (history + [MASK])[-max_len:]
        want = torch.tensor([PAD] * (max_len - len(window)) + window)
        expect(got, want, case=case, hint=f"the last max_len - 1 items, then MASK ({MASK}), with PAD (0) on the left",
               mistakes=[(torch.tensor(([PAD] * max_len + history[:max_len - 1] + [MASK])[-max_len:]),
                          "keep the MOST RECENT items when the history is too long"),
                         (torch.tensor(window + [PAD] * (max_len - len(window))),
                          "pad on the LEFT, so that MASK is the last column"),
                         (torch.tensor(([PAD] * max_len + history)[-max_len:]),
                          f"append MASK ({MASK}) after the history: its logits are the prediction")])


@exercise("04.masked_loss", "the masked-LM loss: cross-entropy over labelled positions only")
def _masked_loss(fn):
    g = torch.Generator().manual_seed(4)
    labels = torch.full((3, 5), IGNORE)
    labels[0, [1, 3]] = torch.tensor([2, 5])
    labels[1, 4] = 1
    labels[2, [0, 1, 2]] = torch.tensor([6, 6, 3])
    cases = [("logits (1, 2, 7), both positions labelled", torch.randn(1, 2, 7, generator=g), torch.tensor([[4, 0]])),
             ("logits (3, 5, 7), 6 of 15 positions labelled, rows with 2, 1 and 3 labels",
              torch.randn(3, 5, 7, generator=g), labels)]
    for case, logits, y in cases:
        got = attempt(fn, logits.clone(), y.clone(), case=case)
        flat = F.cross_entropy(logits.reshape(-1, 7), y.reshape(-1), ignore_index=IGNORE, reduction="none").view(y.shape)
        real = (y != IGNORE).float()
        mistakes = [((flat * real).sum() / real.numel(), "average over the labelled positions only, not over every position"),
                    (((flat * real).sum(1) / real.sum(1)).mean(), "average over all labelled positions of the batch "
                                                                  "at once, not per row then over rows")]
        expect(got, F.cross_entropy(logits.reshape(-1, 7), y.reshape(-1), ignore_index=IGNORE), case=case,
               hint="loss = mean over positions with a label (label != IGNORE) of -log softmax(logits)[label]",
               mistakes=mistakes, atol=1e-5)
