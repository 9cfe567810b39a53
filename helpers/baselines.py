"""Count-based baselines: popularity, a first-order Markov chain and item-kNN.

Each follows the scorer interface of :mod:`helpers.evaluate`: ``fit(sequences,
n_items)`` on the training sequences only, a ``max_len`` attribute, and
``score(input_ids)`` mapping a left-padded ``(B, T)`` LongTensor to a ``(B, V)``
FloatTensor with ``V = n_items + 1`` and column ``PAD`` at ``-inf``.

The first two are the softmax formulation with counts instead of a network:
``MostPopular`` scores ``log P(x)`` and ``MarkovChain`` scores
``log P(x_{t+1} | x_t)``, both normalised log-counts, so the softmax of a score
row is the model's distribution over the next item. ``ItemKNN`` scores are
similarities, not log-probabilities; only their order matters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from helpers.ids import PAD
from helpers.sequences import item_pairs


def _check_sequences(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Concatenate ``sequences`` after checking every id is a real item (1..n_items)."""
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items}")
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences] or [np.empty(0, np.int64)])
    if flat.size and (flat.min() < 1 or flat.max() > n_items):
        raise ValueError(f"item ids must lie in 1..{n_items} (PAD never appears in a sequence)")
    return flat


def _check_input(input_ids: torch.Tensor, fitted: bool) -> None:
    if not fitted:
        raise RuntimeError("call fit(sequences, n_items) before score")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")


