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
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from helpers import budget, distributed
from helpers.batches import Batches, CausalBatches, causal_batches, causal_windows
from helpers.course import default_device, quiet, seed_everything
from helpers.ids import IGNORE
from helpers.split import EvalSet, Split, fingerprint
from helpers.storage import load_tensors, save_tensors

# the batch builders live in helpers.batches (models may import them); re-exported for notebooks
__all__ = ["Batches", "CausalBatches", "TrainConfig", "TrainResult", "causal_batches", "causal_windows",
           "load_checkpoint", "plot_history", "seconds_cap", "train", "validation_users"]


# ---------------------------------------------------------------- configuration and result
SECONDS_CAP_ENV = "COURSE_MAX_TRAIN_SECONDS"


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
    max_steps: int | None = None  # train only the whole epochs that fit in this many steps; None = `epochs`
    max_seconds: float | None = None  # a learner's cap in seconds ($COURSE_MAX_TRAIN_SECONDS); None = no cap
    valid_users: int | None = None  # validate on this many users (one seeded sample for the run); None = all
    keep: str = "best"  # "best": the best validation epoch's weights, early stopping on; "last": train
    # exactly the planned epochs and keep the last (a refit whose validation targets are training data)

    @classmethod
    def from_profile(cls, profile, **overrides) -> TrainConfig:
        """The sizes a run profile sets (epochs, step cap, batch, lr, patience, max_len, mixed
        precision), and the learner's seconds cap from ``$COURSE_MAX_TRAIN_SECONDS`` when it is set."""
        return cls(**{"epochs": profile.epochs, "max_steps": profile.max_steps, "batch_size": profile.batch_size,
                      "lr": profile.lr, "patience": profile.patience, "max_len": profile.max_len,
                      "eval_batch_size": profile.eval_batch_size, "max_seconds": seconds_cap(),
                      "valid_users": profile.valid_users, "amp": profile.amp, **overrides})

    def planned_epochs(self, steps_per_epoch: int) -> int:
        """The epochs a run trains at most: ``epochs``, cut to the whole epochs that fit in
        ``max_steps`` (at least one). It depends on the data, never on the machine's speed."""
        if self.max_steps is None:
            return self.epochs
        return max(1, min(self.epochs, self.max_steps // steps_per_epoch))


def seconds_cap() -> float | None:
    """``$COURSE_MAX_TRAIN_SECONDS`` as a number of seconds, or None when unset or empty.

    A cap makes results depend on how fast the machine is: a run it cuts says so, and the
    model cache keys on it, so a capped model is never read by a run without the cap.
    """
    raw = os.environ.get(SECONDS_CAP_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SECONDS_CAP_ENV}={raw!r} is not a number of seconds; unset it to train "
                         "the profile's epochs") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{SECONDS_CAP_ENV}={raw!r} must be a positive number of seconds")
    return value


@dataclass
class TrainResult:
    history: pd.DataFrame  # one row per epoch: loss, seconds, valid_<metric> when validated
    best_epoch: int  # the epoch whose weights the model holds after `train`
    best_metric: float  # its validation `metric`
    metric: str
    stopped: str = "epochs"  # why training ended: "epochs", "patience" or "cap" (max_seconds cut it)
    planned: int = 0  # the epochs the run would train without early stopping (TrainConfig.planned_epochs)

    @property
    def seconds(self) -> float:
        """Seconds of training and validation, summed over the epochs run."""
        return float(self.history["seconds"].sum()) if "seconds" in self.history else 0.0

    def describe(self) -> str:
        """One line a notebook prints: epochs run, best epoch, its validation metric, seconds, why it stopped."""
        why = {"epochs": "the last planned epoch", "patience": "early stopping",
               "cap": f"CUT by the {SECONDS_CAP_ENV} cap: numbers depend on this machine's speed"}
        planned = f" of {self.planned}" if self.planned else ""
        return (f"{len(self.history)}{planned} epochs, best epoch {self.best_epoch} "
                f"(validation {self.metric} {self.best_metric:.4f}), {self.seconds:.0f} s; "
                f"ended by {why.get(self.stopped, self.stopped)}")


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


def amp_dtype(amp: bool | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: None (off) unless asked or on CUDA; bf16 where supported, else fp16."""
    if amp is False or (amp is None and device.type != "cuda"):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   params, grad_clip: float | None) -> None:
    """Backward (loss-scaled under fp16), clip the global gradient norm, step, update the scaler.

    Under fp16 (``scaler`` enabled) a step whose gradients overflow is skipped and the scale
    halved; the scale grows again after 2,000 clean steps (``torch.amp.GradScaler``). A CUDA
    out-of-memory error in the backward pass becomes a :class:`helpers.budget.MemoryBudgetError`.
    """
    optimizer.zero_grad(set_to_none=True)
    try:
        scaler.scale(loss).backward()
    except torch.cuda.OutOfMemoryError as e:
        raise budget.out_of_memory(e, "a training step's backward pass") from e
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def _fit_to_memory(model: nn.Module, n_items: int, config: TrainConfig, device: torch.device,
                   amp: bool) -> TrainConfig:
    """On a GPU: refuse a training batch that cannot fit its memory (:func:`helpers.budget.check_training`,
    at most ``batch_size`` full windows) and cut the validation batch to one that fits (the
    metrics do not depend on it). Unchanged on a CPU, or for a model without a Transformer's
    config (hidden, max_len)."""
    free = budget.device_budget(device)
    model_config = getattr(model, "config", None)
    if free is None or not all(hasattr(model_config, f) for f in ("hidden", "max_len")):
        return config
    shape = budget.Shape.of(model_config, max(n_items, getattr(model_config, "n_items", 0)))
    budget.check_training(shape, config.batch_size * config.max_len, free, amp)
    users = budget.largest_batch(lambda b: budget.eval_bytes(shape, b), config.eval_batch_size, free, "validation")
    return dataclasses.replace(config, eval_batch_size=users)


def _validate(model: nn.Module, eval_set: EvalSet, n_items: int, config: TrainConfig) -> dict:
    """Full-ranking metrics on ``eval_set`` with the course's harness; seen items are excluded
    unless a target repeats its history (``honest_exclude_seen``: early stopping must not
    favour an epoch that merely scores seen items high)."""
    from helpers.evaluate import evaluate, honest_exclude_seen

    return evaluate(model, eval_set, n_items, ks=tuple(sorted({10, metric_k(config.metric)})),
                    batch_size=config.eval_batch_size, max_len=config.max_len,
                    exclude_seen=honest_exclude_seen(eval_set)).summary()


def metric_k(metric: str) -> int:
    """The cut-off of a validation metric such as ``"ndcg@20"``; raises for any other form."""
    name, _, k = metric.partition("@")
    if name not in ("hr", "ndcg", "mrr") or not k.isdigit() or int(k) < 1:
        raise ValueError(f'TrainConfig.metric must be "hr@K", "ndcg@K" or "mrr@K" with K >= 1, got {metric!r}')
    return int(k)


def validation_users(eval_set: EvalSet, config: TrainConfig) -> EvalSet:
    """The users ``train`` validates on: all of ``eval_set``, or ``config.valid_users`` of them.

    The sample is drawn once per run, seeded by ``config.seed``, in the set's own order, so
    every epoch is compared on the same users. On a large data set (Beauty: 22,363 users)
    full-ranking validation every epoch costs about as much as the epoch itself; a sample of
    a few thousand users picks nearly the same best epoch for a fraction of the time. Test
    metrics are never sampled.
    """
    if config.valid_users is not None and config.valid_users < 1:
        raise ValueError(f"TrainConfig.valid_users must be >= 1 or None, got {config.valid_users}")
    if config.valid_users is None or len(eval_set) <= config.valid_users:
        return eval_set
    rows = np.sort(np.random.default_rng(config.seed).choice(len(eval_set), config.valid_users, replace=False))
    return EvalSet(eval_set.users[rows], [eval_set.histories[i] for i in rows], eval_set.targets[rows])


# TrainConfig fields a resumed run may change: where and how long it runs, not what it learns.
# `epochs` is checked too when the schedule depends on it (cosine decay, warmup_fraction).
UNCHECKED_ON_RESUME = ("checkpoint", "resume", "max_seconds", "eval_batch_size", "epochs", "max_steps",
                       "patience")


def _config_record(config: TrainConfig) -> dict:
    """The fields of ``config`` a checkpoint stores, as plain values (weights_only loads them)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(config).items()}


def _check_resume(saved: dict, config: TrainConfig, data: str, path: Path) -> None:
    """Refuse to resume from a checkpoint written with another configuration or data."""
    stored = saved.get("config", {})
    now = _config_record(config)
    schedule_uses_epochs = config.cosine or config.warmup_fraction > 0
    differ = [f"{k}: {stored.get(k)!r} in the checkpoint, {now[k]!r} now" for k in now
              if (k not in UNCHECKED_ON_RESUME or k in ("epochs", "max_steps") and schedule_uses_epochs)
              and stored.get(k) != now[k]]
    if saved.get("data") != data:
        differ.append("the training data (split.train / split.valid) is not the same")
    if differ:
        raise ValueError(f"cannot resume from {path}: it was written by another run ({'; '.join(differ)}). "
                         f"To start fresh, delete {path}, set resume=False (it is then overwritten) "
                         "or choose another checkpoint path")


def _check_inputs(split: Split, config: TrainConfig, causal: bool) -> None:
    """Fail before training, naming the argument, on input that would fail or mislead later."""
    if len(split.train) == 0:
        raise ValueError("split.train is empty: no training sequences")
    if causal and max(len(s) for s in split.train) < 2:
        raise ValueError(f"no training sequence has 2 items, so there is no next item to learn "
                         f"({len(split.train)} sequences, all of length <= 1)")
    items = np.concatenate([np.asarray(s) for s in split.train])
    if len(items) and (items.min() < 1 or items.max() > split.n_items):
        raise ValueError(f"split.train holds item ids {items.min()}..{items.max()}, outside "
                         f"1..n_items={split.n_items} (0 is PAD)")
    if len(split.valid) == 0:
        raise ValueError("split.valid is empty: nothing to validate on (with leave-one-out every "
                         "user needs 3 interactions)")
    metric_k(config.metric)
    if config.keep not in ("best", "last"):
        raise ValueError(f'TrainConfig.keep must be "best" or "last", got {config.keep!r}')
    if not (math.isfinite(config.lr) and config.lr >= 0):
        raise ValueError(f"TrainConfig.lr must be a finite number >= 0, got {config.lr}")
    if config.epochs < 1 or config.batch_size < 1 or config.max_len < 1:
        raise ValueError(f"TrainConfig epochs, batch_size and max_len must be >= 1, got "
                         f"{config.epochs}, {config.batch_size}, {config.max_len}")
    if config.max_steps is not None and config.max_steps < 1:
        raise ValueError(f"TrainConfig.max_steps must be >= 1 or None, got {config.max_steps}")
    if config.resume and not config.checkpoint:
        raise ValueError("TrainConfig.resume=True needs TrainConfig.checkpoint (the file to resume from)")
    if config.checkpoint and not Path(config.checkpoint).parent.is_dir():
        raise FileNotFoundError(f"the checkpoint folder {Path(config.checkpoint).parent} does not exist; "
                                "create it before training")


def _check_finite(model: nn.Module, epoch: int, lr: float) -> None:
    """Raise (before validation and the checkpoint) if a weight became NaN or infinite."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(f"non-finite weights after epoch {epoch} ({', '.join(bad[:3])}) at "
                                 f"learning rate {lr:g}: lower TrainConfig.lr; nothing was checkpointed")


def load_checkpoint(model: nn.Module, path: str | Path) -> dict:
    """Load the *best* weights stored by :func:`train` into ``model``; return the checkpoint.

    The file is verified against its sha256 sidecar (:mod:`helpers.storage`): a missing,
    empty, truncated or altered checkpoint raises an error that names it.
    """
    state = load_tensors(path)
    model.load_state_dict(state["best_model"])
    return state


def train(model: nn.Module, split: Split, config: TrainConfig, *,
          make_batches: Callable[[Sequence[np.ndarray], TrainConfig], Batches] | None = None,
          progress: bool = True,
          on_epoch: Callable[[nn.Module, dict], None] | None = None) -> TrainResult:
    """Train ``model`` on ``split.train``, early-stop on ``split.valid``, keep the best epoch.

    AdamW, gradient clipping, optional warm-up and cosine decay, mixed precision on CUDA.
    The run trains ``config.planned_epochs(steps per epoch)`` epochs at most (early stopping
    may end it sooner): how long it trains depends on the data and the config, never on the
    machine, so the same commit, config and seed give the same weights under any load. Only
    ``config.max_seconds`` (a learner's cap) can cut a run by the clock: it stops after the
    batch that exhausts the cap, validates that partial epoch, keeps the best epoch seen and
    warns (``result.stopped == "cap"``).
    After every epoch the full training state goes to ``config.checkpoint`` (atomically, with
    a sha256 sidecar, the config and a fingerprint of the data); with ``config.resume`` a
    later call continues from it, and refuses if the config (except the fields in
    :data:`UNCHECKED_ON_RESUME`) or the data differ. Bad input (no training targets, ids out
    of range, no validation targets, a missing checkpoint folder) raises before the first
    step; a non-finite loss stops training at once, naming the step and the learning rate,
    and non-finite weights are never validated or checkpointed. On return the model holds the
    weights of the best validation epoch, or with ``config.keep == "last"`` those of the last
    planned epoch (no early stopping: a refit on train + validation trains a number of epochs
    chosen before it, since its validation targets are now training data). ``on_epoch(model, row)``, if given, runs after each
    epoch with that epoch's log row (a benchmark uses it to follow a test metric).

    Under ``torchrun`` with several processes (:mod:`helpers.distributed`) the model trains
    as ``DistributedDataParallel`` and process r takes batches r, r + world, ... of each
    epoch (the last ``len(batches) % world`` are left out so every process steps equally);
    every process validates, only process 0 writes the checkpoint.
    """
    _check_inputs(split, config, causal=make_batches is None)
    data = fingerprint(split)
    device = default_device()
    seed_everything(config.seed)
    model.to(device)
    rank, world = distributed.setup()
    batches = (make_batches or causal_batches)(split.train, config)
    steps = len(batches) // world  # optimizer steps per epoch, in every process
    if steps == 0:
        raise ValueError(f"{len(batches)} batches per epoch cannot be shared by {world} processes")
    epochs = config.planned_epochs(steps)
    total = epochs * steps
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    warmup = max(config.warmup_steps, round(config.warmup_fraction * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, warmup, config.cosine))
    autocast = amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    config = _fit_to_memory(model, split.n_items, config, device, autocast is not None)
    state = {"epoch": 0, "history": [], "best_epoch": 0, "best_metric": float("-inf"),
             "bad_evals": 0, "best_model": copy.deepcopy(model.state_dict())}
    path = Path(config.checkpoint) if config.checkpoint else None
    if config.resume and path is not None and path.exists():
        saved = load_tensors(path, map_location=device)
        _check_resume(saved, config, data, path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"].cpu())
        if torch.cuda.is_available() and saved["cuda_rng"]:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = {k: saved[k] for k in state}
    hide = quiet(progress) or rank != 0
    net = distributed.wrap(model, world)  # what training calls; `model` itself for one process
    valid = validation_users(split.valid, config)
    started, stopped = time.perf_counter(), "epochs"
    for epoch in range(state["epoch"] + 1, epochs + 1):
        if state["bad_evals"] >= config.patience and config.keep == "best":
            stopped = "patience"
            break
        if stopped == "cap":
            break
        model.train()
        generator = torch.Generator().manual_seed(config.seed + epoch)
        start, total_loss, n_targets = time.perf_counter(), 0.0, 0
        for i, (input_ids, labels) in enumerate(tqdm(batches.epoch(generator), total=steps * world,
                                                     disable=hide, desc=f"epoch {epoch}", leave=False)):
            if i >= steps * world:
                break
            if i % world != rank:  # another process's batch
                continue
            input_ids, labels = input_ids.to(device), labels.to(device)
            try:
                with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                    _, loss = net(input_ids, labels)
            except torch.cuda.OutOfMemoryError as e:
                raise budget.out_of_memory(e, f"a training batch of shape {tuple(input_ids.shape)}") from e
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"the training loss is {value} at epoch {epoch}, step {scheduler.last_epoch + 1} "
                    f"(learning rate {scheduler.get_last_lr()[0]:g}): lower TrainConfig.lr; "
                    "training stopped and nothing non-finite was checkpointed")
            optimizer_step(loss, optimizer, scaler, model.parameters(), config.grad_clip)
            scheduler.step()
            n = int((labels != IGNORE).sum())
            total_loss, n_targets = total_loss + value * n, n_targets + n
            if config.max_seconds is not None and distributed.any_true(
                    time.perf_counter() - started > config.max_seconds, world):
                stopped = "cap"
                break
        total_loss, n_targets = distributed.sum_all([total_loss, n_targets], world)
        _check_finite(model, epoch, scheduler.get_last_lr()[0])
        row = {"epoch": epoch, "loss": total_loss / max(n_targets, 1),
               "seconds": time.perf_counter() - start}
        if epoch % config.eval_every == 0 or epoch == epochs or stopped == "cap":
            model.eval()
            metrics = _validate(model, valid, split.n_items, config)
            row.update({f"valid_{k}": metrics[k] for k in dict.fromkeys(["hr@10", "ndcg@10", config.metric])})
            if config.keep == "last":
                state.update(best_epoch=epoch, best_metric=metrics[config.metric])
            elif metrics[config.metric] > state["best_metric"]:
                state.update(best_epoch=epoch, best_metric=metrics[config.metric], bad_evals=0,
                             best_model=copy.deepcopy(model.state_dict()))
            else:
                state["bad_evals"] += 1
        if on_epoch is not None:
            on_epoch(model, row)
        state["epoch"] = epoch
        state["history"].append(row)
        if not hide:
            tqdm.write("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in row.items()))
        if path is not None and rank == 0:
            save_tensors({**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                          "rng": torch.get_rng_state(),
                          "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                          "config": _config_record(config), "data": data},
                         path)
    if stopped == "cap":
        warnings.warn(f"training was cut after {state['epoch']} of {epochs} epochs by "
                      f"{SECONDS_CAP_ENV}={config.max_seconds:g}: these weights depend on this machine's speed; "
                      f"unset {SECONDS_CAP_ENV} to train the profile's epochs", stacklevel=2)
    if config.keep == "best":
        model.load_state_dict(state["best_model"])
    model.eval()
    return TrainResult(pd.DataFrame(state["history"]), state["best_epoch"], state["best_metric"],
                       config.metric, stopped, epochs)


def plot_history(result: TrainResult, ax=None):
    """Learning curve: training loss (left axis) and the validation metric (right axis)."""
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots()
    h = result.history
    ax.plot(h["epoch"], h["loss"], color="C0", marker=".", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="C0")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
    ax.grid(alpha=0.3)  # one grid, the left axis's: the twin's would not line up with it
    column = f"valid_{result.metric}"
    if column in h:
        right = ax.twinx()
        right.grid(False)
        valid = h.dropna(subset=[column])
        right.plot(valid["epoch"], valid[column], color="C1", marker="o", label=f"validation {result.metric}")
        right.set_ylabel(f"validation {result.metric}", color="C1")
        right.axvline(result.best_epoch, color="C1", linestyle=":", label=f"best epoch {result.best_epoch}")
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        # below the axes: inside, the falling loss and the rising metric leave no free corner
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=3, frameon=False)
    return ax
