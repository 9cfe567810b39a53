"""Multi-behaviour logs (view, favourite, cart, buy): loading, cleaning, funnels, splits.

Three real logs (see :mod:`helpers.datasets`):

* ``mbht-retail-*``: RetailRocket as shipped with MBHT (KDD 2022), RecBole rows
  ``history items, history behaviour codes, target item`` (the target is a purchase).
  Codes: 0 = purchase (masked, per MBHT's author), 1, 2, 3 undocumented: the notebook
  establishes them from the order in which codes meet on the same item
  (:func:`code_order`): 2 = view, 1 = cart, 3 = purchase left unmasked.
  The training file holds each user up to three times, cut at different purchases
  (:func:`deduplicate` merges the copies back into one sequence per user);
* ``dyhatr-ecomm``: a Tianchi sample, ``user item type yyyymmdd`` (1 click, 2 favourite,
  3 cart, 4 buy); order within a day is unknown;
* ``jd-micro-*``: JD sessions with 10 micro-behaviours.

Behaviour ids follow the item convention: ``PAD = 0``, behaviours ``1..n_behaviours``
(:data:`RETAIL_BEHAVIOURS`: 1 view, 2 cart, 3 buy).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers.datasets import fetch
from helpers.split import EvalSet, Split

RETAIL_BEHAVIOURS = ("view", "cart", "buy")  # behaviour id i + 1 = RETAIL_BEHAVIOURS[i]
VIEW, CART, BUY = 1, 2, 3
RETAIL_CODES = {2: VIEW, 1: CART, 0: BUY, 3: BUY}  # MBHT code -> behaviour id (see code_order)
ECOMM_BEHAVIOURS = ("click", "favourite", "cart", "buy")  # DyHATR types 1..4, same ids here
JD_BEHAVIOURS = ("home->product", "shoplist->product", "sale->product", "cart->product",
                 "search->product", "read comments", "read specification", "page bottom",
                 "add to cart", "order")  # JD types 1..10


# ---------------------------------------------------------------- reading the files
def read_mbht(part: str = "train", data_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per line of ``retail_beh.<part>.inter``: ``row, items (array), codes (array), target``."""
    root = fetch(f"mbht-retail-{part}", data_dir)
    raw = pd.read_csv(root / f"multibehaviour/mbht_retail/retail_beh.{part}.inter", sep="\t", dtype=str)
    raw.columns = ["row", "items", "codes", "target"]
    return pd.DataFrame({"row": raw.row.astype(np.int64),
                         "items": [np.array(s.split(), dtype=np.int64) for s in raw["items"]],
                         "codes": [np.array(s.split(), dtype=np.int64) for s in raw["codes"]],
                         "target": raw.target.astype(np.int64)})


def read_ecomm(data_dir: str | Path | None = None) -> pd.DataFrame:
    """DyHATR's Tianchi sample, one event a row: ``user_id, item_id, behaviour (1..4), day`` (a date),
    with each item's ``category`` and ``price``; sorted by user and day (file order within a day)."""
    root = fetch("dyhatr-ecomm", data_dir) / "multibehaviour/dyhatr_ecomm"
    events = pd.read_csv(root / "ecomm_edge_train.txt", sep="\t", names=["user_id", "item_id", "behaviour", "day"])
    items = pd.read_csv(fetch("dyhatr-ecomm-items", data_dir) / "multibehaviour/dyhatr_ecomm/ecomm_item_feature.txt",
                        sep="\t", names=["item_id", "category_1", "category", "brand", "price"])
    events["day"] = pd.to_datetime(events.day.astype(str), format="%Y%m%d")
    events = events.merge(items[["item_id", "category", "price"]], on="item_id", how="left")
    return events.sort_values(["user_id", "day"], kind="stable").reset_index(drop=True)


