"""A behaviour-aware SASRec with two heads: what will the user do next, and with what?

Read bottom-up: ``MBSASRecConfig -> MBSASRec -> MBBatches -> fit``. The encoder is
SASRec's (``helpers.sasrec.Block``); the input at each position is the sum of an item,
a behaviour and a position embedding. Two heads read the state h_t:

* behaviour head: ``softmax(W h_t + c)`` over the behaviours (PAD excluded), i.e. the next
  behaviour as a classification;
* item head: ``softmax((h_t + e(b_{t+1})) . E_items)``: the next item *for a given next
  behaviour* b_{t+1} (ask "what will they buy?" with b = buy). The question names the
  behaviour; the target item is never an input.

One loss: ``(1 - behaviour_weight) * item CE + behaviour_weight * behaviour CE``; the item CE
is a sampled softmax (``n_negatives`` shared negatives, as SASRec's ``loss="sampled"``): a full
softmax over RetailRocket's 36k items costs ten times more on a CPU.

Why its own small loop (:func:`fit`): ``helpers.train.train`` validates with the harness,
which hands a model item ids only; this model needs the behaviours too. It keeps the
course loop's choices (AdamW, clipping, fixed epochs, early stopping on validation, best
weights kept) and reuses its optimizer step.

Letters: B batch, T time, H hidden, V = n_items + 1, C = n_behaviours + 1 (PAD column).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.batches import bucketed_batches, causal_windows
from helpers.ids import IGNORE, PAD
from helpers.losses import full_cross_entropy, sampled_softmax
from helpers.profile import Profile
from helpers.sasrec import Block, attention_mask


@dataclass
class MBSASRecConfig:
    n_items: int  # items 1..n_items, 0 = PAD
    n_behaviours: int = 3  # behaviours 1..n_behaviours, 0 = PAD
    max_len: int = 50  # longest history read (learned positions)
    hidden: int = 64  # H
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    behaviours_in: bool = True  # False: the encoder reads item ids only (an ablation)
    behaviour_weight: float = 0.5  # weight of the behaviour loss; 1 - it for the item loss
    class_weights: tuple[float, ...] | None = None  # per behaviour 1..n, for an imbalanced head
    n_negatives: int | None = 1000  # item loss: sampled softmax over this many shared negatives; None = all items

    @classmethod
    def from_profile(cls, n_items: int, profile: Profile, **overrides) -> MBSASRecConfig:
        return cls(**{"n_items": n_items, "max_len": profile.max_len, "hidden": profile.hidden,
                      "n_layers": profile.n_layers, "n_heads": profile.n_heads, "dropout": profile.dropout,
                      **overrides})


@dataclass
class MBOutput:
    behaviour_logits: Tensor  # (B, T, C); column PAD is -inf
    hidden: Tensor  # (B, T, H)
    loss: Tensor | None = None


class MBSASRec(nn.Module):
    def __init__(self, config: MBSASRecConfig):
        super().__init__()
        self.config = config
        H, C = config.hidden, config.n_behaviours + 1
        self.item_emb = nn.Embedding(config.n_items + 1, H, padding_idx=PAD)
        self.beh_emb = nn.Embedding(C, H, padding_idx=PAD)  # input behaviours
        self.query_emb = nn.Embedding(C, H)  # the behaviour the item head is asked about
        self.pos_emb = nn.Embedding(config.max_len, H)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(H)
        self.beh_head = nn.Linear(H, C)
        for module in self.modules():  # as SASRec: N(0, 0.02) weights, zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()
            self.beh_emb.weight[PAD].zero_()

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def encode(self, input_ids: Tensor, behaviour_ids: Tensor) -> Tensor:
        """(B, T) items and behaviours, left-padded -> (B, T, H) states.

        Positions count from the window's first event (SASRec's count back from the last
        column). Every merged RetailRocket sequence ends with a purchase, so with positions
        counted from the end the last column would, in training, always precede a purchase,
        and a model asked about any shorter history would answer "buy" from its position alone.
        """
        real = input_ids != PAD  # (B, T)
        pos = (real.cumsum(1) - 1).clamp(0, self.max_len - 1)  # (B, T); 0 under PAD (never attended)
        x = self.item_emb(input_ids) * math.sqrt(self.config.hidden) + self.pos_emb(pos)
        if self.config.behaviours_in:
            x = x + self.beh_emb(behaviour_ids)
        x, mask = self.drop(x), attention_mask(input_ids)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def behaviour_logits(self, h: Tensor) -> Tensor:
        logits = self.beh_head(h)  # (..., C)
        return logits.masked_fill(torch.arange(logits.shape[-1], device=h.device) == PAD, float("-inf"))

    def item_logits(self, h: Tensor, next_behaviour: Tensor) -> Tensor:
        """(..., H) states and (...) asked behaviours -> (..., V) item scores; PAD column -inf."""
        logits = (h + self.query_emb(next_behaviour)) @ self.item_emb.weight.T
        logits[..., PAD] = float("-inf")
        return logits

    def forward(self, input_ids: Tensor, behaviour_ids: Tensor, labels: Tensor | None = None,
                behaviour_labels: Tensor | None = None) -> MBOutput:
        """With labels (B, T) items and behaviours (``IGNORE`` where none), the weighted loss."""
        h = self.encode(input_ids, behaviour_ids)
        out = MBOutput(self.behaviour_logits(h), h)
        if labels is None:
            return out
        keep = labels != IGNORE  # the same positions carry both labels
        w = self.config.behaviour_weight
        weights = None if self.config.class_weights is None else h.new_tensor((0.0, *self.config.class_weights))
        loss = h.new_zeros(())
        if w > 0:
            loss = loss + w * F.cross_entropy(out.behaviour_logits[keep], behaviour_labels[keep], weight=weights)
        if w < 1:
            queried = h[keep] + self.query_emb(behaviour_labels[keep])  # (N, H)
            items, n = self.item_emb.weight, self.config.n_negatives
            item_loss = (full_cross_entropy(queried, items, labels[keep]) if n is None
                         else sampled_softmax(queried, items, labels[keep], n))
            loss = loss + (1 - w) * item_loss
        out.loss = loss
        return out

    @torch.no_grad()
    def predict(self, histories: list[np.ndarray], behaviours: list[np.ndarray],
                next_behaviour: int | None = None) -> Tensor:
        """Behaviour probabilities (N, C) after each history, or, with ``next_behaviour``,
        item scores (N, V) for that behaviour. Batches of 512, on the model's device."""
        from helpers.sequences import pad_left

        self.eval()
        device, parts = next(self.parameters()).device, []
        for start in range(0, len(histories), 512):
            x = pad_left(histories[start:start + 512], self.max_len).to(device)  # (B, T)
            b = pad_left(behaviours[start:start + 512], self.max_len).to(device)  # (B, T)
            h = self.encode(x, b)[:, -1]  # (B, H)
            if next_behaviour is None:
                parts.append(self.behaviour_logits(h).softmax(-1).cpu())
            else:
                parts.append(self.item_logits(h, torch.full((len(h),), next_behaviour, device=device)).float().cpu())
        return torch.cat(parts)


