"""Cold start that works: text-aware SASRec trained so the text pathway carries items, a
content blend for items nobody has interacted with, and new users with 1-3 events.

Trained with a full softmax, a text-aware SASRec never recommends an item that has no
training interaction: such an item is a negative in every step and never a positive, so the
model learns to score it low, through the shared text projection as well. Three remedies:

* :class:`WarmSoftmaxSASRec` - the training softmax ranks each target only against items
  that have training interactions (``softmax_items``): an item nobody trained on gets no
  gradient at all, and its score comes from what the text projection learned on others.
* :class:`IDDropoutEmbedding` - item-ID dropout: in every training batch a random share
  ``p`` of the items lose their learned ID vector and are seen through their text alone,
  the representation a never-seen item has at inference (``textrec.forget_items``).
* :class:`ColdBlend` - a hybrid scorer: the base model's scores, plus, for items with no
  training interactions only, ``weight`` times the zero-shot content score and an
  ``offset`` (both per-user z-scores), chosen on validation by :func:`choose_blend`.

Validation for cold items: ``textrec.cold_start_split`` validates on warm targets only, and
a validation set whose cold targets are the test's own cold items (:func:`validation_with_cold`)
lets the test items choose the blend. :func:`pseudo_cold_split` instead replays the cold-start
split on the past alone: the test's cold items and every test target removed, the newest (or
random) share of the remaining items made cold. Its cold items are disjoint from the test's;
every cold-start knob (blend weight and offset) is chosen on its test set, with a model trained
on its training set, and then applied once to the real split. :func:`against_content` compares
the result with the zero-shot content model on the same cold-target users, with a paired CI.

New users are measured on users held out of training (:func:`helpers.split.hold_out_users`,
:func:`helpers.slices.first_events`), not here.

Letters: B batch, T time, D text width, H model width, V = n_items + 1 (PAD included).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from helpers import evaluate, metrics, textrec
from helpers.ids import IGNORE, PAD
from helpers.losses import next_item_loss
from helpers.sasrec import SASRec, SASRecConfig
from helpers.split import EvalSet, Split, user_sequences
from helpers.textrec import TextItemEmbedding


def never_trained(split: Split) -> np.ndarray:
    """Sorted item ids 1..n_items that appear in no training sequence."""
    popularity = metrics.item_popularity(split.train, split.n_items)
    return np.flatnonzero(popularity[1:] == 0) + 1


# ---------------------------------------------------------------- training remedies
class IDDropoutEmbedding(TextItemEmbedding):
    """A :class:`~helpers.textrec.TextItemEmbedding` whose ID vectors drop out per batch.

    In training mode, each item keeps its ID vector with probability ``1 - p`` and is
    otherwise represented by ``Linear(text)`` alone; :meth:`resample` draws a new (V, 1) mask,
    and :func:`dropout_text_sasrec` calls it before every training forward, so one batch
    uses one mask for its inputs and its softmax. No rescaling: at inference a warm item has
    text + ID and a never-seen item text only, the two states training saw. Eval mode uses
    every ID vector.
    """

    def __init__(self, text_vectors: Tensor, hidden: int, p: float = 0.5, init_std: float = 0.02):
        if not 0 <= p <= 1:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        super().__init__(text_vectors, hidden, id_embeddings=True, init_std=init_std)
        self.p = p
        self.register_buffer("id_keep", torch.ones(len(self.text), 1), persistent=False)  # (V, 1)

    def resample(self) -> None:
        """Draw which items keep their ID vector in the next training batch."""
        self.id_keep = (torch.rand(len(self.text), 1, device=self.text.device) >= self.p).float()

    @property
    def weight(self) -> Tensor:
        """(V, H): ``Linear(text) + keep * ID`` in training, ``Linear(text) + ID`` in eval."""
        ids = self.ids * self.id_keep if self.training else self.ids
        return (self.proj(self.text) + ids) * self.keep


class WarmSoftmaxSASRec(SASRec):
    """SASRec whose training softmax ranks each target against ``softmax_items`` only.

    ``softmax_items``: the items allowed in the loss (typically every item with a training
    interaction); the others are left out of the denominator, so training never pushes them
    down. ``None`` = every item, as :class:`~helpers.sasrec.SASRec`. Scoring is unchanged:
    every item is ranked at inference. A training label outside ``softmax_items`` raises.
    """

    def __init__(self, config: SASRecConfig, softmax_items: Sequence[int] | np.ndarray | None = None):
        super().__init__(config)
        local = torch.full((config.n_items + 1,), -1, dtype=torch.long)  # item id -> softmax row
        rows = torch.arange(config.n_items + 1)
        if softmax_items is not None:
            rows = torch.cat([torch.tensor([PAD]), torch.as_tensor(np.unique(softmax_items), dtype=torch.long)])
            if rows[1:].min() < 1 or rows[-1] > config.n_items:
                raise ValueError(f"softmax_items must lie in 1..{config.n_items}")
        local[rows] = torch.arange(len(rows))
        self.register_buffer("softmax_rows", rows, persistent=False)  # (V',): PAD first
        self.register_buffer("local_id", local, persistent=False)  # (V,)

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        if labels is None:
            return super().forward(input_ids)
        local = torch.where(labels == IGNORE, labels, self.local_id[labels.clamp_min(0)])  # (B, T)
        if (local == -1).any():
            raise ValueError("a training label is outside softmax_items")
        items = self.item_emb.weight[self.softmax_rows]  # (V', H)
        loss = next_item_loss(self.hidden(input_ids), local, items, self.config.loss, self.config.n_negatives)
        return None, loss


def dropout_text_sasrec(config: SASRecConfig, text_vectors: Tensor, p: float = 0.5,
                        softmax_items: Sequence[int] | np.ndarray | None = None) -> WarmSoftmaxSASRec:
    """A text + ID SASRec trained for cold start: ID dropout ``p`` (:class:`IDDropoutEmbedding`)
    and a softmax over ``softmax_items`` (:class:`WarmSoftmaxSASRec`). ``p = 0`` and
    ``softmax_items=None`` give ``textrec.text_sasrec``'s model."""
    if len(text_vectors) != config.n_items + 1:
        raise ValueError(f"text_vectors has {len(text_vectors)} rows, expected n_items + 1 = {config.n_items + 1}")
    model = WarmSoftmaxSASRec(config, softmax_items)
    model.item_emb = IDDropoutEmbedding(text_vectors, config.hidden, p)
    model.register_forward_pre_hook(lambda m, _: m.item_emb.resample() if m.training else None)
    return model


