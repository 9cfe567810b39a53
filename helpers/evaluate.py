"""The one evaluation harness every model and notebook uses.

Protocol (``protocol="full"``, the default): for each user, the model reads the
last ``max_len`` items of the history (left-padded with PAD) and scores every
item; the target is ranked against **all** items 1..n_items, except the items
already in the user's full history when ``exclude_seen`` is true. Ties count at
their expected value under a random tie-break (see :mod:`helpers.metrics`).

``"uniform100"`` and ``"popular100"`` rank the target against 100 sampled
negatives instead. They exist only to show how much sampled numbers flatter a
model (Krichene & Rendle, KDD 2020); never report them as results.

Letters: B batch, T window (max_len), L longest history in a batch, V = n_items + 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import warnings

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers import metrics
from helpers.ids import PAD
from helpers.sequences import pad_left
from helpers.split import EvalSet

PROTOCOLS = ("full", "uniform100", "popular100")
N_SAMPLED = 100


class RepeatTargetWarning(UserWarning):
    """Some targets are already in their user's history while seen items are excluded."""


class UnrankedItemsWarning(UserWarning):
    """``n_items`` is smaller than the model's catalogue: the items above it are never ranked."""


def repeat_targets(eval_set: EvalSet) -> np.ndarray:
    """(N,) bool: True where the target already occurs in that user's history (a re-consumption)."""
    return np.array([bool(np.any(np.asarray(h) == t)) for h, t in zip(eval_set.histories, eval_set.targets)],
                    dtype=bool)


def honest_exclude_seen(eval_set: EvalSet) -> bool:
    """The ``exclude_seen`` setting that does not flatter models on this data: False when any
    target repeats an item of its history (see :func:`evaluate`), True otherwise."""
    return not repeat_targets(eval_set).any()


@dataclass
class EvalResult:
    """Per-user outcome of :func:`evaluate`; N users, K = the largest cut-off."""

    metrics: dict[str, np.ndarray]  # "hr@10" -> (N,) float64
    users: np.ndarray  # (N,)
    targets: np.ndarray  # (N,)
    top_items: np.ndarray  # (N, K) full-ranking recommendations, best first; 0 = none left
    greater: np.ndarray  # (N,) candidates scored above the target
    ties: np.ndarray  # (N,) other candidates tied with the target
    history_lengths: np.ndarray  # (N,) length of each full history
    protocol: str
    repeats: np.ndarray | None = None  # (N,) True where the target is already in the history

    def by_target_kind(self) -> pd.DataFrame:
        """Every mean metric for new-item and repeat-item targets separately, with user counts."""
        repeats = np.zeros(len(self), dtype=bool) if self.repeats is None else self.repeats
        return metrics.by_group(self.metrics, np.where(repeats, "repeat item", "new item"))

    def __len__(self) -> int:
        return len(self.targets)

    def summary(self) -> dict[str, float]:
        """Mean of every metric: ``{"hr@5": ..., "ndcg@5": ..., "mrr@5": ..., ...}``."""
        return {name: float(values.mean()) for name, values in self.metrics.items()}

    def ci(self, metric: str, level: float = 0.95, n_resamples: int = 1000,
           seed: int = 0) -> tuple[float, float]:
        """Bootstrap confidence interval of one metric's mean over users."""
        return metrics.bootstrap_ci(self.metrics[metric], level, n_resamples, seed)

    def table(self, name: str = "model", ci: Sequence[str] = (), n_resamples: int = 1000) -> pd.DataFrame:
        """One row: the users, every mean, and ``<metric> lo/hi`` columns for metrics in ``ci``."""
        row: dict[str, float] = {"users": len(self), **self.summary()}
        for metric in ci:
            row[f"{metric} lo"], row[f"{metric} hi"] = self.ci(metric, n_resamples=n_resamples)
        return pd.DataFrame([row], index=pd.Index([name], name="model"))


def compare(results: Mapping[str, EvalResult], ci: Sequence[str] = (), n_resamples: int = 1000) -> pd.DataFrame:
    """One row per model, for notebooks: ``compare({"pop": r1, "sasrec": r2}, ci=["ndcg@10"])``."""
    return pd.concat([r.table(name, ci, n_resamples) for name, r in results.items()])


