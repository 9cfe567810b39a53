"""Click prediction over a base model's candidates, and re-ranking with it.

The source articles frame click prediction as binary classification: given a user and an
item shown to them, will they click? Here the items shown are a base model's (SASRec's) top
K unseen items, the click is the true next item, and every other candidate is a non-click.
A click model scores each (history, candidate) pair from a few features
(:class:`ClickFeatures`); :class:`helpers.rerank.Reranker` then re-orders the K candidates
by that score, and nothing else: HR@K cannot change, only the order inside the top K.

Training data is the validation period only (:func:`candidate_table` on ``split.valid``:
histories ``s[:-2]``, clicks ``s[-2]``), never a test target. Three learners share one
interface (``predict(X) -> (n,)`` scores): :func:`fit_logistic` (scikit-learn),
:func:`fit_mlp` (a small MLP trained with binary cross-entropy) and :func:`fit_lambdarank`
(LightGBM's LambdaMART, which optimises NDCG per user directly).

Features never read the target: :meth:`ClickFeatures.__call__` takes histories and
candidates only, and labels are made afterwards, by :func:`candidate_table`.

The labels are proxies. A real click log records which items a user was *shown* and which one
they clicked; here nobody was shown the K candidates, so a "non-click" is only "not the next
item", and a candidate the user would have clicked had it been shown counts as a negative. A log
of real impressions would give true negatives and position (the same item clicks less lower in
the list, a bias such a log lets one correct), and test clicks would then judge the re-ranker.

Which learner to report: :func:`learner_table` marks the one with the best cross-validated
NDCG@10 on validation, the headline, and gives every learner's paired test differences to the
base order for HR@10 and NDCG@10, with Holm-adjusted p-values over the learners tried.

Letters: B users, T window, K candidates per user, F features, D text width, A attributes,
V = n_items + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers import metrics, stats
from helpers.ids import PAD
from helpers.preprocess import IdMap
from helpers.rerank import Reranker
from helpers.sequences import pad_left
from helpers.split import EvalSet

FEATURES = ("base score", "base gap", "log rank", "text sim", "text sim last", "log popularity",
            "log recent popularity", "genre overlap", "tag overlap", "log history length")


# ---------------------------------------------------------------- item facts
@dataclass
class ItemFacts:
    """What the features know about items, all from training data and item metadata.

    popularity (V,) training interactions; recent (V,) interactions among the last
    ``recent`` items of each training sequence; text (V, D) unit vectors; genres (V, A1)
    and tags (V, A2) multi-hot (row PAD zero).
    """

    popularity: Tensor
    recent: Tensor
    text: Tensor
    genres: Tensor
    tags: Tensor


def multi_hot(items: pd.DataFrame, ids: IdMap, column: str, min_items: int = 1) -> Tensor:
    """(V, A) 0/1 rows of the list column ``column`` (genres, tags) in course id order;
    values on fewer than ``min_items`` items are dropped. Row PAD is zero."""
    table = items.drop_duplicates("item_id").set_index("item_id").loc[ids.items, column]
    lists = [list(dict.fromkeys(v)) if isinstance(v, (list, tuple)) else [] for v in table]
    counts = pd.Series([x for v in lists for x in v], dtype=object).value_counts()
    vocab = {v: j for j, v in enumerate(counts.index[counts >= min_items])}
    out = torch.zeros(len(lists) + 1, len(vocab))
    for i, values in enumerate(lists, start=1):
        out[i, [vocab[v] for v in values if v in vocab]] = 1
    return out


def item_facts(train: Sequence[np.ndarray], n_items: int, text_vectors: Tensor, genres: Tensor,
               tags: Tensor, recent: int = 10) -> ItemFacts:
    """:class:`ItemFacts` from the training sequences (never a validation or test target)."""
    popularity = metrics.item_popularity(train, n_items)
    last = metrics.item_popularity([np.asarray(s)[-recent:] for s in train], n_items)
    return ItemFacts(torch.as_tensor(popularity, dtype=torch.float32), torch.as_tensor(last, dtype=torch.float32),
                     F.normalize(torch.as_tensor(text_vectors, dtype=torch.float32), dim=-1),
                     torch.as_tensor(genres, dtype=torch.float32), torch.as_tensor(tags, dtype=torch.float32))


# ---------------------------------------------------------------- features
def _profile_overlap(attrs: Tensor, input_ids: Tensor, candidates: Tensor) -> Tensor:
    """Cosine between the history's summed attribute vector and each candidate's: (B, K)."""
    profile = F.normalize(attrs[input_ids].sum(1), dim=-1)  # (B, A); PAD rows are zero
    return (F.normalize(attrs[candidates], dim=-1) * profile[:, None, :]).sum(-1)  # (B, K)


class ClickFeatures:
    """``(input_ids (B, T), candidates (B, K), base scores (B, K)) -> (B, K, F)`` features.

    ``candidates`` come best first from the base model (so column ``j`` has rank ``j + 1``)
    and ``base_scores`` are its scores for them. Features (:data:`FEATURES`): the base score
    and its gap to the row's best, log rank, text cosine between the candidate and the
    (``decay``-weighted) mean of the history's text vectors and the last item's, log
    popularity and log recent popularity, genre and tag overlap with the history, and log
    history length (user activity). Nothing here reads a target.
    """

    names = FEATURES

    def __init__(self, facts: ItemFacts, decay: float = 0.8):
        self.facts, self.decay = facts, decay

    @torch.no_grad()
    def __call__(self, input_ids: Tensor, candidates: Tensor, base_scores: Tensor) -> Tensor:
        input_ids, candidates = input_ids.cpu(), candidates.cpu()
        base_scores = base_scores.float().cpu()
        f = self.facts
        B, K = candidates.shape
        real = input_ids != PAD  # (B, T)
        age = real.flip(1).cumsum(1).flip(1) - 1  # (B, T): 0 at the most recent real item
        w = (self.decay ** age.clamp_min(0).float()) * real  # (B, T)
        user = F.normalize((w[..., None] * f.text[input_ids]).sum(1), dim=-1)  # (B, D)
        cand = f.text[candidates]  # (B, K, D)
        last = f.text[input_ids[:, -1]]  # (B, D): left padding puts the latest item last
        rank = torch.arange(1, K + 1, dtype=torch.float32).expand(B, K)
        n = real.sum(1, keepdim=True).float().expand(B, K)
        columns = [base_scores, base_scores - base_scores[:, :1], rank.log(),
                   (cand * user[:, None]).sum(-1), (cand * last[:, None]).sum(-1),
                   f.popularity[candidates].log1p(), f.recent[candidates].log1p(),
                   _profile_overlap(f.genres, input_ids, candidates),
                   _profile_overlap(f.tags, input_ids, candidates), n.log1p()]
        return torch.stack(columns, dim=-1)  # (B, K, F)


def candidates(base, eval_set: EvalSet, n_items: int, k: int = 50,
               batch_size: int = 256) -> tuple[Tensor, Tensor, list[Tensor]]:
    """``(candidates (N, K), base scores (N, K), padded histories)`` for every example: the
    base scorer's top ``k`` items outside the whole history, as :class:`Reranker` picks them."""
    tops, scores, windows = [], [], []
    for start in range(0, len(eval_set), batch_size):
        histories = eval_set.histories[start:start + batch_size]
        width = max(int(base.max_len), max(len(h) for h in histories))
        input_ids = pad_left(histories, width)  # (B, L): every seen item
        all_scores, top, valid = Reranker(base, _no_scores, n_items, k, max_len=width).candidates(input_ids)
        if not valid.all():
            raise ValueError(f"fewer than k={k} unseen items with a finite score for some user")
        tops.append(top)
        scores.append(all_scores.gather(1, top).float())
        windows.append(input_ids)
    return torch.cat(tops), torch.cat(scores), windows


