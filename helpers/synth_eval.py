"""Judging generated (synthetic) item sequences against real ones, on four counts.

* **fidelity**: do they look like the real data? Distances between item-popularity,
  length and first-order transition distributions (total variation and Jensen-Shannon,
  both 0 for identical sets), and the AUC of a held-out two-sample classifier
  (0.5 = it cannot tell them apart, 1 = it always can);
* **usefulness**: train on synthetic, test on real (TSTR): a model trained only on the
  generated sequences, evaluated with the course's harness on the real test targets;
* **privacy**: do they copy real users? The share of generated n-grams found in some
  real sequence, the longest run copied from one, and the Jaccard distance of each
  generated sequence to its nearest real one (0 = a real user's item set, copied);
* **diversity**: distinct items, catalogue coverage, distinct n-grams.

Sequences are lists of arrays of item ids 1..n_items (no PAD), oldest first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import scipy.sparse as sp
from scipy.spatial.distance import jensenshannon
from sklearn.feature_extraction import FeatureHasher
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from threadpoolctl import threadpool_limits

from helpers.metrics import item_popularity
from helpers.split import Split

Sequences = Sequence[np.ndarray]


# ---------------------------------------------------------------- fidelity
def distribution_distance(p: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """Total variation ``0.5 * sum |p - q|`` and Jensen-Shannon divergence (base 2) of two
    count or probability vectors of the same shape; both lie in [0, 1], 0 iff equal."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("need two non-empty count vectors of the same shape")
    p, q = p / p.sum(), q / q.sum()
    return {"tv": 0.5 * float(np.abs(p - q).sum()), "js": float(jensenshannon(p, q, base=2) ** 2)}


def popularity_distance(real: Sequences, generated: Sequences, n_items: int) -> dict[str, float]:
    """Distance between the item-popularity distributions (share of all interactions)."""
    return distribution_distance(item_popularity(real, n_items), item_popularity(generated, n_items))


def length_distance(real: Sequences, generated: Sequences) -> dict[str, float]:
    """Distance between the sequence-length distributions."""
    n = 1 + max(max(map(len, real)), max(map(len, generated)))
    return distribution_distance(np.bincount(list(map(len, real)), minlength=n),
                                 np.bincount(list(map(len, generated)), minlength=n))


def transitions(sequences: Sequences, n_items: int) -> sp.csr_matrix:
    """(V, V) sparse counts of consecutive pairs: entry (a, b) = how often b follows a."""
    pairs = [np.stack([s[:-1], s[1:]]) for s in sequences if len(s) > 1]
    a, b = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), dtype=np.int64)
    return sp.csr_matrix((np.ones(len(a)), (a, b)), shape=(n_items + 1, n_items + 1))


def transition_distance(real: Sequences, generated: Sequences, n_items: int) -> dict[str, float]:
    """Distance between the first-order transition (bigram) distributions over item pairs."""
    both = (transitions(real, n_items) + transitions(generated, n_items)).tocoo()  # the pairs seen
    p = np.asarray(transitions(real, n_items)[both.row, both.col]).ravel()
    q = np.asarray(transitions(generated, n_items)[both.row, both.col]).ravel()
    return distribution_distance(p, q)


def _features(sequences: Sequences) -> sp.csr_matrix:
    """Hashed bag of items and of consecutive pairs, plus the length, per sequence."""
    tokens = [[f"i{a}" for a in s] + [f"b{a}_{b}" for a, b in zip(s[:-1], s[1:])] for s in sequences]
    bag = FeatureHasher(n_features=2**14, input_type="string", alternate_sign=False).transform(tokens)
    length = sp.csr_matrix(np.log1p([[len(s)] for s in sequences]))
    return sp.hstack([bag, length]).tocsr()