# ---------------------------------------------------------------- the content blend
class Memo:
    """A scorer that remembers its answers, so a grid search scores each batch once.

    Keyed by the bytes of ``input_ids``; use it for one evaluation set at a time.
    """

    def __init__(self, scorer):
        self.scorer, self.max_len, self._seen = scorer, scorer.max_len, {}

    def score(self, input_ids: Tensor) -> Tensor:
        key = (tuple(input_ids.shape), input_ids.cpu().numpy().tobytes())
        if key not in self._seen:
            self._seen[key] = self.scorer.score(input_ids).float().cpu()
        return self._seen[key]


def _zscore(scores: Tensor) -> Tensor:
    """(B, V) -> per-row z-scores over the finite entries of items 1..n; PAD and -inf -> -inf."""
    scores = scores.clone()
    scores[:, PAD] = float("-inf")
    finite = torch.isfinite(scores)
    x = torch.where(finite, scores, torch.zeros_like(scores))
    n = finite.sum(1, keepdim=True).clamp_min(1)
    mean = x.sum(1, keepdim=True) / n
    var = (torch.where(finite, x - mean, torch.zeros_like(x)) ** 2).sum(1, keepdim=True) / n
    return torch.where(finite, (x - mean) / var.sqrt().clamp_min(1e-12), scores)


class ColdBlend:
    """Base scores for warm items; ``base + weight * content + offset`` for ``cold_items``.

    Both scores are z-scored per user over the items first (a softmax logit and a cosine do
    not share a scale), so ``offset`` is in standard deviations of the base scores. Items
    outside ``cold_items`` keep their base ranking exactly. ``score(input_ids (B, T)) -> (B, V)``.
    """

    def __init__(self, base, content, cold_items: Sequence[int] | np.ndarray, n_items: int,
                 weight: float = 1.0, offset: float = 0.0):
        self.base, self.content, self.n_items = base, content, n_items
        self.weight, self.offset = float(weight), float(offset)
        self.max_len = max(int(base.max_len), int(content.max_len))
        is_cold = torch.zeros(n_items + 1, dtype=torch.bool)
        is_cold[torch.as_tensor(np.asarray(cold_items, dtype=np.int64))] = True
        self.is_cold = is_cold  # (V,)

    def score(self, input_ids: Tensor) -> Tensor:
        """(B, T) -> (B, V) blended scores; the PAD column is -inf."""
        base = _zscore(self.base.score(input_ids[:, -self.base.max_len:])[:, : self.n_items + 1].float().cpu())
        content = _zscore(self.content.score(input_ids[:, -self.content.max_len:]).float().cpu())
        blend = base + self.weight * content + self.offset  # (B, V)
        out = torch.where(self.is_cold, blend, base)
        out[:, PAD] = float("-inf")
        return out