def _with_pad_column(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, V) float32 tensor whose PAD column is -inf, so PAD is never ranked (may reuse memory)."""
    out = torch.as_tensor(values, dtype=torch.float32)
    out[:, PAD] = float("-inf")
    return out


class MostPopular:
    """``score = log P(x)`` with ``P(x) = (count(x) + smoothing) / (N + smoothing * n_items)``.

    The same ranking for every user: a softmax over smoothed log-counts.

    ``include`` picks which interactions of the sequences *as given* are counted:
    ``"all"`` counts every one, ``"targets"`` only those that are a next item
    (each sequence's first item is skipped), which is what a model trained on
    (prefix -> next item) pairs sees. Which sequences to pass is a protocol detail
    that moves published numbers: under leave-one-out, ``split.train`` counts the
    training part only, while ``split.test.histories`` also counts each user's
    validation interaction.
    """

    max_len = 1  # reads nothing, but the harness needs a window

    def __init__(self, smoothing: float = 1.0, include: str = "all"):
        if smoothing < 0:
            raise ValueError("smoothing must be >= 0")
        if include not in ("all", "targets"):
            raise ValueError("include must be 'all' or 'targets'")
        self.smoothing = smoothing
        self.include = include
        self.counts: np.ndarray | None = None  # (V,) counts, counts[PAD] = 0

    def fit(self, sequences: Sequence[np.ndarray], n_items: int) -> MostPopular:
        """Count item occurrences in ``sequences`` (item ids 1..n_items)."""
        flat = _check_sequences(sequences, n_items)
        if self.include == "targets":
            flat = np.concatenate([np.asarray(s, dtype=np.int64)[1:] for s in sequences] or [flat])
        self.n_items = n_items
        self.counts = np.bincount(flat, minlength=n_items + 1).astype(np.float64)
        return self

    @property
    def probabilities(self) -> torch.Tensor:
        """(V,) P(item); ``probabilities[PAD] = 0`` and the rest sums to 1."""
        if self.counts is None:
            raise RuntimeError("call fit(sequences, n_items) before probabilities")
        p = self.counts + self.smoothing
        p[PAD] = 0.0
        if p.sum() == 0:
            raise ValueError("no interactions counted and smoothing = 0: popularity is undefined")
        return torch.from_numpy(p / p.sum())

    def log_probs(self) -> torch.Tensor:
        """(V,) log P(item), ``-inf`` at PAD (and at unseen items when smoothing = 0)."""
        with np.errstate(divide="ignore"):
            return torch.log(self.probabilities)

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, V): the same log-probability row for every user."""
        _check_input(input_ids, self.counts is not None)
        return _with_pad_column(self.log_probs().float().repeat(input_ids.shape[0], 1))


class MarkovChain:
    """First-order Markov chain: ``score = log P(x_{t+1} = j | x_t = i)`` from the last item only.

    ``P(j | i) = (C[i, j] + alpha + prior * P_pop(j)) / (C[i] + alpha * n_items + prior)``,
    where ``C[i, j]`` counts ``i -> j`` steps in the training sequences and
    ``C[i]`` is its row sum. ``alpha`` is additive (Laplace-style) smoothing;
    ``prior`` interpolates with the popularity of next items ``P_pop`` (smoothed
    by one), with weight ``prior / (C[i] + prior)``: a previous item never seen
    (or an all-PAD history) backs off to popularity. With ``alpha = prior = 0``
    a row without counts also backs off to popularity.
    """

    max_len = 1  # reads only the most recent item

    def __init__(self, alpha: float = 0.0, prior: float = 1.0):
        if alpha < 0 or prior < 0:
            raise ValueError("alpha and prior must be >= 0")
        self.alpha = alpha
        self.prior = prior
        self.counts: sp.csr_matrix | None = None  # (V, V) transition counts

    def fit(self, sequences: Sequence[np.ndarray], n_items: int) -> MarkovChain:
        """Count consecutive pairs ``(s[t], s[t+1])`` in every sequence."""
        _check_sequences(sequences, n_items)
        prev, nxt = item_pairs(sequences, gap=1)
        v = n_items + 1
        self.n_items = n_items
        ones = np.ones(len(prev), dtype=np.float32)
        self.counts = sp.csr_matrix((ones, (prev, nxt)), shape=(v, v))  # repeated pairs are summed
        self.row_totals = np.asarray(self.counts.sum(axis=1)).ravel()  # (V,)
        self.popularity = MostPopular(smoothing=1.0, include="targets").fit(sequences, n_items)
        return self

    def transition_probs(self, prev_items: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B,) previous item ids -> (B, V) P(next | previous); column PAD is 0, rows sum to 1."""
        if self.counts is None:
            raise RuntimeError("call fit(sequences, n_items) before transition_probs")
        prev = np.asarray(torch.as_tensor(prev_items), dtype=np.int64).reshape(-1)
        if prev.size and (prev.min() < 0 or prev.max() > self.n_items):
            raise ValueError(f"previous items must lie in 0..{self.n_items}")
        pop = self.popularity.probabilities.float()  # (V,), pop[PAD] = 0
        base = self.alpha + self.prior * pop  # (V,) what every row gets on top of its counts
        base[PAD] = 0.0
        denom = torch.from_numpy(self.row_totals[prev] + self.alpha * self.n_items + self.prior).float()
        probs = torch.from_numpy(self.counts[prev].toarray())  # (B, V) float32
        probs.add_(base).div_(denom.unsqueeze(1))
        empty = denom == 0  # alpha = prior = 0 and no counts: back off to popularity
        probs[empty] = pop
        return probs

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, V) log P(next | input_ids[:, -1]); earlier columns are ignored."""
        _check_input(input_ids, self.counts is not None)
        return _with_pad_column(self.transition_probs(input_ids[:, -1].cpu()).log_())


class ItemKNN:
    """Item-item cosine neighbours, scored as a recency-weighted sum over the history.

    Co-occurrence ``C[i, j]`` counts users holding both items (``window=None``) or
    pairs at most ``window`` steps apart in a sequence (either order). Similarity
    ``S[i, j] = C[i, j] / sqrt(f_i * f_j)``, with ``f`` the number of users holding
    the item (``window=None``, the usual cosine of binary user vectors) or the
    item's occurrence count; ``S[i, i] = 0`` and only each item's ``neighbours``
    largest similarities are kept. For a history ``h_1..h_T`` (most recent last)
    ``score(j) = sum_t decay**(T - t) * S[h_t, j]`` over the last ``max_len`` items
    (``decay = 1`` weighs the whole window equally).
    """

    def __init__(self, neighbours: int | None = 100, window: int | None = None,
                 max_len: int = 20, decay: float = 0.5):
        if neighbours is not None and neighbours < 1:
            raise ValueError("neighbours must be >= 1 or None (keep all)")
        if window is not None and window < 1:
            raise ValueError("window must be >= 1 or None (whole sequence)")
        if max_len < 1 or not 0 < decay <= 1:
            raise ValueError("need max_len >= 1 and 0 < decay <= 1")
        self.neighbours = neighbours
        self.window = window
        self.max_len = max_len
        self.decay = decay
        self.similarity: sp.csr_matrix | None = None  # (V, V), row = history item

    def fit(self, sequences: Sequence[np.ndarray], n_items: int) -> ItemKNN:
        """Build the sparse top-``neighbours`` cosine similarity from ``sequences``."""
        flat = _check_sequences(sequences, n_items)
        v = n_items + 1
        self.n_items = n_items
        if self.window is None:
            owner = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
            x = sp.csr_matrix((np.ones(len(flat)), (owner, flat)), shape=(len(sequences), v))
            x.data[:] = 1.0  # a user holds an item or not: binary user vectors
            co = (x.T @ x).tocsr()
            freq = np.asarray(x.sum(axis=0)).ravel()
        else:
            pairs = [item_pairs(sequences, gap) for gap in range(1, self.window + 1)]
            a = np.concatenate([p[0] for p in pairs])
            b = np.concatenate([p[1] for p in pairs])
            co = sp.csr_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(v, v))
            freq = np.bincount(flat, minlength=v).astype(np.float64)
        co = (co - sp.diags(co.diagonal())).tocsr()  # an item is not its own neighbour
        co.eliminate_zeros()
        inv = np.zeros(v)
        inv[freq > 0] = 1.0 / np.sqrt(freq[freq > 0])
        sim = (sp.diags(inv) @ co @ sp.diags(inv)).astype(np.float32)
        self.similarity = self._top_neighbours(sim.tocsr())
        return self

    def _top_neighbours(self, sim: sp.csr_matrix) -> sp.csr_matrix:
        """Keep the ``neighbours`` largest entries of each row (ties: lower item id first)."""
        if self.neighbours is None:
            return sim
        rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
        order = np.lexsort((sim.indices, -sim.data, rows))  # by row, then similarity desc
        rank = np.arange(len(order)) - sim.indptr[rows[order]]  # position within its row
        keep = order[rank < self.neighbours]
        return sp.csr_matrix((sim.data[keep], (rows[keep], sim.indices[keep])), shape=sim.shape)

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, V) weighted neighbour sums over the last ``max_len`` items."""
        _check_input(input_ids, self.similarity is not None)
        ids = input_ids[:, -self.max_len:].cpu().numpy()  # (B, T')
        if ids.size and (ids.min() < 0 or ids.max() > self.n_items):
            raise ValueError(f"input ids must lie in 0..{self.n_items}")
        b, t = ids.shape
        age = np.arange(t - 1, -1, -1, dtype=np.float32)  # (T',) 0 for the most recent item
        weights = self.decay**age * (ids != PAD)  # (B, T'), PAD weighs nothing
        rows = np.repeat(np.arange(b), t)
        history = sp.csr_matrix((weights.ravel(), (rows, ids.ravel())), shape=(b, self.n_items + 1))
        return _with_pad_column((history @ self.similarity).toarray())  # (B, V)
