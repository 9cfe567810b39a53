"""Fine-tuning a pretrained BERT on behaviour written as text.

A stock ``AutoModelForSequenceClassification`` reads a history written as text (see
:mod:`helpers.textdata`) and learns a next-behaviour class (notebook 05, 4a) or, with a
candidate item as the second segment, a click probability (the cross-encoder of
:mod:`helpers.rerank`).

* Three ways to fine-tune (``prepare_model``): every weight (``"full"``), the last encoder
  layers plus pooler and head (``"top"``), or LoRA adapters on query/value (``"lora"``).
* One loop (``fit``): AdamW, linear warm-up then linear decay, gradient clipping, validation
  every ``eval_every`` steps with early stopping, the best trainable weights restored,
  bf16/fp16 autocast on CUDA.

Letters: B batch, L tokens, C classes (C = 1: one click logit trained with BCE).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from datasets import Dataset
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (AutoModelForSequenceClassification, PretrainedConfig, PreTrainedTokenizerBase,
                          get_linear_schedule_with_warmup)

from helpers import behaviour_metrics
from helpers.course import default_device, quiet, seed_everything
from helpers.text import resolve_model
from helpers.textdata import loader
from helpers.train import amp_dtype, optimizer_step

MODES = ("full", "top", "lora")


# ---------------------------------------------------------------- three ways to fine-tune
def prepare_model(model: str | PretrainedConfig, n_labels: int, mode: str = "full", *,
                  top_layers: int = 2, lora_r: int = 8, lora_alpha: int = 16,
                  lora_dropout: float = 0.1) -> nn.Module:
    """A BERT sequence classifier with C = ``n_labels`` outputs and the right weights trainable.

    ``model``: a hub id or local folder (pretrained weights), or a ``BertConfig`` (random
    weights; for tests). ``mode``: ``"full"`` every weight; ``"top"`` the last ``top_layers``
    encoder layers + pooler + classifier; ``"lora"`` LoRA adapters (rank ``lora_r``) on the
    attention's query and value projections, plus the classifier (peft ``modules_to_save``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(model, PretrainedConfig):
        settings = {k: v for k, v in model.to_dict().items() if k not in ("id2label", "label2id")}
        config = model.__class__(**settings, num_labels=n_labels)
        net = AutoModelForSequenceClassification.from_config(config)
    else:
        net = AutoModelForSequenceClassification.from_pretrained(resolve_model(model), num_labels=n_labels)
    if mode == "full":
        return net.requires_grad_(True)
    if mode == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora_r, lora_alpha=lora_alpha,
                            lora_dropout=lora_dropout, target_modules=["query", "value"],
                            modules_to_save=["classifier"])
        with warnings.catch_warnings():  # peft reads a transformers attribute deprecated in 4.5x: not ours to fix
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(net, config)
    layers = net.base_model.encoder.layer
    if not 0 <= top_layers <= len(layers):
        raise ValueError(f"top_layers must be in 0..{len(layers)}, got {top_layers}")
    net.requires_grad_(False)
    for part in [*layers[len(layers) - top_layers:], net.base_model.pooler, net.classifier]:
        if part is not None:
            part.requires_grad_(True)
    return net


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (LoRA: total includes the adapters)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def training_state_bytes(model: nn.Module) -> int:
    """Parameters + gradients + AdamW's two moments, in bytes (activations not included)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return total + 3 * trainable


# ---------------------------------------------------------------- evaluation
def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for C > 1 classes; binary cross-entropy on one click logit when C = 1."""
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


@torch.inference_mode()
def predict(model: nn.Module, batches: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, C), labels (N,))`` over a loader, in eval mode."""
    training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        y = batch.pop("labels")
        logits.append(model(**batch).logits.float().cpu())
        labels.append(y.cpu())
    model.train(training)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``loss`` plus accuracy and macro-F1 (C > 1) or AUC (C = 1, click logits)."""
    out = {"loss": float(loss_fn(torch.from_numpy(logits), torch.from_numpy(labels)))}
    if logits.shape[1] == 1:
        out["auc"] = float(roc_auc_score(labels, logits[:, 0]))
        return out
    pred = logits.argmax(1)
    out["accuracy"] = float(accuracy_score(labels, pred))
    out["macro_f1"] = float(f1_score(labels, pred, average="macro",
                                     labels=np.arange(logits.shape[1]), zero_division=0))
    return out


