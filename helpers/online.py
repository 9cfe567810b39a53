"""Learning online: replay a log in time order and update a model as events arrive.

A :class:`Stream` cuts a log at a global time (e.g. the first 80% of events): everything
before the cut trains the starting model; the rest arrives in ``n_periods`` equal chunks.
Items are numbered by their first appearance in time, so the catalogue known at any moment
is ``1..n_items_by(period)`` and a new item simply gets the next rows of the embedding table.

:func:`run_stream` replays the periods. Each period is first **evaluated** (every event
predicted from all of its user's earlier events, with a model trained only on events before
the period), then the model is **updated** by one strategy:

* ``"frozen"``: weights never change; histories still grow with every event (real time);
* ``"finetune"``: a few epochs on the period's new events only (warm start);
* ``"replay"``: the same plus a random sample of older events (``replay`` x as many);
* ``"retrain"``: a fresh model trained on everything seen so far.

Every strategy is scored on the same events, so :func:`paired_gaps` (each strategy against
retraining) and :func:`forgetting_ci` (period 0 just after learning it against the end) give
paired bootstrap CIs through :func:`helpers.metrics.paired_comparison`.

:class:`OnlineHistories` keeps each user's recent window as events arrive, the state a
service needs to answer a request without reading the whole log.

Letters: B batch, T window (max_len), H hidden, V = n_items + 1, N events.
"""

from __future__ import annotations

import bisect
import copy
import datetime
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from helpers import metrics
from helpers.evaluate import EvalResult, evaluate
from helpers.ids import IGNORE, PAD, check_id, short_repr, user_key
from helpers.split import EvalSet, user_sequences
from helpers.batches import CausalBatches, causal_windows

STRATEGIES = ("frozen", "finetune", "replay", "retrain")


# ---------------------------------------------------------------- the stream
@dataclass
class Stream:
    """A log in global time order, cut into a start (period -1) and ``n_periods`` periods."""

    events: pd.DataFrame  # user_id, item_id (by first appearance), timestamp, order, period
    n_periods: int
    source_items: np.ndarray  # (V,) stream item id -> item id in the source frame; [0] = PAD

    @property
    def n_items(self) -> int:
        return len(self.source_items) - 1

    def n_items_by(self, period: int) -> int:
        """Catalogue size once ``period`` has begun: every item seen up to its end."""
        return int(self.events.loc[self.events["period"] <= period, "item_id"].max())

    def sequences(self, before: int) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
        """``(users, sequences, n_old)``: each user's events of periods < ``before``, oldest
        first, and how many of them came before period ``before - 1`` (the newest period)."""
        seen = self.events[self.events["period"] < before]
        users, seqs = user_sequences(seen)
        _, periods = user_sequences(seen, "period")
        return users, seqs, [int((p < before - 1).sum()) for p in periods]

    def period_eval(self, period: int, max_events: int | None = None,
                    seed: int = 0) -> tuple[EvalSet, pd.DataFrame]:
        """Every event of ``period`` whose user has an earlier event, with that user's whole
        earlier history (events of the same period included: they arrived before it).

        Returns the :class:`EvalSet` and the events (``user_id, item_id, timestamp, order``)
        row by row; ``max_events`` keeps a seeded random sample of them.
        """
        upto = self.events[self.events["period"] <= period]
        users, seqs = user_sequences(upto)
        _, orders = user_sequences(upto, "order")
        _, periods = user_sequences(upto, "period")
        rows = [(u, s, o, k) for u, s, o, p in zip(users, seqs, orders, periods)
                for k in np.flatnonzero(p == period) if k > 0]
        if max_events is not None and len(rows) > max_events:
            keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_events, replace=False))
            rows = [rows[i] for i in keep]
        eval_set = EvalSet(np.array([r[0] for r in rows], dtype=np.int64), [r[1][: r[3]] for r in rows],
                           np.array([r[1][r[3]] for r in rows], dtype=np.int64))
        order = np.array([r[2][r[3]] for r in rows], dtype=np.int64)
        info = self.events.set_index("order").loc[order, ["user_id", "item_id", "timestamp"]].reset_index()
        return eval_set, info