def two_sample_auc(real: Sequences, generated: Sequences, *, folds: int = 5, seed: int = 0) -> float:
    """Held-out AUC of a classifier telling real from generated sequences.

    Logistic regression on hashed item and item-pair counts and the length, scored by
    ``folds``-fold cross-validation (every sequence is scored by a model that never saw it;
    identical sequences share a fold, so a generated copy of a real sequence is never
    judged by a model trained on its twin with the other label). The larger set is
    subsampled to the smaller one's size. 0.5 = indistinguishable.
    """
    rng = np.random.default_rng(seed)
    n = min(len(real), len(generated))
    if n < folds:
        raise ValueError(f"need at least {folds} sequences in each set")
    pick = lambda seqs: [seqs[i] for i in rng.choice(len(seqs), n, replace=False)]  # noqa: E731
    seqs = pick(real) + pick(generated)
    x, y = _features(seqs), np.r_[np.ones(n), np.zeros(n)]
    groups = np.unique([np.asarray(s, dtype=np.int64).tobytes() for s in seqs], return_inverse=True)[1]
    fold_of_group = rng.permutation(groups.max() + 1) % folds  # a random fold per distinct sequence
    cv = PredefinedSplit(fold_of_group[groups])
    classifier = LogisticRegression(C=1.0, solver="liblinear")
    with threadpool_limits(1):  # tiny problems: BLAS threads only contend for the cores
        p = cross_val_predict(classifier, x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def true_log_likelihood(truth, sequences: Sequences, batch_size: int = 2048) -> np.ndarray:
    """(N,) log-probability of each sequence under a known true model (synthetic data):
    ``sum_t log P_true(y_t | y_<t)``, the first item included, from ``truth.oracle_scores``
    (:class:`helpers.synthetic.SyntheticModel`, or anything with that method)."""
    owner = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    prefixes = [s[:t] for s in sequences for t in range(len(s))]
    targets = np.concatenate(sequences)
    logp = np.empty(len(targets))
    for i in range(0, len(targets), batch_size):
        probs = truth.oracle_scores(prefixes[i:i + batch_size])  # (b, V)
        logp[i:i + batch_size] = np.log(probs[np.arange(len(probs)), targets[i:i + batch_size]])
    return np.bincount(owner, weights=logp, minlength=len(sequences))


# ---------------------------------------------------------------- privacy
def _ngrams(s: np.ndarray, n: int) -> set[bytes]:
    s = np.ascontiguousarray(s, dtype=np.int64)
    return {s[i:i + n].tobytes() for i in range(len(s) - n + 1)}


def copied_ngrams(generated: Sequences, real: Sequences, n: int) -> float:
    """Share of the generated n-grams (n consecutive items) found in some real sequence."""
    real_set = set().union(*(_ngrams(s, n) for s in real))
    found = [g in real_set for s in generated for g in _ngrams(s, n)]
    return float(np.mean(found)) if found else 0.0


def longest_copied_run(generated: Sequences, real: Sequences) -> np.ndarray:
    """(N,) for each generated sequence, the longest run of consecutive items that also
    appears, in that order and contiguously, in some real sequence (0 = not one item)."""
    best = np.zeros(len(generated), dtype=np.int64)
    n, alive = 1, np.arange(len(generated))
    while len(alive):
        real_set = set().union(*(_ngrams(s, n) for s in real if len(s) >= n))
        hit = np.array([any(g in real_set for g in _ngrams(generated[i], n)) for i in alive], dtype=bool)
        best[alive[hit]] = n
        alive, n = alive[hit], n + 1  # a copied run of n + 1 contains one of n
    return best


def nearest_real_distance(generated: Sequences, real: Sequences, n_items: int) -> np.ndarray:
    """(N,) Jaccard distance between each generated sequence's item set and the nearest
    real sequence's item set; 0 = exactly some real user's items."""
    def onehot(seqs: Sequences) -> sp.csr_matrix:
        rows = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
        m = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(seqs))), shape=(len(seqs), n_items + 1))
        m.data[:] = 1.0  # a set: repeated items count once
        return m
    g, r = onehot(generated), onehot(real)
    inter = (g @ r.T).toarray()  # (N, R)
    union = np.asarray(g.sum(1)) + np.asarray(r.sum(1)).T - inter  # (N, R)
    return 1.0 - (inter / np.maximum(union, 1)).max(1)


# ---------------------------------------------------------------- diversity
def diversity(sequences: Sequences, n_items: int, n: int = 2) -> dict[str, float]:
    """Distinct items, their share of the catalogue (coverage), and distinct-n: the share
    of the n-grams that are distinct (1 = no n-gram repeats across sequences)."""
    items = np.unique(np.concatenate(sequences))
    grams = [g for s in sequences for g in (s[i:i + n].tobytes() for i in range(len(s) - n + 1))]
    return {"distinct_items": float(len(items)), "coverage": len(items) / n_items,
            f"distinct_{n}": len(set(grams)) / max(len(grams), 1)}


# ---------------------------------------------------------------- usefulness and the whole report
def train_on(sequences: Sequences, split: Split, fit: Callable[[Split], object], **evaluate_kw) -> dict[str, float]:
    """Train-on-X, test-on-real: ``fit`` a model on a copy of ``split`` whose training
    sequences are ``sequences`` (validation stays real), and return its harness summary
    on the real test targets. With ``sequences = split.train`` this is the real baseline."""
    from helpers.evaluate import evaluate

    model = fit(replace(split, train=list(sequences)))
    return evaluate(model, split.test, split.n_items, **evaluate_kw).summary()


def report(real: Sequences, generated: Sequences, n_items: int, *, n: int = 3, seed: int = 0) -> dict[str, float]:
    """Every fidelity, privacy and diversity number for one generated set, as one table row.

    Fidelity and privacy are both measured against ``real``. For a memorisation check, the
    privacy columns must see every sequence the generator trained on: when ``real`` is only
    a reference sample (say half of the users, to compare with the other half), recompute
    :func:`copied_ngrams`, :func:`longest_copied_run` and :func:`nearest_real_distance`
    against the whole training set (notebook 06 does).
    """
    return {
        "popularity_js": popularity_distance(real, generated, n_items)["js"],
        "popularity_tv": popularity_distance(real, generated, n_items)["tv"],
        "length_tv": length_distance(real, generated)["tv"],
        "transition_tv": transition_distance(real, generated, n_items)["tv"],
        "two_sample_auc": two_sample_auc(real, generated, seed=seed),
        f"copied_{n}grams": copied_ngrams(generated, real, n),
        "longest_copy_median": float(np.median(longest_copied_run(generated, real))),
        "nearest_real_jaccard": float(np.mean(nearest_real_distance(generated, real, n_items))),
        **diversity(generated, n_items, n=2),
    }