def read_jd(category: str = "computers", data_dir: str | Path | None = None) -> pd.DataFrame:
    """JD micro-behaviour sessions, one event a row: ``session, sku, behaviour (1..10), category,
    gap_bucket, dwell_bucket``, in session order."""
    name = {"computers": "JD_Computers_sample", "appliances": "JD_Applicances_sample"}[category]
    root = fetch(f"jd-micro-{category}", data_dir)
    rows = []
    for session, line in enumerate((root / "multibehaviour/jd_micro_behaviors_sample" / name).read_text().splitlines()):
        for token in line.split():
            sku, behaviour, cat, gap, dwell = token.split("+")
            rows.append((session, int(sku), int(behaviour), int(cat), int(gap), int(dwell)))
    return pd.DataFrame(rows, columns=["session", "sku", "behaviour", "category", "gap_bucket", "dwell_bucket"])


# ---------------------------------------------------------------- establishing the codes
def code_order(rows: pd.DataFrame) -> pd.DataFrame:
    """For codes a, b met on the same item in the same history: the share of those items whose
    first ``a`` comes before their first ``b`` (rows a, columns b). A funnel's early step is
    before the later ones; the masked purchase (0) and its unmasked twin should sit last."""
    before, pairs = defaultdict(int), defaultdict(int)
    for items, codes in zip(rows["items"], rows["codes"]):
        first: dict[tuple[int, int], int] = {}
        for t, (item, code) in enumerate(zip(items.tolist(), codes.tolist())):
            first.setdefault((item, code), t)
        by_item = defaultdict(dict)
        for (item, code), t in first.items():
            by_item[item][code] = t
        for seen in by_item.values():
            for a, ta in seen.items():
                for b, tb in seen.items():
                    if a != b:
                        pairs[a, b] += 1
                        before[a, b] += ta < tb
    codes = sorted({a for a, _ in pairs})
    return pd.DataFrame([[before[a, b] / pairs[a, b] if pairs[a, b] else np.nan for b in codes] for a in codes],
                        index=pd.Index(codes, name="first code"), columns=pd.Index(codes, name="then code"))