def time_stream(df: pd.DataFrame, start: float = 0.8, n_periods: int = 5) -> Stream:
    """Cut a cleaned log (``user_id, item_id, timestamp``, each user's rows in time order) at
    the ``start`` fraction of its events in time; the rest becomes ``n_periods`` chunks of equal
    event counts. Ties in time keep the frame's order. Items are renumbered 1.. by first event."""
    if not 0 < start < 1 or n_periods < 1:
        raise ValueError("need 0 < start < 1 and n_periods >= 1")
    events = df[["user_id", "item_id", "timestamp"]].iloc[np.argsort(df["timestamp"].to_numpy(), kind="stable")]
    events = events.reset_index(drop=True)
    events["order"] = np.arange(len(events))
    source, stream_ids = np.unique(events["item_id"].to_numpy(), return_inverse=True)
    first = np.full(len(source), len(events))
    np.minimum.at(first, stream_ids, np.arange(len(events)))
    rank = np.empty(len(source), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, len(source) + 1)
    events["item_id"] = rank[stream_ids]
    cut = int(round(start * len(events)))
    period = np.full(len(events), -1, dtype=np.int64)
    for p, chunk in enumerate(np.array_split(np.arange(cut, len(events)), n_periods)):
        period[chunk] = p
    events["period"] = period
    source_items = np.zeros(len(source) + 1, dtype=np.int64)
    source_items[rank] = source
    return Stream(events, n_periods, source_items)


# ---------------------------------------------------------------- new items
def add_items(model: nn.Module, n_items: int, rows: Tensor | str = "mean") -> int:
    """Grow the model's item table (``model.item_emb``, tied to its output) to ``n_items``.

    ``rows`` for the new items: ``"mean"`` (the mean of the known items' rows), ``"zero"``,
    or a (n_new, H) tensor (e.g. text vectors mapped by :func:`text_to_id_rows`). The model
    never retrains for it: a new item is recommendable the moment its row exists.
    Returns how many rows were added.
    """
    old = model.item_emb
    n_new = n_items + 1 - old.num_embeddings
    if n_new <= 0:
        return 0
    known = old.weight.detach()[1:]  # (n_old, H), PAD excluded
    if isinstance(rows, str):
        if rows not in ("mean", "zero"):
            raise ValueError(f"rows must be 'mean', 'zero' or a tensor, got {rows!r}")
        fill = (known.mean(0, keepdim=True).expand(n_new, -1) if rows == "mean"
                else known.new_zeros(n_new, known.shape[1]))  # (n_new, H)
    else:
        fill = torch.as_tensor(rows, dtype=known.dtype, device=known.device).reshape(n_new, known.shape[1])
    grown = nn.Embedding(n_items + 1, old.embedding_dim, padding_idx=old.padding_idx).to(known.device)
    with torch.no_grad():
        grown.weight.copy_(torch.cat([old.weight.detach(), fill]))
    model.item_emb = grown
    model.config.n_items = n_items
    return n_new


def text_to_id_rows(text_vectors: Tensor, id_rows: Tensor, ridge: float = 1.0) -> Tensor:
    """A ridge map from text space to ID-embedding space, fitted on the known items.

    ``text_vectors`` (n, D) and ``id_rows`` (n_known, H) with n >= n_known: rows
    ``0..n_known-1`` fit ``W = argmin |X W - E|^2 + ridge |W|^2``; returns ``X[n_known:] W``
    (n - n_known, H), the rows to give the new items.
    """
    x, e = text_vectors.double().cpu(), id_rows.detach().double().cpu()
    known = x[: len(e)]
    gram = known.T @ known + ridge * torch.eye(x.shape[1], dtype=x.dtype)  # (D, D)
    w = torch.linalg.solve(gram, known.T @ e)  # (D, H)
    return (x[len(e):] @ w).to(dtype=id_rows.dtype, device=id_rows.device)


