"""Synthetic user sequences whose true next-item distribution is known exactly.

The generative story (items ``1..n_items``, ``PAD = 0``):

1. each item belongs to one of ``n_genres`` genres; inside a genre, popularity
   follows Zipf's law (the k-th most popular item gets weight ``1 / k ** zipf``);
2. users come in ``n_types`` taste types; type ``c`` has a genre preference
   ``theta_c ~ Dirichlet(alpha)``, hence an item distribution
   ``p_c[j] = theta_c[genre(j)] * popularity-within-genre(j)``; each user draws a type;
3. a sparse first-order Markov matrix ``M`` gives each item ``n_successors`` likely
   successors;
4. a user's first item is drawn from ``p_c``; every later one from
   ``markov_weight * M[previous] + (1 - markov_weight) * p_c``, restricted to items
   the user has not seen yet (no repeats, as in MovieLens) and renormalised.

Because tastes are a finite set of types, the posterior over a user's type given a
history is an exact sum over ``n_types`` terms, so :meth:`SyntheticModel.oracle_scores`
is the exact Bayes-optimal next-item distribution given the history alone: no model
that reads only the history can beat it on average.

Shapes: B users in a batch, T history length, V = n_items + 1, C = n_types,
G = n_genres, S = n_successors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from helpers.ids import PAD
from helpers.sequences import pad_left


@dataclass
class SyntheticConfig:
    n_users: int = 1000
    n_items: int = 200  # items 1..n_items
    n_genres: int = 8
    n_types: int = 16  # distinct user tastes
    alpha: float = 0.3  # Dirichlet concentration of tastes: small = users stick to few genres
    zipf: float = 1.0  # popularity exponent inside a genre
    markov_weight: float = 0.5  # weight of the Markov successor against the taste
    n_successors: int = 3  # non-zero entries per row of the transition matrix
    min_len: int = 5  # shortest sequence
    mean_len: float = 20.0  # mean sequence length (geometric tail, clipped)
    max_len: int = 50  # longest sequence; must be <= n_items (no repeats)
    seed: int = 0


def _sample_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per row of non-negative ``weights`` (N, K), drawn by inverse CDF."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(len(weights))[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(1), weights.shape[1] - 1)


@dataclass
class SyntheticModel:
    """The true model behind a synthetic data set; also a scorer (``max_len``, ``score``)."""

    genre: np.ndarray  # (V,) genre of each item; -1 for PAD
    popularity: np.ndarray  # (V,) popularity of each item inside its genre (sums to 1 per genre)
    taste: np.ndarray  # (C, G) genre preference theta_c of each type
    type_prior: np.ndarray  # (C,) probability of each type
    successors: np.ndarray  # (V, S) the items M[i] can move to; row PAD unused
    successor_probs: np.ndarray  # (V, S) their probabilities; row PAD all zero
    markov_weight: float
    user_types: np.ndarray  # (U + 1,) type of each generated user id; entry 0 unused (-1)
    max_len: int  # the longest history it reads: the longest generated sequence

    @property
    def n_items(self) -> int:
        return len(self.genre) - 1

    @property
    def type_items(self) -> np.ndarray:
        """(C, V) item distribution p_c of each type; column PAD is 0."""
        out = self.taste[:, np.maximum(self.genre, 0)] * self.popularity
        out[:, PAD] = 0.0
        return out

    @property
    def transition(self) -> np.ndarray:
        """(V, V) the Markov matrix M as a dense array (for plots and checks)."""
        out = np.zeros((len(self.genre),) * 2)
        np.put_along_axis(out, self.successors, self.successor_probs, axis=1)
        out[PAD] = 0.0
        return out

    def oracle_scores(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> np.ndarray:
        """The true distribution of the next item after each history: (B, V), rows sum to 1.

        Without ``users`` the user's type is unknown and is averaged over its exact
        posterior given the history (the best any history-only model can do). With
        ``users`` (generated user ids) their true types are used: a ceiling that
        knows more than any model is shown.
        """
        x = pad_left(histories, max(1, max((len(h) for h in histories), default=0))).numpy()  # (B, T)
        p = self.type_items  # (C, V)
        if users is None:
            log_post = np.log(self.type_prior) + self._log_likelihood(x, p)  # (B, C)
            post = np.exp(log_post - log_post.max(1, keepdims=True))
            post /= post.sum(1, keepdims=True)
        else:
            post = np.eye(len(self.type_prior))[self.user_types[np.asarray(users)]]
        unseen = np.ones(x.shape[0:1] + (self.n_items + 1,))  # (B, V)
        np.put_along_axis(unseen, x, 0.0, axis=1)  # also zeroes PAD
        last = x[:, -1]
        w = self.markov_weight * (last != PAD)[:, None]  # (B, 1): no Markov step without a last item
        markov = np.zeros_like(unseen)
        np.put_along_axis(markov, self.successors[last], self.successor_probs[last], axis=1)
        markov *= unseen  # (B, V)
        z = w * markov.sum(1, keepdims=True) + (1 - w) * (unseen @ p.T)  # (B, C): mass left per type
        weight = post / z  # (B, C)
        return (w * markov * weight.sum(1, keepdims=True)) + (1 - w) * (weight @ p) * unseen

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Scorer interface: (B, T) left-padded ids -> (B, V) true probabilities."""
        rows = [r[r != PAD] for r in input_ids.cpu().numpy()]
        return torch.from_numpy(self.oracle_scores(rows)).float()

    def _log_likelihood(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """log P(history | type) for left-padded histories x (B, T) -> (B, C)."""
        b, t = x.shape
        seen = np.zeros((b, self.n_items + 1), dtype=bool)
        out = np.zeros((b, len(p)))
        prev = np.full(b, PAD)
        p_seen = np.zeros((b, len(p)))  # (B, C) taste mass already used up
        for s in range(t):
            item, real = x[:, s], x[:, s] != PAD
            succ, probs = self.successors[prev], self.successor_probs[prev]  # (B, S)
            w = self.markov_weight * (prev != PAD)[:, None]  # (B, 1)
            m_item = (probs * (succ == item[:, None])).sum(1, keepdims=True)  # (B, 1) M[prev, item]
            m_left = (probs * ~seen[np.arange(b)[:, None], succ]).sum(1, keepdims=True)  # (B, 1)
            p_item = p[:, item].T  # (B, C)
            lik = (w * m_item + (1 - w) * p_item) / (w * m_left + (1 - w) * (1 - p_seen))
            out += np.where(real[:, None], np.log(np.where(real[:, None], lik, 1.0)), 0.0)
            p_seen += p_item
            seen[np.arange(b), item] = True
            prev = np.where(real, item, prev)
        return out


def _genre_popularity(genre: np.ndarray, n_genres: int, zipf: float, rng: np.random.Generator) -> np.ndarray:
    """(V,) Zipf popularity of each item inside its genre, items ranked at random."""
    out = np.zeros(len(genre))
    for g in range(n_genres):
        members = rng.permutation(np.flatnonzero(genre == g))
        weights = 1.0 / np.arange(1, len(members) + 1) ** zipf
        out[members] = weights / weights.sum()
    return out


def generate(config: SyntheticConfig = SyntheticConfig()) -> tuple[pd.DataFrame, SyntheticModel]:
    """Draw a data set; return ``(interactions, true_model)``.

    ``interactions`` has ``user_id`` (1..n_users), ``item_id`` (1..n_items) and an
    increasing integer ``timestamp`` per user (users overlap in time, so a global
    temporal split works), rows grouped by user in time order.
    """
    c = config
    if not 1 <= c.min_len <= c.max_len <= c.n_items:
        raise ValueError("need 1 <= min_len <= max_len <= n_items")
    if not (c.n_genres <= c.n_items and c.n_successors < c.n_items and 0 <= c.markov_weight <= 1):
        raise ValueError("need n_genres <= n_items, n_successors < n_items, 0 <= markov_weight <= 1")
    rng = np.random.default_rng(c.seed)
    v = c.n_items + 1
    genre = np.concatenate([[-1], rng.permutation(np.arange(c.n_items) % c.n_genres)])
    popularity = _genre_popularity(genre, c.n_genres, c.zipf, rng)
    taste = np.maximum(rng.dirichlet(np.full(c.n_genres, c.alpha), size=c.n_types), 1e-9)
    taste /= taste.sum(1, keepdims=True)  # (C, G), no genre exactly 0
    successors = np.zeros((v, c.n_successors), dtype=np.int64)
    successor_probs = np.zeros((v, c.n_successors))
    for i in range(1, v):
        others = np.concatenate([np.arange(1, i), np.arange(i + 1, v)])
        successors[i] = rng.choice(others, c.n_successors, replace=False)
        successor_probs[i] = rng.dirichlet(np.ones(c.n_successors))
    type_prior = np.full(c.n_types, 1.0 / c.n_types)
    types = rng.choice(c.n_types, size=c.n_users, p=type_prior)
    lengths = np.clip(c.min_len - 1 + rng.geometric(1.0 / max(1.0, c.mean_len - c.min_len + 1), c.n_users),
                      c.min_len, c.max_len)
    model = SyntheticModel(genre, popularity, taste, type_prior, successors, successor_probs,
                           c.markov_weight, np.concatenate([[-1], types]), int(lengths.max()))
    seqs = _walk(model, types, int(lengths.max()), rng)  # (U, L)

    keep = np.arange(seqs.shape[1])[None, :] < lengths[:, None]  # (U, L)
    start = rng.integers(0, 10**7, size=(c.n_users, 1))
    times = start + np.cumsum(1 + rng.geometric(1 / 3600, size=seqs.shape), axis=1)
    frame = pd.DataFrame({
        "user_id": np.repeat(np.arange(1, c.n_users + 1), lengths),
        "item_id": seqs[keep],
        "timestamp": times[keep].astype(np.int64),
    })
    return frame, model


def _walk(model: SyntheticModel, types: np.ndarray, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``steps`` items per user from the story above; returns (U, steps).

    Never builds a (U, V) probability table: each step first picks Markov or taste
    (in proportion to the unseen mass each offers), then a successor, or a genre
    and an item inside it. That is the same distribution as the mixture, restricted
    to unseen items, that :meth:`SyntheticModel.oracle_scores` computes.
    """
    n_users, n_genres = len(types), model.taste.shape[1]
    genre = np.maximum(model.genre, 0)  # PAD mapped to genre 0; its weights are 0 anyway
    slot = np.zeros_like(genre)  # position of each item inside its genre's list
    members = [np.flatnonzero(model.genre == g) for g in range(n_genres)]
    genre_items = np.zeros((n_genres, max(map(len, members))), dtype=np.int64)  # (G, N), PAD-filled
    for g, m in enumerate(members):
        genre_items[g, : len(m)], slot[m] = m, np.arange(len(m))
    genre_pop = model.popularity[genre_items] * (genre_items != PAD)  # (G, N)
    seen = np.zeros((n_users, n_genres, genre_items.shape[1]), dtype=bool)  # (U, G, N)
    genre_left = np.ones((n_users, n_genres))  # (U, G) unseen popularity mass per genre
    rows, prev = np.arange(n_users), np.full(n_users, PAD)
    out = np.zeros((n_users, steps), dtype=np.int64)
    for s in range(steps):
        succ = model.successors[prev]  # (U, S)
        m_w = model.successor_probs[prev] * ~seen[rows[:, None], genre[succ], slot[succ]]  # (U, S)
        g_w = model.taste[types] * genre_left  # (U, G)
        w = model.markov_weight * (prev != PAD)
        markov_mass, taste_mass = w * m_w.sum(1), (1 - w) * g_w.sum(1)
        use_markov = rng.random(n_users) * (markov_mass + taste_mass) < markov_mass
        item = np.empty(n_users, dtype=np.int64)
        mk, tk = np.flatnonzero(use_markov), np.flatnonzero(~use_markov)
        item[mk] = succ[mk, _sample_rows(m_w[mk], rng)]
        g = _sample_rows(g_w[tk], rng)
        item[tk] = genre_items[g, _sample_rows(genre_pop[g] * ~seen[tk, g], rng)]
        out[:, s] = prev = item
        seen[rows, genre[item], slot[item]] = True
        genre_left[rows, genre[item]] -= model.popularity[item]
        genre_left[genre_left < 1e-12] = 0.0  # a genre seen in full is exactly exhausted
    return out