class MBBatches:
    """Next-event windows over (item, behaviour) sequences, cut as ``causal_windows`` cuts them."""

    def __init__(self, items: list[np.ndarray], behaviours: list[np.ndarray], max_len: int, batch_size: int):
        self.x, self.y = causal_windows(items, max_len)  # (W, T) each
        self.bx, self.by = causal_windows(behaviours, max_len)
        self.lengths = (self.y != IGNORE).sum(1)  # (W,)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def epoch(self, generator: torch.Generator):
        for rows in bucketed_batches(self.lengths, generator, self.batch_size, bucket=50):
            w = int(self.lengths[rows].max())
            yield self.x[rows, -w:], self.bx[rows, -w:], self.y[rows, -w:], self.by[rows, -w:]


def loss_on(model: MBSASRec, batches: MBBatches) -> float:
    """Mean loss over every batch of ``batches`` (no dropout, no gradient). The sampled item
    loss draws the same negatives at every call (a fixed seed in a forked RNG), so epochs
    are compared on equal terms."""
    model.eval()
    device, total, n = next(model.parameters()).device, 0.0, 0
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for batch in batches.epoch(torch.Generator().manual_seed(0)):
            x, bx, y, by = (t.to(device) for t in batch)
            k = int((y != IGNORE).sum())
            total, n = total + model(x, bx, y, by).loss.item() * k, n + k
    return total / max(n, 1)


def fit(model: MBSASRec, train: MBBatches, valid: MBBatches, epochs: int, lr: float = 1e-3,
        patience: int = 3, seed: int = 0, score=None) -> list[dict]:
    """AdamW for up to ``epochs`` epochs; stop after ``patience`` epochs without a better
    validation ``score(model)`` (higher is better; default: minus the validation loss); the
    model keeps its best epoch. Returns one log row per epoch."""
    from helpers.course import default_device, seed_everything
    from helpers.train import optimizer_step

    seed_everything(seed)
    device = default_device()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    best, best_state, bad, log = -math.inf, copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for i, batch in enumerate(train.epoch(torch.Generator().manual_seed(seed + epoch))):
            x, bx, y, by = (t.to(device) for t in batch)
            loss = model(x, bx, y, by).loss
            optimizer_step(loss, optimizer, scaler, model.parameters(), 1.0)
            total += loss.item()
        row = {"epoch": epoch, "loss": total / (i + 1), "valid_loss": loss_on(model, valid)}
        row["valid_score"] = -row["valid_loss"] if score is None else float(score(model))
        log.append(row)
        if row["valid_score"] > best:
            best, best_state, bad = row["valid_score"], copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return log