# ---------------------------------------------------------------- updates
class NewEventBatches(CausalBatches):
    """Causal windows over whole histories whose loss falls only on new events (plus, with
    ``replay``, random windows of older events holding about ``replay`` x as many targets):
    older items stay as context.

    ``n_old[i]``: how many of ``sequences[i]``'s first items are old. Windows with no target
    left are dropped; a window keeps all its inputs, so a new event still reads its context.
    """

    def __init__(self, sequences: Sequence[np.ndarray], n_old: Sequence[int], max_len: int,
                 batch_size: int, replay: float = 0.0, seed: int = 0):
        super().__init__(sequences, max_len, batch_size)
        positions, _ = causal_windows([np.arange(1, len(s) + 1) for s in sequences], max_len)
        owner, _ = causal_windows([np.full(len(s), i + 1) for i, s in enumerate(sequences)], max_len)
        target_pos = positions + 1  # (W, T): 1-based position of each label (the next item)
        sequence_of_window = (owner.max(1).values - 1).clamp_min(0)  # (W,)
        limit = torch.as_tensor(np.asarray(n_old, dtype=np.int64))[sequence_of_window]  # (W,) old items
        real = self.labels != IGNORE
        new = real & (target_pos > limit[:, None])
        keep = new.any(1)  # (W,) windows with a new target
        if replay > 0 and (real & ~keep[:, None]).any():
            old_only = real & ~keep[:, None]  # whole windows of older targets: the cost stays per target
            rate = min(1.0, replay * float(new.sum()) / float(old_only.sum()))
            draw = torch.rand(len(keep), generator=torch.Generator().manual_seed(seed))  # (W,)
            picked = (draw < rate) & old_only.any(1)
            new |= old_only & picked[:, None]
            keep |= picked
        self.labels = self.labels.masked_fill(~new, IGNORE)
        self.inputs, self.labels = self.inputs[keep], self.labels[keep]
        self.lengths = (self.inputs != PAD).sum(1)  # inputs, not labels: context is kept
        self.n_targets = int(new.sum())
        self.budget = batch_size * max(float(self.lengths.float().mean()) if len(self.lengths) else 1.0, 1.0)

    def __len__(self) -> int:
        return 0 if self.n_targets == 0 else super().__len__()