def evaluate(model, eval_set: EvalSet, n_items: int, *, ks: Sequence[int] = (5, 10, 20),
             exclude_seen: bool = True, batch_size: int = 1024, max_len: int | None = None,
             protocol: str = "full", popularity: np.ndarray | None = None, seed: int = 0,
             progress: bool = False, subset: bool = False) -> EvalResult:
    """Rank every target and return per-user HR, NDCG and MRR at each K in ``ks``.

    ``model`` follows the scorer interface: ``max_len`` and ``score(input_ids (B, T))
    -> (B, >= V)``; column 0 (PAD) and columns past n_items (e.g. MASK) are never
    ranked. An ``nn.Module`` is put in eval mode for the pass (its training mode
    is restored after) and receives inputs on the device of its parameters.
    ``max_len`` overrides ``model.max_len``.

    ``exclude_seen``: drop every item of the user's **full** history (not only the
    window the model reads) from the candidates, since recommending what the user
    already has is rarely useful. Set it to False for data with repeat consumption
    (music plays, grocery re-buys, re-watched shows), where the next item is often
    one seen before. The target itself is always a candidate, even when it was
    seen: excluding it would make a correct "buy again" prediction unrankable. The
    price: with exclude_seen=True a repeated target is the only seen item left,
    which flatters models that score seen items highly; on such data prefer
    exclude_seen=False (:func:`honest_exclude_seen` picks it). Such targets are
    found (``EvalResult.repeats``, reported apart by ``EvalResult.by_target_kind()``)
    and, under exclude_seen=True, a :class:`RepeatTargetWarning` says how many.

    ``protocol``: "full" (all items), "uniform100" or "popular100" (100 negatives
    drawn uniformly or in proportion to ``popularity`` (V,) counts, never the target
    nor an excluded item; seeded by ``seed`` for a given ``batch_size``).
    ``top_items`` always come from the full ranking.

    ``n_items`` smaller than the model's own catalogue (``model.config.n_items``) leaves the
    items above it unranked: an :class:`UnrankedItemsWarning` says so unless ``subset=True``
    states it is meant (e.g. the catalogue as it was at an earlier time).
    """
    ks = tuple(int(k) for k in ks)
    max_len = int(model.max_len if max_len is None else max_len)
    targets = np.asarray(eval_set.targets, dtype=np.int64)
    _check(ks, max_len, batch_size, protocol, popularity, targets, n_items, len(eval_set.histories))
    _check_histories(eval_set, n_items)
    model_items = getattr(getattr(model, "config", None), "n_items", None)
    if not subset and isinstance(model_items, int) and model_items > n_items:
        warnings.warn(f"n_items={n_items} but the model knows {model_items} items: items {n_items + 1}.."
                      f"{model_items} are never ranked; pass subset=True if that is meant",
                      UnrankedItemsWarning, stacklevel=2)
    device = _device(model)
    weights = None
    if protocol == "popular100":
        weights = torch.as_tensor(np.asarray(popularity, dtype=np.float64)[: n_items + 1])
        weights = weights.to(device=device, dtype=torch.float32).clone()
        weights[PAD] = 0
    training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    parts, buffers = [], {}
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(targets), batch_size), disable=not progress, desc="evaluate"):
                stop = start + batch_size
                parts.append(_rank_batch(model, eval_set.histories[start:stop], targets[start:stop],
                                         n_items, max_len, max(ks), exclude_seen, device, protocol,
                                         weights, seed, buffers))
    finally:
        if training:
            model.train()
    greater, ties, top = (torch.cat(p).cpu() for p in zip(*parts))
    repeats = repeat_targets(eval_set)
    if exclude_seen and repeats.any():
        warnings.warn(f"{int(repeats.sum())} of {len(repeats)} targets ({repeats.mean():.1%}) are already in "
                      "their user's history: with exclude_seen=True each is the only seen item left "
                      "among the candidates, which flatters models; use exclude_seen=False on data with "
                      "repeats, and EvalResult.by_target_kind() for new and repeat targets apart",
                      RepeatTargetWarning, stacklevel=2)
    return EvalResult(
        metrics=metrics.rank_metrics(greater, ties, ks),
        users=np.asarray(eval_set.users), targets=targets, top_items=top.numpy(),
        greater=greater.numpy(), ties=ties.numpy(),
        history_lengths=np.array([len(h) for h in eval_set.histories], dtype=np.int64),
        protocol=_describe(protocol, n_items, exclude_seen, max_len), repeats=repeats)