def _no_scores(input_ids: Tensor, candidates: Tensor) -> Tensor:
    return torch.zeros(candidates.shape)


def candidate_table(base, features: ClickFeatures, eval_set: EvalSet, n_items: int,
                    k: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X (N*K, F), clicked (N*K,), group (N*K,))`` for a click model: each example's K
    candidates, label 1 for the example's target (when it is among them), group = example.

    The features are computed first, from histories and candidates only; the targets are
    read afterwards, to make the labels.
    """
    top, scores, windows = candidates(base, eval_set, n_items, k)
    blocks, row = [], 0
    for input_ids in windows:
        B = len(input_ids)
        blocks.append(features(input_ids, top[row:row + B], scores[row:row + B]))
        row += B
    X = torch.cat(blocks).reshape(-1, len(features.names)).numpy()  # (N*K, F)
    clicked = (top == torch.as_tensor(eval_set.targets)[:, None]).reshape(-1).numpy().astype(np.int64)
    group = np.repeat(np.arange(len(eval_set)), k)
    return X, clicked, group


# ---------------------------------------------------------------- learners
class _Standardised:
    """z-scores features with the training mean and std (the MLP and its callers share them)."""

    def __init__(self, X: np.ndarray):
        self.mean, self.std = X.mean(0), X.std(0) + 1e-8

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.std


class LogisticClick:
    """Logistic regression on standardised features (scikit-learn's, L2, ``C``)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, C: float = 1.0):
        from sklearn.linear_model import LogisticRegression

        self.scale = _Standardised(X)
        self.model = LogisticRegression(C=C, max_iter=2000).fit(self.scale(X), y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.decision_function(self.scale(X))


class MLPClick(nn.Module):
    """A small MLP (F -> hidden -> 1) trained with binary cross-entropy, full batch, AdamW.

    Clicks are rare (one per K candidates at most), so the positive term of the loss is
    weighted by ``#non-clicks / #clicks`` (``balance``): unweighted, the network settles on the
    constant "no click" and ranks by noise (validation AUC below 0.5 in our runs).
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, hidden: int = 16, epochs: int = 500, lr: float = 1e-3,
                 weight_decay: float = 1e-2, balance: bool = True, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.scale = _Standardised(X)
        self.net = nn.Sequential(nn.Linear(X.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, 1))
        x = torch.as_tensor(self.scale(X), dtype=torch.float32)  # (n, F)
        t = torch.as_tensor(y, dtype=torch.float32)  # (n,)
        pos_weight = (len(t) - t.sum()) / t.sum().clamp_min(1) if balance else None
        optimizer = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(epochs):
            loss = F.binary_cross_entropy_with_logits(self.net(x)[:, 0], t, pos_weight=pos_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.eval()

    @torch.no_grad()
    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.net(torch.as_tensor(self.scale(X), dtype=torch.float32))[:, 0].numpy()


class LambdaRankClick:
    """LightGBM's lambdarank: gradient-boosted trees that optimise each group's NDCG. The defaults
    (small trees, at least 200 rows a leaf) were chosen by 5-fold validation NDCG@10 on latest-small."""

    def __init__(self, X: np.ndarray, y: np.ndarray, group: np.ndarray, n_estimators: int = 300,
                 learning_rate: float = 0.02, num_leaves: int = 7, min_child_samples: int = 200, seed: int = 0):
        import lightgbm

        sizes = np.unique(group, return_counts=True)[1]  # rows are grouped consecutively
        self.model = lightgbm.LGBMRanker(objective="lambdarank", n_estimators=n_estimators,
                                         learning_rate=learning_rate, num_leaves=num_leaves,
                                         min_child_samples=min_child_samples, subsample=0.8, subsample_freq=1,
                                         colsample_bytree=0.8, random_state=seed, n_jobs=1, verbose=-1)
        self.model.fit(X, y, group=sizes)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)


def fit_logistic(X, y, group=None, **kwargs) -> LogisticClick:
    return LogisticClick(X, y, **kwargs)


def fit_mlp(X, y, group=None, **kwargs) -> MLPClick:
    return MLPClick(X, y, **kwargs)


def fit_lambdarank(X, y, group, **kwargs) -> LambdaRankClick:
    return LambdaRankClick(X, y, group, **kwargs)


LEARNERS = {"logistic": fit_logistic, "mlp": fit_mlp, "lambdarank": fit_lambdarank}


# ---------------------------------------------------------------- evaluation
def auc(scores: np.ndarray, clicked: np.ndarray) -> float:
    """Area under the ROC curve: P(a random click outscores a random non-click), ties half."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(clicked, scores))


def candidate_ndcg(scores: np.ndarray, clicked: np.ndarray, k_cut: int = 10, k: int = 50) -> np.ndarray:
    """(N,) NDCG@k_cut of each example's K candidates re-ordered by ``scores`` (ties keep the
    base order); 0 when the click is not among them. Equals the harness's full-ranking NDCG
    for a :class:`Reranker` with the same candidates."""
    s, c = scores.reshape(-1, k), clicked.reshape(-1, k)
    order = np.argsort(-s, axis=1, kind="stable")
    pos = np.take_along_axis(c, order, 1).argmax(1)  # (N,) position of the click
    hit = c.any(1) & (pos < k_cut)
    return np.where(hit, 1.0 / np.log2(pos + 2), 0.0)


def cross_validate(X: np.ndarray, y: np.ndarray, group: np.ndarray, learner: str, folds: int = 5,
                   seed: int = 0, k: int = 50) -> dict[str, float]:
    """Held-out AUC and re-ranked NDCG@10 of ``learner`` over ``folds`` folds of examples
    (all candidates of one example stay in one fold); plus the base order's NDCG@10."""
    n = group.max() + 1
    fold = np.random.default_rng(seed).permutation(n) % folds
    out = np.zeros(len(y))
    for f in range(folds):
        test = fold[group] == f
        if y[~test].any():  # a fold without a single click to learn from keeps the base order
            out[test] = LEARNERS[learner](X[~test], y[~test], group[~test]).predict(X[test])
        else:
            out[test] = -np.tile(np.arange(k, dtype=np.float64), int(test.sum()) // k)
    base = -np.tile(np.arange(k, dtype=np.float64), n)
    return {"auc": auc(out, y), "ndcg@10": float(candidate_ndcg(out, y, 10, k).mean()),
            "base ndcg@10": float(candidate_ndcg(base, y, 10, k).mean())}


def learner_table(base: dict[str, np.ndarray], reranked: dict[str, dict[str, np.ndarray]],
                  valid_ndcg: dict[str, float], keys: Sequence[str] = ("hr@10", "ndcg@10"),
                  n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per learner: its validation NDCG@10 (``valid_ndcg``, cross-validated), and for each
    metric in ``keys`` the re-ranked test mean, the paired difference to the base order with a
    bootstrap CI over users (``lo``, ``hi``), the Wilcoxon p-value and the Holm-adjusted one over
    all learners. ``base`` and ``reranked[name]``: per-user metric arrays (N,) on the same users.
    Column ``chosen`` marks the learner with the best validation NDCG@10: the headline.
    """
    names = list(reranked)
    table = pd.DataFrame(index=pd.Index(names, name="learner"))
    table["valid NDCG@10"] = [valid_ndcg[n] for n in names]
    table["chosen"] = table.index == table["valid NDCG@10"].idxmax()
    for key in keys:
        rows = [metrics.paired_comparison(reranked[n][key], base[key], n_resamples=n_resamples, seed=seed)
                for n in names]
        table[key] = [r["mean_a"] for r in rows]
        table[f"{key} diff"] = [r["diff"] for r in rows]
        table[f"{key} lo"] = [r["ci_low"] for r in rows]
        table[f"{key} hi"] = [r["ci_high"] for r in rows]
        table[f"{key} p"] = [r["p_wilcoxon"] for r in rows]
        table[f"{key} p Holm"] = stats.holm(table[f"{key} p"].to_numpy())
    return table


def verdict(table: pd.DataFrame, key: str = "ndcg@10") -> str:
    """One line on the chosen learner's paired difference for ``key`` (a :func:`learner_table`)."""
    name = table.index[table["chosen"]][0]
    diff, lo, hi, p = table.loc[name, [f"{key} diff", f"{key} lo", f"{key} hi", f"{key} p Holm"]]
    word = ("better than the base order" if lo > 0 else "worse than the base order" if hi < 0
            else "the interval holds 0: no effect this run can show")
    return f"{name} (chosen on validation), {key}: {diff:+.4f} [{lo:+.4f}, {hi:+.4f}], Holm p {p:.3f}: {word}"


class ClickScorer:
    """The callable :class:`Reranker` asks for: ``(input_ids (B, T), candidates (B, K)) -> (B, K)``
    click scores from ``features`` and a fitted ``model``; the base scores are recomputed."""

    def __init__(self, base, features: ClickFeatures, model):
        self.base, self.features, self.model = base, features, model

    def __call__(self, input_ids: Tensor, candidates: Tensor) -> Tensor:
        window = input_ids[:, max(0, input_ids.shape[1] - self.base.max_len):]
        scores = self.base.score(window).float().cpu().gather(1, candidates.cpu())  # (B, K)
        X = self.features(input_ids, candidates, scores)  # (B, K, F)
        out = self.model.predict(X.reshape(-1, X.shape[-1]).numpy())
        return torch.as_tensor(np.asarray(out, dtype=np.float64)).view(candidates.shape)


def click_reranker(base, features: ClickFeatures, model, n_items: int, k: int, max_len: int) -> Reranker:
    """A course scorer: ``base``'s top ``k`` unseen items re-ordered by the click model.
    ``max_len``: the longest history, so every seen item is excluded from the candidates."""
    return Reranker(base, ClickScorer(base, features, model), n_items, k, max_len)