def fit_events(model: nn.Module, batches: CausalBatches, epochs: int, lr: float, seed: int = 0) -> int:
    """AdamW for a fixed number of epochs over ``batches``; returns the targets trained on.

    Not :func:`helpers.train.train`: that loop early-stops on a validation set, and online
    there is none that is not the future; an update is a fixed, small budget of steps.
    """
    if len(batches) == 0:
        return 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    device = next(model.parameters()).device
    model.train()
    targets = 0
    for epoch in range(epochs):
        for input_ids, labels in batches.epoch(torch.Generator().manual_seed(seed + epoch)):
            _, loss = model(input_ids.to(device), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            targets += int((labels != IGNORE).sum())
    model.eval()
    return targets


@dataclass
class StreamResult:
    """What :func:`run_stream` measured, one row per period."""

    strategy: str
    periods: pd.DataFrame  # period, events, ndcg@10, hr@10, update_s, trained_targets, seen_until, first_event
    results: list[EvalResult]  # per period, aligned with `events`
    events: list[pd.DataFrame]  # per period: user_id, item_id, timestamp, order of each evaluated event
    learned: np.ndarray  # (N0,) NDCG@10 of each evaluated event of period 0 just after learning it
    final: np.ndarray  # (N0,) the same events' NDCG@10 with the model at the end of the stream
    model: nn.Module = field(repr=False)

    @property
    def forgetting(self) -> float:
        """Mean NDCG@10 on period 0 just after learning it minus at the end (> 0: forgotten)."""
        return float(self.learned.mean() - self.final.mean())


def run_stream(stream: Stream, base: nn.Module, strategy: str, make_model: Callable[[int], nn.Module], *,
               epochs: int, finetune_epochs: int, lr: float, batch_size: int, replay: float = 1.0,
               new_rows: Callable[[nn.Module, int], Tensor | str] | str = "mean",
               max_events: int | None = None, seed: int = 0) -> StreamResult:
    """Replay ``stream`` with ``strategy`` from a copy of ``base`` (trained on period -1).

    ``make_model(n_items)`` builds a fresh model for ``"retrain"`` (trained ``epochs``
    epochs); fine-tuning runs ``finetune_epochs``. Before each period the catalogue grows
    to the period's items with ``new_rows`` (``"mean"``, ``"zero"`` or a function
    ``(model, n_items) -> rows``). ``seen_until`` is the last event order any training
    step used, ``first_event`` the first order evaluated: seen_until < first_event always.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    model = copy.deepcopy(base).eval()
    seen_until = int(stream.events.loc[stream.events["period"] < 0, "order"].max())
    rows, results, infos, learned = [], [], [], np.zeros(0)
    evals = [stream.period_eval(p, max_events, seed) for p in range(stream.n_periods)]
    for p in range(stream.n_periods):
        n_items = stream.n_items_by(p)
        add_items(model, n_items, new_rows(model, n_items) if callable(new_rows) else new_rows)
        eval_set, info = evals[p]
        result = evaluate(model, eval_set, n_items, ks=(10,))
        start, targets = time.perf_counter(), 0
        _, seqs, n_old = stream.sequences(p + 1)
        if strategy == "retrain":
            model = make_model(n_items)
            everything = NewEventBatches(seqs, [0] * len(seqs), model.max_len, batch_size)
            targets = fit_events(model, everything, epochs, lr, seed)
        elif strategy in ("finetune", "replay"):
            batches = NewEventBatches(seqs, n_old, model.max_len, batch_size,
                                      replay if strategy == "replay" else 0.0, seed + p)
            targets = fit_events(model, batches, finetune_epochs, lr, seed + p)
        seconds = time.perf_counter() - start
        rows.append({"period": p, "events": len(result), **{k: v for k, v in result.summary().items()},
                     "update_s": seconds, "trained_targets": targets, "seen_until": seen_until,
                     "first_event": int(info["order"].min())})
        if strategy != "frozen":
            seen_until = int(stream.events.loc[stream.events["period"] <= p, "order"].max())
        if p == 0:
            learned = evaluate(model, eval_set, n_items, ks=(10,)).metrics["ndcg@10"]
        results.append(result)
        infos.append(info)
    final = evaluate(model, evals[0][0], stream.n_items_by(0), ks=(10,), subset=True).metrics["ndcg@10"]
    return StreamResult(strategy, pd.DataFrame(rows), results, infos, learned, final, model)


def first_recommended(stream: Stream, result: StreamResult) -> pd.DataFrame:
    """Each item that joined the catalogue during the stream: when it joined (the start of
    its first period), and the first evaluated event at which it entered a user's top-10.

    Columns ``item_id, period, joined_ts, first_top10_ts, hours`` (NaN: never recommended).
    """
    starts = stream.events.groupby("period")["timestamp"].min()
    first_period = stream.events.groupby("item_id")["period"].min()
    new = first_period[first_period >= 0]
    top = np.concatenate([r.top_items[:, :10] for r in result.results])  # (N, 10)
    ts = pd.concat(result.events, ignore_index=True)["timestamp"].to_numpy()  # (N,)
    rows = []
    for item, period in new.items():
        hits = np.flatnonzero((top == item).any(1))
        joined = float(starts[period])
        first = float(ts[hits].min()) if len(hits) else np.nan
        rows.append({"item_id": int(item), "period": int(period), "joined_ts": joined,
                     "first_top10_ts": first, "hours": (first - joined) / 3600})
    return pd.DataFrame(rows, columns=["item_id", "period", "joined_ts", "first_top10_ts", "hours"])


# ---------------------------------------------------------------- per-user state
class OnlineHistories:
    """Each user's latest ``window`` events, updated one event at a time.

    ``observe(user, item, timestamp)`` costs O(window): a binary search and a list insert.
    What it accepts (anything else is a ``TypeError``/``ValueError`` naming the argument,
    and nothing is stored): ``user`` in any spelling :func:`helpers.ids.user_key` maps to one
    key (``7``, ``"7"``, ``7.0`` are one user); ``item`` a course id, an integer >= 1 (not
    bool, not float: 2.9 is not item 2); ``timestamp`` a finite number or a datetime, one
    kind per store (the first event fixes it; numbers and datetimes do not compare).
    Rules, in order:

    * an event equal to one in the window (same item and timestamp) is a duplicate: ignored;
    * a timestamp at or after the user's latest is appended (the oldest drops out when full);
    * an earlier timestamp (out of order) is inserted in place when ``late="insert"``
      (after events with the same timestamp), or refused with ``late="refuse"``; an event
      older than everything in a full window is refused either way (it would drop out).

    Returns ``"added"``, ``"inserted"``, ``"duplicate"`` or ``"refused"``. A duplicate older
    than the window cannot be recognised: only the window is kept.
    """

    def __init__(self, window: int, late: str = "insert"):
        if window < 1 or late not in ("insert", "refuse"):
            raise ValueError("window must be >= 1 and late 'insert' or 'refuse'")
        self.window, self.late = window, late
        self.time_kind: str | None = None  # "number" or "datetime", fixed by the first event
        self._events: dict[str, list] = {}  # user_key(user) -> list of (timestamp, item), oldest first

    def _timestamp(self, timestamp: object) -> tuple[str, float | pd.Timestamp]:
        """(kind, comparable value) of a timestamp, or an error saying what is allowed."""
        allowed = "a finite number (int or float, not bool) or a datetime"
        if isinstance(timestamp, (datetime.datetime, np.datetime64)):
            value = pd.Timestamp(timestamp)
            if pd.isna(value):
                raise ValueError(f"timestamp must be {allowed}; got NaT")
            return ("datetime" if value.tzinfo is None else "datetime with time zone"), value
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float, np.integer, np.floating)):
            raise TypeError(f"timestamp must be {allowed}; got {type(timestamp).__name__} {short_repr(timestamp)}")
        if not math.isfinite(timestamp):
            raise ValueError(f"timestamp must be {allowed}; got {timestamp!r}")
        return "number", float(timestamp)

    def observe(self, user, item: int, timestamp: float) -> str:
        key = user_key(user)
        item = check_id(item, "item (a course id)")
        if not isinstance(item, int) or item < 1:
            raise ValueError(f"item must be a course id, an integer >= 1; got {short_repr(item)}")
        kind, timestamp = self._timestamp(timestamp)
        if self.time_kind is not None and kind != self.time_kind:
            raise TypeError(f"this store keeps {self.time_kind} timestamps; got a {kind} ({timestamp!r})")
        self.time_kind = kind
        events = self._events.setdefault(key, [])
        event = (timestamp, item)
        times = [t for t, _ in events]
        lo, hi = bisect.bisect_left(times, timestamp), bisect.bisect_right(times, timestamp)
        if event in events[lo:hi]:
            return "duplicate"
        if events and timestamp < events[-1][0]:
            if self.late == "refuse" or (len(events) == self.window and timestamp < events[0][0]):
                return "refused"
            events.insert(hi, event)
            status = "inserted"
        else:
            events.append(event)
            status = "added"
        if len(events) > self.window:
            del events[0]
        return status

    def history(self, user) -> np.ndarray:
        """The user's window of item ids, oldest first (empty for an unknown user)."""
        return np.array([item for _, item in self._events.get(user_key(user), [])], dtype=np.int64)

    def forget(self, user) -> int:
        """Delete everything kept about ``user``; returns how many events were removed."""
        return len(self._events.pop(user_key(user), []))

    def __contains__(self, user) -> bool:
        return user_key(user) in self._events

    def __len__(self) -> int:
        return len(self._events)


class Fallback:
    """A scorer that answers with ``fallback`` for histories shorter than ``min_events`` real
    items (new users) and with ``model`` otherwise. Both score (B, T) -> (B, >= V)."""

    def __init__(self, model, fallback, min_events: int):
        self.model, self.fallback, self.min_events = model, fallback, min_events
        self.max_len = model.max_len

    @torch.no_grad()
    def score(self, input_ids: Tensor) -> Tensor:
        out = self.model.score(input_ids).float()  # (B, V)
        short = (input_ids != PAD).sum(1) < self.min_events  # (B,)
        if short.any():
            out[short] = self.fallback.score(input_ids[short]).float()[:, : out.shape[1]].to(out.device)
        return out


def fit_base(stream: Stream, model: nn.Module, epochs: int, lr: float, batch_size: int,
             seed: int = 0) -> nn.Module:
    """Train ``model`` on the events before the stream (period -1), every target, ``epochs`` epochs."""
    _, seqs, _ = stream.sequences(0)
    fit_events(model, NewEventBatches(seqs, [0] * len(seqs), model.max_len, batch_size), epochs, lr, seed)
    return model


def summary(results: dict[str, StreamResult], reference: str = "retrain") -> pd.DataFrame:
    """One row per strategy: mean per-period NDCG@10 and HR@10, relative to ``reference``,
    update seconds and targets trained on (the compute), and forgetting."""
    rows = {name: {"ndcg@10": r.periods["ndcg@10"].mean(), "hr@10": r.periods["hr@10"].mean(),
                   "update s": r.periods["update_s"].sum(),
                   "targets trained": r.periods["trained_targets"].sum(),
                   "forgetting": r.forgetting} for name, r in results.items()}
    table = pd.DataFrame(rows).T
    if reference in table.index:
        ref = table.loc[reference]
        table[f"ndcg vs {reference}"] = table["ndcg@10"] / ref["ndcg@10"] - 1
        table[f"compute vs {reference}"] = table["targets trained"] / ref["targets trained"]
    return table


def paired_gaps(results: dict[str, StreamResult], reference: str = "retrain", metric: str = "ndcg@10",
                n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Each strategy against ``reference`` on the same evaluated events, paired.

    Every strategy is scored on the same sampled events of every period, so the per-event
    differences (N,) (all periods pooled) go to :func:`helpers.metrics.paired_comparison`:
    ``diff`` = strategy - reference with a bootstrap CI over events, and the Wilcoxon p-value.
    ``relative`` (and its CI) divides by the reference's mean, held fixed. Pooled means equal
    the mean of per-period means when every period evaluates as many events (``max_events``).
    Events are resampled one by one, although one user's events are related: a bootstrap over
    users (clusters) would give somewhat wider CIs.
    """
    ref = results[reference]
    ref_order = np.concatenate([info["order"].to_numpy() for info in ref.events])
    ref_values = np.concatenate([r.metrics[metric] for r in ref.results])  # (N,)
    rows = {}
    for name, r in results.items():
        if name == reference:
            continue
        order = np.concatenate([info["order"].to_numpy() for info in r.events])
        if not np.array_equal(order, ref_order):
            raise ValueError(f"{name} and {reference} were not scored on the same events")
        out = metrics.paired_comparison(np.concatenate([x.metrics[metric] for x in r.results]), ref_values,
                                        level, n_resamples, seed)
        scale = out["mean_b"] or float("nan")  # a reference that never hits has no relative gap
        rows[name] = {metric: out["mean_a"], reference: out["mean_b"], "diff": out["diff"],
                      "diff lo": out["ci_low"], "diff hi": out["ci_high"], "relative": out["diff"] / scale,
                      "relative lo": out["ci_low"] / scale, "relative hi": out["ci_high"] / scale,
                      "p": out["p_wilcoxon"], "events": len(ref_values)}
    return pd.DataFrame(rows).T.rename_axis("strategy")


def forgetting_ci(results: dict[str, StreamResult], n_resamples: int = 1000, seed: int = 0,
                  level: float = 0.95) -> pd.DataFrame:
    """Forgetting of each strategy with a paired bootstrap CI over period 0's events: NDCG@10 just
    after learning period 0 (``learned``, (N0,)) minus at the end (``final``, the same events)."""
    rows = {}
    for name, r in results.items():
        out = metrics.paired_comparison(r.learned, r.final, level, n_resamples, seed)
        rows[name] = {"just after": out["mean_a"], "at the end": out["mean_b"], "forgetting": out["diff"],
                      "lo": out["ci_low"], "hi": out["ci_high"], "events": len(r.learned)}
    return pd.DataFrame(rows).T.rename_axis("strategy")