def _rank_batch(model, histories, targets, n_items, max_len, k_max, exclude_seen, device, protocol,
                weights, seed, buffers):
    """``(greater (B,), ties (B,), top items (B, K))`` for one batch of users."""
    width = max(max_len, max(len(h) for h in histories))
    full = pad_left(histories, width).to(device)  # (B, L): every seen item, PAD on the left
    out = model.score(full[:, width - max_len:].contiguous())  # (B, T) input == pad_left(h, T)
    if not isinstance(out, torch.Tensor):
        kind = type(out)
        got = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        raise TypeError(f"{type(model).__name__}.score() must return a torch.Tensor (B, V), got {got}; "
                        "return torch.as_tensor(...) of it")
    if out.ndim != 2 or out.shape[0] != len(histories) or out.shape[1] < n_items + 1:
        raise ValueError(f"score() must return (B={len(histories)}, >= {n_items + 1}), got {tuple(out.shape)}")
    dtype = out.dtype if out.is_floating_point() else torch.float64
    scores = _buffer(buffers, "scores", (len(out), n_items + 1), dtype, out.device)
    scores.copy_(out[:, : n_items + 1])  # never write into the model's own tensor
    tgt = torch.as_tensor(targets, device=scores.device)
    seen = full if exclude_seen else full[:, :0]  # (B, L) ids to exclude (PAD is excluded anyway)
    metrics.exclude_items(scores, seen, tgt)
    if protocol == "full":
        work = _buffer(buffers, "work", scores.shape, torch.float32, scores.device)
        greater, ties = metrics.target_ranks(scores, tgt, seen, work)
    else:
        if "generator" not in buffers:  # one stream per evaluate call, on the device of the scores
            buffers["generator"] = torch.Generator(device=scores.device).manual_seed(seed)
        negatives, valid = metrics.sample_negatives(torch.cat([seen, tgt.view(-1, 1)], 1), n_items + 1,
                                                    N_SAMPLED, weights, buffers["generator"])
        greater, ties = metrics.sampled_target_ranks(scores, tgt, negatives, valid)
    values, top = scores.topk(min(k_max, n_items + 1), dim=1)  # (B, K); NaN would come first
    if torch.isnan(values[:, 0]).any():
        raise ValueError("the model returned NaN scores")
    top = top.masked_fill(torch.isneginf(values), PAD)
    if top.shape[1] < k_max:
        top = torch.cat([top, top.new_zeros(len(top), k_max - top.shape[1])], dim=1)
    return greater, ties, top


def _buffer(buffers: dict, name: str, shape: tuple[int, int], dtype, device) -> torch.Tensor:
    """A reusable (B, V) tensor: big fresh allocations cost more than the work done in them."""
    buf = buffers.get(name)
    if buf is None or buf.dtype != dtype or buf.device != device or buf.shape[0] < shape[0]:
        buf = buffers[name] = torch.empty(shape, dtype=dtype, device=device)
    return buf[: shape[0]]


def _device(model) -> torch.device:
    """Where the model's parameters live (CPU for plain scorers)."""
    if isinstance(model, torch.nn.Module):
        param = next(model.parameters(), None)
        if param is not None:
            return param.device
    return torch.device("cpu")


def _check(ks, max_len, batch_size, protocol, popularity, targets, n_items, n_histories) -> None:
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    if max_len < 1 or batch_size < 1:
        raise ValueError(f"max_len and batch_size must be >= 1, got {max_len} and {batch_size}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "popular100" and (popularity is None or len(popularity) < n_items + 1):
        raise ValueError("protocol='popular100' needs popularity counts for items 0..n_items")
    if len(targets) == 0 or len(targets) != n_histories:
        raise ValueError(f"need one history per target, got {n_histories} and {len(targets)}")
    if targets.min() < 1 or targets.max() > n_items:
        raise ValueError(f"targets must be item ids in 1..{n_items}, got {targets.min()}..{targets.max()}")


def _check_histories(eval_set: EvalSet, n_items: int) -> None:
    """Name the first user whose history holds an id outside 0..n_items (before any model sees it)."""
    lengths = np.array([len(h) for h in eval_set.histories], dtype=np.int64)
    flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in eval_set.histories] + [np.zeros(0, np.int64)])
    bad = np.flatnonzero((flat < 0) | (flat > n_items))
    if len(bad):
        row = int(np.searchsorted(np.cumsum(lengths), bad[0], side="right"))
        raise ValueError(f"the history of user {eval_set.users[row]} (row {row}) holds item id {flat[bad[0]]}, "
                         f"outside 1..n_items={n_items}; were the ids reindexed with another IdMap?")


def _describe(protocol: str, n_items: int, exclude_seen: bool, max_len: int) -> str:
    against = (f"all {n_items:,} items" if protocol == "full" else
               f"{N_SAMPLED} {protocol.removesuffix(str(N_SAMPLED))} negatives (sampled: optimistic)")
    seen = "seen items excluded (target kept)" if exclude_seen else "seen items kept"
    return (f"{protocol}: target ranked against {against}; {seen}; window {max_len}; "
            "ties at expected value")