def choose_blend(base, content, cold_items: np.ndarray, eval_set: EvalSet, n_items: int,
                 weights: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0),
                 offsets: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0),
                 metric: str = "ndcg@10") -> tuple[float, float, pd.DataFrame]:
    """``(weight, offset, grid)``: the blend with the best mean ``metric`` on ``eval_set``
    (a validation set with cold targets, see :func:`validation_with_cold`); the grid holds
    every pair's score. Ties go to the first pair in grid order. The offsets reach far up
    because a model trained with the full softmax scores never-trained items several standard
    deviations below the rest."""
    base, content = Memo(base), Memo(content)
    rows = []
    for w, b in itertools.product(weights, offsets):
        result = evaluate.evaluate(ColdBlend(base, content, cold_items, n_items, w, b), eval_set, n_items, ks=(10,))
        rows.append({"weight": w, "offset": b, metric: result.summary()[metric]})
    grid = pd.DataFrame(rows)
    best = grid.loc[grid[metric].idxmax()]
    return float(best["weight"]), float(best["offset"]), grid


def validation_with_cold(df: pd.DataFrame, split: Split, cold_items: np.ndarray) -> EvalSet:
    """Each test user's previous event, cold items kept: history = the warm items before it.

    For a user whose event before the test target is warm this is ``split.valid``'s example;
    where it is a cold item, the target is that cold item and the history is the user's warm
    items before it. Cold targets thus appear at the rate users really met them, and the
    test target never appears. ``df`` is the frame ``textrec.cold_start_split`` was built from.
    """
    is_cold = np.zeros(split.n_items + 1, dtype=bool)
    is_cold[np.asarray(cold_items, dtype=np.int64)] = True
    users, seqs = user_sequences(df)
    by_user = dict(zip(users.tolist(), seqs))
    histories, targets = [], []
    for u in split.test.users.tolist():
        s = by_user[u]
        earlier = s[:-2]
        histories.append(earlier[~is_cold[earlier]])
        targets.append(s[-2])
    keep = np.array([len(h) > 0 for h in histories])
    return EvalSet(split.test.users[keep], [h for h, k in zip(histories, keep) if k],
                   np.asarray(targets, dtype=np.int64)[keep])


def pseudo_cold_split(df: pd.DataFrame, split: Split, cold_items: np.ndarray, cold_fraction: float = 0.1,
                      how: str = "newest", seed: int = 0) -> tuple[Split, np.ndarray]:
    """A cold-start split of the past alone, to choose cold-start knobs on: ``(split, pseudo_cold)``.

    From ``df`` (the frame ``split`` was built from) remove every interaction with
    ``cold_items`` and every test target of ``split`` (each test user's last event); then
    ``textrec.cold_start_split`` with ``cold_fraction`` and ``how`` on what is left (``seed + 1``
    for ``how="random"``, so a random draw differs from the real one). Its cold items are
    disjoint from ``cold_items`` and its test targets are events before the real ones, so a knob
    chosen on it never sees a real test item or target.
    """
    is_cold = df["item_id"].isin(np.asarray(cold_items))
    order = df.sort_values(["user_id", "timestamp"], kind="stable")
    last = order.groupby("user_id").tail(1).index
    is_test = df.index.isin(last) & df["user_id"].isin(split.test.users)
    past = df[~is_cold & ~is_test]
    left = np.unique(past["item_id"].to_numpy())
    n_cold = int(round(cold_fraction * len(left)))
    if how == "newest":
        pseudo = textrec.cold_items_newest(past, split.n_items, n_cold / split.n_items)
    elif how == "random":
        pseudo = np.sort(np.random.default_rng(seed + 1).choice(left, n_cold, replace=False))
    else:
        raise ValueError(f"how must be 'newest' or 'random', got {how!r}")
    return textrec.cold_start_split(past, split.n_items, cold_items=pseudo)


def against_content(result: evaluate.EvalResult, content: evaluate.EvalResult, cold_items: np.ndarray,
                    metric: str = "ndcg@10", n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """``result`` minus the zero-shot ``content`` model on the users whose test target is one of
    ``cold_items`` (the same users for both): ``metrics.paired_comparison``'s dict plus ``users``."""
    if not np.array_equal(result.users, content.users):
        raise ValueError("the two results must hold the same users in the same order")
    at_cold = np.isin(result.targets, np.asarray(cold_items))
    out = metrics.paired_comparison(result.metrics[metric][at_cold], content.metrics[metric][at_cold],
                                    n_resamples=n_resamples, seed=seed)
    return {**out, "users": int(at_cold.sum())}


def cold_reach(result: evaluate.EvalResult, cold_items: np.ndarray, k: int = 10) -> float:
    """Share of users whose top-``k`` holds at least one of ``cold_items``."""
    return float(np.isin(result.top_items[:, :k], np.asarray(cold_items)).any(1).mean())