# ---------------------------------------------------------------- undoing the copies
def deduplicate(rows: pd.DataFrame, copies: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """Merge the copies of each user: ``(users, owner)``.

    Each training row is one user's history cut just before some purchase (the target),
    earlier purchases masked (code 0) or not (code 3). A row's full sequence
    ``history + [target]`` is therefore a prefix of its user's longest row, cut at a
    purchase. Longest rows first, each unassigned row opens a user and takes up to
    ``copies - 1`` unassigned rows whose full sequence is such a prefix. ``users`` has one
    row per user: ``user, items, behaviours`` (the longest full sequence, behaviour ids,
    the target a purchase) and ``rows`` (how many file rows it merges); ``owner`` (R,)
    gives each file row's user.
    """
    full = [tuple(h.tolist()) + (int(t),) for h, t in zip(rows["items"], rows["target"])]
    by_sequence = defaultdict(list)
    for r, f in enumerate(full):
        by_sequence[f].append(r)
    owner = np.full(len(full), -1, dtype=np.int64)
    users = []
    for r in sorted(range(len(full)), key=lambda r: -len(full[r])):  # stable: file order among equals
        if owner[r] >= 0:
            continue
        owner[r] = len(users)
        members, codes = [r], rows["codes"].iat[r]
        cuts = [len(full[r])] + [p + 1 for p in range(len(codes) - 1, -1, -1) if codes[p] in (0, 3)]
        for cut in cuts:
            for s in by_sequence[full[r][:cut]]:
                if len(members) < copies and owner[s] < 0:
                    owner[s] = len(users)
                    members.append(s)
        behaviours = np.array([RETAIL_CODES[c] for c in codes.tolist()] + [BUY], dtype=np.int64)
        users.append((len(users), np.array(full[r], dtype=np.int64), behaviours, len(members)))
    return pd.DataFrame(users, columns=["user", "items", "behaviours", "rows"]), owner


def events(users: pd.DataFrame) -> pd.DataFrame:
    """Cleaned sequences as a tidy log: ``user, position, item_id, behaviour``."""
    lengths = users["items"].map(len).to_numpy()
    return pd.DataFrame({"user": np.repeat(users.user.to_numpy(), lengths),
                         "position": np.concatenate([np.arange(n) for n in lengths]),
                         "item_id": np.concatenate(users["items"].to_list()),
                         "behaviour": np.concatenate(users["behaviours"].to_list())})


# ---------------------------------------------------------------- exploration
def funnel(log: pd.DataFrame, steps: tuple[int, ...], key: str) -> pd.DataFrame:
    """Conversion along ``steps`` (behaviour ids in funnel order) per ``key`` (``"user"`` or
    ``"item_id"``): for each step the number of keys reaching it, and the share of the
    previous step's (user, item) pairs that reach it."""
    pairs = log.groupby(["user", "item_id"]).behaviour.agg(set)
    rows, previous = [], None
    for step in steps:
        reached = pairs.map(lambda s, step=step: step in s)
        if previous is not None:
            reached &= previous
        rows.append({"step": step, "pairs": int(reached.sum()),
                     f"{key}s": reached[reached].index.get_level_values(key).nunique(),
                     "of previous step": reached.sum() / previous.sum() if previous is not None else 1.0})
        previous = reached
    return pd.DataFrame(rows).set_index("step")


def buy_seen_before(log: pd.DataFrame) -> pd.Series:
    """For every purchase after the first event: was its item viewed, carted or bought earlier
    by the same user? Shares of all purchases (``'new item'`` when none of these)."""
    kinds = []
    for _, g in log.groupby("user", sort=False):
        seen: dict[int, set] = defaultdict(set)
        for item, b in zip(g.item_id.to_numpy(), g.behaviour.to_numpy()):
            if b == BUY:
                s = seen[item]
                kinds.append("bought before" if BUY in s else "carted before" if CART in s
                             else "viewed before" if VIEW in s else "new item")
            seen[item].add(b)
    return pd.Series(kinds).value_counts(normalize=True)


# ---------------------------------------------------------------- splits
@dataclass
class MBSplit:
    """A user-level split of multi-behaviour sequences (no test user is ever trained on)."""

    n_items: int
    n_behaviours: int
    train_items: list[np.ndarray]  # one sequence per training user, oldest first
    train_behaviours: list[np.ndarray]  # aligned behaviour ids
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]]  # "valid"/"test" -> (items, behaviours)

    def task(self, part: str, behaviour: int) -> tuple[EvalSet, list[np.ndarray]]:
        """Next item *for* ``behaviour``: each user's last event of that behaviour is the target,
        the events before it the history. ``(EvalSet of item histories, behaviour histories)``;
        users without such an event after their first are left out."""
        users, hist, behs, targets = [], [], [], []
        for u, (items, b) in enumerate(zip(*self.parts[part])):
            at = np.flatnonzero(b[1:] == behaviour)
            if len(at):
                t = at[-1] + 1
                users.append(u), hist.append(items[:t]), behs.append(b[:t]), targets.append(items[t])
        return EvalSet(np.array(users), hist, np.array(targets, dtype=np.int64)), behs

    def item_split(self, behaviour: int = BUY) -> Split:
        """A :class:`~helpers.split.Split` over item ids only, for the course's loop and models."""
        valid, _ = self.task("valid", behaviour)
        test, _ = self.task("test", behaviour)
        return Split(self.n_items, self.train_items, np.arange(len(self.train_items)), valid, test,
                     f"user-level split; target: each held-out user's last {RETAIL_BEHAVIOURS[behaviour - 1]}")


def split_users(users: pd.DataFrame, n_items: int, n_behaviours: int = 3, held_out: float = 0.1,
                max_users: int | None = None, seed: int = 0) -> MBSplit:
    """Shuffle users (seeded), keep ``max_users`` of them, hold out ``held_out`` each for
    validation and test; sequences of length < 2 are dropped (nothing to predict)."""
    keep = users[users["items"].map(len) >= 2]
    order = np.random.default_rng(seed).permutation(len(keep))[:max_users]
    keep = keep.iloc[order]
    n = max(1, round(held_out * len(keep)))
    part = lambda frame: (list(frame["items"]), list(frame["behaviours"]))  # noqa: E731
    return MBSplit(n_items, n_behaviours, *part(keep.iloc[2 * n:]),
                   parts={"valid": part(keep.iloc[:n]), "test": part(keep.iloc[n:2 * n])})


