"""One training loop for every neural model in the course.

The contract a model follows (SASRec, GRU4Rec, item2vec, BERT4Rec):

* ``model(input_ids, labels)`` returns ``(logits, loss)``; the loop only reads ``loss``;
* ``model.score(input_ids) -> (B, V)`` and ``model.max_len``, so the evaluation harness
  can rank every item for validation.

Batches come from a builder (``make_batches(sequences, config)``) with ``len()`` and
``epoch(generator)``; the default, :class:`CausalBatches`, makes next-item windows.
A masked model swaps in its own builder (cloze masking) and keeps everything else.

Letters: B batch, T time, H hidden, V = n_items + 1 (PAD column included), N targets.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.course import default_device, seed_everything
from helpers.ids import IGNORE, PAD
from helpers.split import EvalSet, Split

LOSSES = ("ce", "bce", "sampled")


# ---------------------------------------------------------------- the loss
class ChunkedCrossEntropy(torch.autograd.Function):
    """Full-softmax cross-entropy of ``h @ items.T`` (PAD masked) without (N, V) arrays.

    Same value and gradients as ``F.cross_entropy(logits, y)``, computed ``chunk`` rows at
    a time, and the gradients are formed in the forward pass (softmax minus one-hot, times
    the inputs): the loss is the last node of the graph, so ``backward`` only scales them.
    On a CPU this is 2-3x faster than autograd's version, which streams several fresh
    (N, V) arrays through memory. A target's loss is capped at -log(float32 tiny) ~ 87.
    """

    @staticmethod
    def forward(ctx, h: Tensor, items: Tensor, y: Tensor, chunk: int = 128) -> Tensor:
        N = len(y)
        grad_h, grad_items = torch.empty_like(h), torch.zeros_like(items)
        logits = torch.empty(min(chunk, N), items.shape[0], dtype=h.dtype, device=h.device)
        total = h.new_zeros(())
        for start in range(0, N, chunk):
            hc, yc = h[start:start + chunk], y[start:start + chunk]  # (c, H), (c,)
            rows = torch.arange(len(yc), device=h.device)
            torch.mm(hc, items.T, out=logits[: len(yc)])  # (c, V)
            logits[:, PAD] = float("-inf")
            p = torch.softmax(logits[: len(yc)], dim=1)  # (c, V)
            total -= p[rows, yc].clamp_min(torch.finfo(p.dtype).tiny).log().sum()
            p[rows, yc] -= 1  # d loss / d logits (times N)
            grad_h[start:start + len(yc)] = p @ items  # (c, H)
            grad_items.addmm_(p.T, hc)  # (V, H)
        ctx.save_for_backward(grad_h / N, grad_items / N)
        return total / N

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_h, grad_items = ctx.saved_tensors
        return grad_h * grad, grad_items * grad, None, None


def next_item_loss(hidden: Tensor, labels: Tensor, items: Tensor, loss: str = "ce",
                   n_negatives: int = 3000) -> Tensor:
    """Mean loss of predicting ``labels`` (B, T) from ``hidden`` (B, T, H).

    ``items`` (V, H) is the output embedding, row ``PAD`` included. Positions whose label
    is ``IGNORE`` are dropped *before* the output product, so training never builds the
    (B, T, V) logits. ``loss``:

    * ``"ce"``: full softmax cross-entropy over items 1..n_items (the PAD column is masked;
      on a CPU through :class:`ChunkedCrossEntropy`, same numbers, less memory traffic);
    * ``"bce"``: original SASRec, one uniformly sampled negative per target;
    * ``"sampled"``: softmax over the target and ``n_negatives`` uniformly sampled items
      shared by the whole batch (a sampled item equal to the target is masked out).
    """
    keep = labels != IGNORE
    h, y = hidden[keep], labels[keep]  # (N, H), (N,)
    if loss == "ce" and h.device.type == "cpu":
        return ChunkedCrossEntropy.apply(h.float(), items.float(), y)
    if loss == "ce":
        logits = (h @ items.T).float()  # (N, V)
        logits[:, PAD] = float("-inf")
        return F.cross_entropy(logits, y)
    n_items = items.shape[0] - 1
    pos = (h * items[y]).sum(-1).float()  # (N,)
    if loss == "bce":
        neg_ids = torch.randint(1, n_items + 1, y.shape, device=y.device)  # (N,)
        neg = (h * items[neg_ids]).sum(-1).float()  # (N,)
        return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))
    if loss == "sampled":
        neg_ids = torch.randint(1, n_items + 1, (n_negatives,), device=y.device)  # (K,)
        neg = (h @ items[neg_ids].T).float()  # (N, K)
        neg = neg.masked_fill(neg_ids[None, :] == y[:, None], float("-inf"))
        logits = torch.cat([pos[:, None], neg], dim=1)  # (N, 1 + K); the target is column 0
        return F.cross_entropy(logits, torch.zeros_like(y))
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


# ---------------------------------------------------------------- batches
class Batches(Protocol):
    """What the loop needs from a batch builder."""

    def __len__(self) -> int: ...

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]: ...


def causal_windows(sequences: Sequence[np.ndarray], max_len: int) -> tuple[Tensor, Tensor]:
    """Next-item windows: input ``seq[:-1]``, labels ``seq[1:]``, both (W, max_len).

    A sequence of n items has n - 1 targets. They are cut *from the most recent end* into
    windows of ``max_len``, so every target appears in exactly one window; the oldest window
    of a sequence is left-padded (input ``PAD``, label ``IGNORE``). The price: the first
    positions of an older window do not see the history before that window.
    """
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    n_targets = np.maximum(lengths - 1, 0)
    n_windows = -(-n_targets // max_len)  # ceil
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences] + [np.zeros(0, np.int64)])
    seq_start = np.cumsum(lengths) - lengths
    seq_of_target = np.repeat(np.arange(len(sequences)), n_targets)
    j = np.arange(n_targets.sum()) - np.repeat(np.cumsum(n_targets) - n_targets, n_targets) + 1
    from_end = n_targets[seq_of_target] - j  # 0 for each sequence's last target
    window = np.repeat(np.cumsum(n_windows) - n_windows, n_targets) + from_end // max_len
    column = max_len - 1 - from_end % max_len
    inputs = np.full((int(n_windows.sum()), max_len), PAD, dtype=np.int64)
    labels = np.full_like(inputs, IGNORE)
    target_at = seq_start[seq_of_target] + j
    inputs[window, column] = flat[target_at - 1]
    labels[window, column] = flat[target_at]
    return torch.from_numpy(inputs), torch.from_numpy(labels)


class CausalBatches:
    """Shuffled next-item windows, each batch trimmed to its longest history.

    The windows are built once (one tensor). Every epoch shuffles them with the given
    generator; with ``bucket`` the shuffled windows are sorted by length inside chunks of
    ``bucket`` batches, so short histories travel together and each batch drops the PAD
    columns that no row uses. That is exact, not an approximation, for models whose
    positions count from the most recent item and which mask PAD (SASRec, GRU4Rec here).

    Batches hold about the same number of *targets* (``batch_size`` windows of average
    length), not the same number of windows: a batch of short histories has more rows.
    Each target then weighs the same in the loss, as in unsorted batches; with a fixed
    number of rows, sorting would give a target of a short history several times the
    weight of one from a long history (that cost about 20% NDCG in our runs).
    """

    def __init__(self, sequences: Sequence[np.ndarray], max_len: int, batch_size: int,
                 bucket: int = 50):
        self.inputs, self.labels = causal_windows(sequences, max_len)  # (W, T) each
        self.lengths = (self.labels != IGNORE).sum(1)  # (W,) targets per window
        self.budget = batch_size * max(float(self.lengths.float().mean()), 1.0)  # targets per batch
        self.batch_size, self.bucket = batch_size, bucket

    def __len__(self) -> int:
        return max(1, math.ceil(int(self.lengths.sum()) / self.budget))

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(self.inputs), generator=generator)
        if self.bucket:
            chunks = order.split(self.batch_size * self.bucket)
            order = torch.cat([c[self.lengths[c].argsort(stable=True)] for c in chunks])
        batch_of = (self.lengths[order].cumsum(0) - 1) // self.budget  # (W,) non-decreasing
        sizes = torch.unique_consecutive(batch_of, return_counts=True)[1]
        batches = order.split(sizes.tolist())
        for b in torch.randperm(len(batches), generator=generator).tolist():
            rows = batches[b]
            width = int(self.lengths[rows].max())
            yield self.inputs[rows, -width:], self.labels[rows, -width:]  # (B, width) each


def causal_batches(sequences: Sequence[np.ndarray], config: TrainConfig) -> CausalBatches:
    """The default ``make_batches``: next-item windows of ``config.max_len``."""
    return CausalBatches(sequences, config.max_len, config.batch_size)


# ---------------------------------------------------------------- configuration and result
@dataclass
class TrainConfig:
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    batch_size: int = 256  # windows per step, on average (see CausalBatches)
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW decoupled decay on weight matrices and embeddings
    warmup_steps: int = 0  # linear warm-up steps (the larger of this and warmup_fraction)
    warmup_fraction: float = 0.0  # ... or a fraction of all steps
    cosine: bool = False  # cosine decay to 0 after warm-up; constant otherwise
    grad_clip: float | None = 1.0  # max global gradient norm; None = no clipping
    patience: int = 5  # evaluations without improvement before stopping
    eval_every: int = 1  # validate every this many epochs (and after the last)
    eval_batch_size: int = 1024  # users scored at once in validation
    max_len: int = 50  # training window and validation history length
    metric: str = "ndcg@10"  # validation metric for early stopping and the best checkpoint
    seed: int = 0  # seeds Python, NumPy, torch and the shuffling
    checkpoint: str | Path | None = None  # training state, rewritten after every epoch
    resume: bool = False  # continue from `checkpoint` when it exists
    amp: bool | None = None  # mixed precision; None = on CUDA only (bf16, else fp16)

    @classmethod
    def from_profile(cls, profile, **overrides) -> TrainConfig:
        """The sizes a run profile sets (epochs, batch, lr, patience, max_len)."""
        return cls(**{"epochs": profile.epochs, "batch_size": profile.batch_size, "lr": profile.lr,
                      "patience": profile.patience, "max_len": profile.max_len,
                      "eval_batch_size": profile.eval_batch_size, **overrides})


@dataclass
class TrainResult:
    history: pd.DataFrame  # one row per epoch: loss, seconds, valid_<metric> when validated
    best_epoch: int  # the epoch whose weights the model holds after `train`
    best_metric: float  # its validation `metric`
    metric: str


# ---------------------------------------------------------------- the loop
def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and embeddings; never biases or LayerNorm gains (as nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _schedule(total: int, warmup: int, cosine: bool) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _amp_dtype(amp: bool | None, device: torch.device) -> torch.dtype | None:
    if amp is False or (amp is None and device.type != "cuda"):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _validate(model: nn.Module, eval_set: EvalSet, n_items: int, config: TrainConfig) -> dict:
    """Full-ranking metrics on ``eval_set`` with the course's harness."""
    from helpers.evaluate import evaluate

    return evaluate(model, eval_set, n_items, ks=(10,), batch_size=config.eval_batch_size,
                    max_len=config.max_len).summary()


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(model: nn.Module, path: str | Path) -> dict:
    """Load the *best* weights stored by :func:`train` into ``model``; return the checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["best_model"])
    return state


def train(model: nn.Module, split: Split, config: TrainConfig, *,
          make_batches: Callable[[Sequence[np.ndarray], TrainConfig], Batches] | None = None,
          progress: bool = True,
          on_epoch: Callable[[nn.Module, dict], None] | None = None) -> TrainResult:
    """Train ``model`` on ``split.train``, early-stop on ``split.valid``, keep the best epoch.

    AdamW, gradient clipping, optional warm-up and cosine decay, mixed precision on CUDA.
    After every epoch the full training state goes to ``config.checkpoint`` (atomically);
    with ``config.resume`` a later call continues from it. On return the model holds the
    weights of the best validation epoch. ``on_epoch(model, row)``, if given, runs after each
    epoch with that epoch's log row (a benchmark uses it to follow a test metric).
    """
    device = default_device()
    seed_everything(config.seed)
    model.to(device)
    batches = (make_batches or causal_batches)(split.train, config)
    total = config.epochs * len(batches)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    warmup = max(config.warmup_steps, round(config.warmup_fraction * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, warmup, config.cosine))
    amp_dtype = _amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    state = {"epoch": 0, "history": [], "best_epoch": 0, "best_metric": float("-inf"),
             "bad_evals": 0, "best_model": copy.deepcopy(model.state_dict())}
    path = Path(config.checkpoint) if config.checkpoint else None
    if config.resume and path is not None and path.exists():
        saved = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"].cpu())
        if torch.cuda.is_available() and saved["cuda_rng"]:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = {k: saved[k] for k in state}
    quiet = not progress or bool(os.environ.get("TQDM_DISABLE"))
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if state["bad_evals"] >= config.patience:
            break
        model.train()
        generator = torch.Generator().manual_seed(config.seed + epoch)
        start, total_loss, n_targets = time.perf_counter(), 0.0, 0
        for input_ids, labels in tqdm(batches.epoch(generator), total=len(batches), disable=quiet,
                                      desc=f"epoch {epoch}", leave=False):
            input_ids, labels = input_ids.to(device), labels.to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                _, loss = model(input_ids, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n = int((labels != IGNORE).sum())
            total_loss, n_targets = total_loss + loss.item() * n, n_targets + n
        row = {"epoch": epoch, "loss": total_loss / max(n_targets, 1),
               "seconds": time.perf_counter() - start}
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            model.eval()
            metrics = _validate(model, split.valid, split.n_items, config)
            row.update({f"valid_{k}": metrics[k] for k in dict.fromkeys(["hr@10", "ndcg@10", config.metric])})
            if metrics[config.metric] > state["best_metric"]:
                state.update(best_epoch=epoch, best_metric=metrics[config.metric], bad_evals=0,
                             best_model=copy.deepcopy(model.state_dict()))
            else:
                state["bad_evals"] += 1
        if on_epoch is not None:
            on_epoch(model, row)
        state["epoch"] = epoch
        state["history"].append(row)
        if not quiet:
            tqdm.write("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in row.items()))
        if path is not None:
            _save_atomic({**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                          "rng": torch.get_rng_state(),
                          "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                         path)
    model.load_state_dict(state["best_model"])
    model.eval()
    return TrainResult(pd.DataFrame(state["history"]), state["best_epoch"], state["best_metric"],
                       config.metric)


def plot_history(result: TrainResult, ax=None):
    """Learning curve: training loss (left axis) and the validation metric (right axis)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    h = result.history
    ax.plot(h["epoch"], h["loss"], color="C0", marker=".", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="C0")
    column = f"valid_{result.metric}"
    if column in h:
        right = ax.twinx()
        valid = h.dropna(subset=[column])
        right.plot(valid["epoch"], valid[column], color="C1", marker="o", label=column)
        right.set_ylabel(f"validation {result.metric}", color="C1")
        right.axvline(result.best_epoch, color="C1", linestyle=":", label=f"best epoch {result.best_epoch}")
        right.legend(loc="center right")
    return ax