def majority_baseline(train_labels: np.ndarray, labels: np.ndarray, n_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 of always predicting the most frequent training class."""
    guess = np.full(len(labels), np.bincount(train_labels, minlength=n_labels).argmax())
    return {"accuracy": float(accuracy_score(labels, guess)),
            "macro_f1": float(f1_score(labels, guess, average="macro", labels=np.arange(n_labels),
                                       zero_division=0))}


def macro_f1_gain(pred: np.ndarray, baseline: np.ndarray, labels: np.ndarray, n_labels: int, *,
                  level: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Macro-F1 of ``pred`` minus that of ``baseline`` on the same examples, with a paired
    bootstrap interval (examples resampled with replacement, both scored on each resample).

    Macro-F1 is not a mean over examples, so the interval resamples the whole statistic.
    ``pred``, ``baseline``, ``labels``: (N,) class ids. Returns gain, lo, hi.
    """
    pred, baseline, labels = (np.asarray(a) for a in (pred, baseline, labels))

    def gain(rows: np.ndarray) -> float:
        return (behaviour_metrics.summary(labels[rows], pred[rows], n_labels)["macro_f1"]
                - behaviour_metrics.summary(labels[rows], baseline[rows], n_labels)["macro_f1"])

    rng = np.random.default_rng(seed)
    gains = [gain(rng.integers(0, len(labels), len(labels))) for _ in range(n_resamples)]
    point = gain(np.arange(len(labels)))
    lo, hi = np.quantile(gains, [(1 - level) / 2, (1 + level) / 2])
    return {"gain": float(point), "lo": float(lo), "hi": float(hi)}


def confusion(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    return confusion_matrix(labels, logits.argmax(1), labels=np.arange(logits.shape[1]))


# ---------------------------------------------------------------- the loop
@dataclass
class FinetuneConfig:
    steps: int = 300  # optimizer steps (upper bound; early stopping may end sooner)
    batch_size: int = 16  # examples per step
    eval_batch_size: int = 64  # examples per validation batch
    lr: float = 5e-5  # AdamW peak learning rate (LoRA usually wants ~10x more)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    warmup_fraction: float = 0.1  # linear warm-up over this fraction of steps, then linear decay
    grad_clip: float | None = 1.0  # max global gradient norm; None = no clipping
    eval_every: int = 50  # validate every this many steps (and after the last)
    patience: int = 3  # validations without improvement before stopping
    metric: str = "macro_f1"  # validation metric to maximise: "macro_f1", "accuracy" or "auc"
    seed: int = 0  # seeds the initial state and the shuffling
    amp: bool | None = None  # mixed precision; None = on CUDA only (bf16, else fp16)
    max_seconds: float | None = None  # stop (and validate) once training took this long


@dataclass
class FitResult:
    history: pd.DataFrame  # one row per validation: step, train_loss, seconds, valid_<metric>
    best_step: int  # the step whose weights the model holds after `fit`
    best_metric: float
    seconds_per_step: float  # training only (validation excluded)
    peak_memory: int | None  # torch.cuda.max_memory_allocated in bytes; None on CPU


def fit(model: nn.Module, train_data: Dataset, valid_data: Dataset, tokenizer: PreTrainedTokenizerBase,
        config: FinetuneConfig, progress: bool = True) -> FitResult:
    """Train the trainable weights of ``model`` for ``config.steps`` steps; keep the best.

    Stops early after ``config.patience`` validations without improvement, or once the
    training steps took ``config.max_seconds`` (a time budget).

    The training set is cycled (reshuffled each pass). Validation every ``eval_every`` steps
    picks the best step by ``config.metric``; on return the model holds that step's weights.
    """
    if len(train_data) == 0:
        raise ValueError("no training examples")
    device = default_device()
    seed_everything(config.seed)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_fraction * config.steps),
                                                config.steps)
    autocast = amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    valid = loader(valid_data, tokenizer, config.eval_batch_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best = {"step": 0, "metric": float("-inf"), "state": _trainable_state(model)}
    rows, bad, train_seconds, losses, step, epoch = [], 0, 0.0, [], 0, 0
    hide = quiet(progress)
    bar = tqdm(total=config.steps, disable=hide, desc="fine-tune")
    last = False
    while not last and bad < config.patience:
        for batch in loader(train_data, tokenizer, config.batch_size, shuffle=True, seed=config.seed + epoch):
            start = time.perf_counter()
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss = loss_fn(model(**batch).logits, labels)
            optimizer_step(loss, optimizer, scaler, params, config.grad_clip)
            scheduler.step()
            losses.append(loss.item())
            train_seconds += time.perf_counter() - start
            step += 1
            bar.update()
            last = step == config.steps or (config.max_seconds is not None
                                            and train_seconds >= config.max_seconds)
            if step % config.eval_every == 0 or last:
                metrics = scores(*predict(model, valid))
                rows.append({"step": step, "train_loss": float(np.mean(losses)), "seconds": train_seconds,
                             **{f"valid_{k}": v for k, v in metrics.items()}})
                losses = []
                bar.set_postfix({config.metric: f"{metrics[config.metric]:.4f}"})
                if metrics[config.metric] > best["metric"]:
                    best, bad = {"step": step, "metric": metrics[config.metric],
                                 "state": _trainable_state(model)}, 0
                else:
                    bad += 1
            if last or bad >= config.patience:
                break
        epoch += 1
    bar.close()
    _load_trainable(model, best["state"])
    model.eval()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return FitResult(pd.DataFrame(rows), best["step"], best["metric"], train_seconds / max(step, 1), peak)


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable tensors only (the frozen ones never change)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def _load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        if name in state:
            param.copy_(state[name])