# ---------------------------------------------------------------- scorers for the harness
class RowScorer:
    """The harness's scorer interface for models that need more than item ids (behaviours).

    ``evaluate`` hands ``score`` batches of item histories in the eval set's order;
    ``scores(rows) -> (B, >= V)`` computes them from anything indexed by row. Each batch is
    checked against the item histories it should be, so a reordering fails loudly.
    """

    def __init__(self, scores, histories: list[np.ndarray], max_len: int):
        self.scores, self.histories, self.max_len, self.next = scores, histories, max_len, 0

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = np.arange(self.next, self.next + len(input_ids))
        expected = [h[-input_ids.shape[1]:] for h in (self.histories[r] for r in rows)]
        got = [row[row > 0].numpy() for row in input_ids.cpu()]
        if not all(np.array_equal(e, g) for e, g in zip(expected, got)):
            raise ValueError("RowScorer: the harness passed histories in another order")
        self.next = (self.next + len(input_ids)) % len(self.histories)
        return self.scores(rows)


def recency_scores(histories: list[np.ndarray], behaviours: list[np.ndarray], n_items: int,
                   order: tuple[int, ...] = (CART, VIEW), popularity: np.ndarray | None = None):
    """``scores(rows)`` of the heuristic "the most recent carted item first": items of the
    history grouped by their strongest behaviour in ``order`` (carts, then views), most recent
    first within a group; every other item gets its popularity share (< 1), so they follow."""
    pop = np.zeros(n_items + 1) if popularity is None else popularity / max(popularity.sum(), 1)

    def scores(rows: np.ndarray) -> torch.Tensor:
        out = np.tile(pop, (len(rows), 1))
        for i, r in enumerate(rows):
            items, behs = histories[r], behaviours[r]
            for rank, b in enumerate(reversed(order)):  # later groups overwrite: carts on top
                at = np.flatnonzero(behs == b)
                out[i, items[at]] = 1 + rank + (1 + at) / (len(items) + 1)
        return torch.from_numpy(out)
    return scores


# ---------------------------------------------------------------- MBHT's sampled protocol
def static_negatives(eval_set: EvalSet, popular: np.ndarray, n_items: int, n: int = 100,
                     seed: int = 0) -> np.ndarray:
    """(N, n) negatives as MBHT's evaluation draws them (yuh-yang/MBHT-KDD22,
    ``recbole/sampler/sampler.py``, ``_pop_sampling_static``): the *same* ``n`` most popular
    items for every user, except that one the user has interacted with (history or target)
    is replaced by a uniform draw that is not. ``popular``: item ids, most popular first."""
    rng = np.random.default_rng(seed)
    out = np.tile(np.asarray(popular[:n], dtype=np.int64), (len(eval_set), 1))
    for row, (h, t) in enumerate(zip(eval_set.histories, eval_set.targets)):
        used = set(np.asarray(h).tolist()) | {int(t)}
        for j in np.flatnonzero([v in used for v in out[row]]):
            while (v := int(rng.integers(1, n_items + 1))) in used:
                pass
            out[row, j] = v
    return out


def rank_against(scorer, eval_set: EvalSet, negatives: np.ndarray, max_len: int,
                 ks: tuple[int, ...] = (5, 10)) -> dict[str, np.ndarray]:
    """Per-user HR/NDCG/MRR of each target among its ``negatives`` (N, n), with the harness's
    own tie rule (:func:`helpers.metrics.sampled_target_ranks`, expected rank under ties)."""
    from helpers import metrics
    from helpers.sequences import pad_left

    greater, ties = [], []
    for start in range(0, len(eval_set), 512):
        stop = start + 512
        with torch.no_grad():
            scores = scorer.score(pad_left(eval_set.histories[start:stop], max_len)).float().cpu()  # (B, V)
        tgt = torch.as_tensor(eval_set.targets[start:stop])
        neg = torch.as_tensor(negatives[start:stop])
        g, t = metrics.sampled_target_ranks(scores, tgt, neg, torch.ones_like(neg, dtype=torch.bool))
        greater.append(g), ties.append(t)
    return metrics.rank_metrics(torch.cat(greater), torch.cat(ties), ks)
