"""Recommenders that read item text: zero-shot content scores, text-initialised SASRec and
BERT4Rec, and a cold-start split that shows what text buys.

Letters: B batch, T time, D text-vector width (384 for all-MiniLM-L6-v2), H model width,
V = n_items + 1 (PAD row/column included). Text vectors come from
:func:`helpers.text.encode` (one row per item id, row 0 = PAD = zeros).

* :class:`ContentRecommender` - nothing trained: the user is the (recency-weighted) mean
  of the text vectors of their history, and items are ranked by cosine similarity.
* :class:`TextItemEmbedding` - item embeddings ``Linear(D -> H)(frozen text vectors)``,
  plus a learned ID embedding that starts at zero, so training begins from the text and
  learns what the text misses (the "ID + text" idea of Harte et al., RecSys 2023).
  :func:`text_sasrec` and :func:`text_bert4rec` put it into the stock models in place of
  their ID embedding tables; nothing in ``sasrec.py`` or ``bert4rec.py`` changes.
* :func:`cold_start_split` and :func:`by_target` - items that never appear in training, and
  metrics for cold/warm and head/tail targets.
* :func:`split_time` and :func:`tags_before` - item texts from the past only: user tags are
  events, and a tag written after the split point (on a cold item, almost always by a user who
  rated it) tells the text model who will watch it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers import data, metrics, preprocess
from helpers.bert4rec import BERT4Rec, BERT4RecConfig
from helpers.evaluate import EvalResult
from helpers.ids import PAD
from helpers.sasrec import SASRec, SASRecConfig
from helpers.split import EvalSet, Split, check_chronological, user_sequences


# ---------------------------------------------------------------- zero-shot content scores
class ContentRecommender:
    """Cosine between the user's mean text vector and every item's; nothing is trained.

    ``item_vectors`` (V, D): row ``i`` = item ``i``'s text vector, row 0 (PAD) ignored.
    The user vector is ``sum_t w_t x_t / sum_t w_t`` over the history's real items, with
    ``w_t = decay ** (age)`` (age 0 = the most recent item): ``decay=1`` is the plain mean,
    smaller values follow the latest items. Items without text (zero rows) score 0.
    """

    def __init__(self, item_vectors: Tensor, max_len: int = 50, decay: float = 1.0):
        if not 0 < decay <= 1:
            raise ValueError(f"decay must lie in (0, 1], got {decay}")
        self.items = F.normalize(torch.as_tensor(item_vectors, dtype=torch.float32), dim=-1)  # (V, D)
        self.max_len, self.decay = max_len, decay

    def user_vectors(self, input_ids: Tensor) -> Tensor:
        """(B, T) left-padded histories -> (B, D) unit user vectors (zero for an empty history)."""
        input_ids = input_ids[:, -self.max_len:]
        T = input_ids.shape[1]
        age = torch.arange(T - 1, -1, -1, dtype=torch.float32)  # (T,): 0 at the last column
        w = (self.decay ** age) * (input_ids != PAD)  # (B, T)
        mean = (w[..., None] * self.items[input_ids]).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-12)  # (B, D)
        return F.normalize(mean, dim=-1)

    def score(self, input_ids: Tensor) -> Tensor:
        """(B, T) -> (B, V) cosine similarities; the PAD column is -inf."""
        scores = self.user_vectors(input_ids.cpu()) @ self.items.T  # (B, V)
        scores[:, PAD] = float("-inf")
        return scores


# ---------------------------------------------------------------- text-initialised embeddings
class TextItemEmbedding(nn.Module):
    """Item embeddings from text: ``weight = Linear(D -> H)(text) [+ ID embedding]``, (V', H).

    ``text_vectors`` (V, D) stay frozen (a buffer); the projection is learned and starts at
    the scale of an ID embedding (normal, std ``init_std``). With ``id_embeddings`` each item
    also gets a learned vector, zero at the start, so the model first sees pure text.
    ``extra_rows`` appends learned rows for tokens without text (BERT4Rec's MASK). Row PAD
    is always zero. ``forward(ids)`` looks rows up like ``nn.Embedding``.
    """

    def __init__(self, text_vectors: Tensor, hidden: int, id_embeddings: bool = True,
                 extra_rows: int = 0, init_std: float = 0.02):
        super().__init__()
        text = torch.as_tensor(text_vectors, dtype=torch.float32)
        self.register_buffer("text", text, persistent=False)  # (V, D), frozen
        self.proj = nn.Linear(text.shape[1], hidden)
        nn.init.normal_(self.proj.weight, std=init_std)
        nn.init.zeros_(self.proj.bias)
        self.ids = nn.Parameter(torch.zeros(len(text), hidden)) if id_embeddings else None  # (V, H)
        self.extra = nn.Parameter(torch.randn(extra_rows, hidden) * init_std)  # (extra, H)
        keep = torch.ones(len(text) + extra_rows, 1)
        keep[PAD] = 0
        self.register_buffer("keep", keep, persistent=False)  # (V', 1): zero at PAD

    @property
    def weight(self) -> Tensor:
        """(V', H) item embeddings, recomputed from the current parameters."""
        w = self.proj(self.text)  # (V, H)
        if self.ids is not None:
            w = w + self.ids
        return torch.cat([w, self.extra]) * self.keep

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)  # (..., H)

    @torch.no_grad()
    def forget(self, items: np.ndarray | Sequence[int]) -> None:
        """Zero the ID vectors of ``items``: as if they were added after training (text kept)."""
        if self.ids is not None:
            self.ids[torch.as_tensor(np.asarray(items, dtype=np.int64))] = 0


class TiedDecoder(nn.Module):
    """BERT's output layer ``h @ embedding.weight.T + bias``, tied to a computed embedding.

    ``BertForMaskedLM`` ties its decoder to the input table by sharing one ``Parameter``;
    a :class:`TextItemEmbedding` has no such parameter, so this decoder reads it instead.
    It keeps ``weight`` and ``bias`` attributes, which :func:`helpers.bert4rec.mlm_loss` uses.
    """

    def __init__(self, embedding: TextItemEmbedding, bias: nn.Parameter):
        super().__init__()
        self.embedding, self.bias = embedding, bias

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight  # (V + 1, H)

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(h, self.weight, self.bias)  # (..., V + 1)


def text_sasrec(config: SASRecConfig, text_vectors: Tensor, id_embeddings: bool = True) -> SASRec:
    """A stock :class:`SASRec` whose ``item_emb`` (input and tied output) is text-initialised."""
    if len(text_vectors) != config.n_items + 1:
        raise ValueError(f"text_vectors has {len(text_vectors)} rows, expected n_items + 1 = {config.n_items + 1}")
    model = SASRec(config)
    model.item_emb = TextItemEmbedding(text_vectors, config.hidden, id_embeddings)
    return model


def text_bert4rec(config: BERT4RecConfig, text_vectors: Tensor, id_embeddings: bool = True) -> BERT4Rec:
    """A stock :class:`BERT4Rec` with text-initialised item rows (input table and tied decoder);
    MASK gets a learned row of its own (``extra_rows=1``)."""
    if len(text_vectors) != config.n_items + 1:
        raise ValueError(f"text_vectors has {len(text_vectors)} rows, expected n_items + 1 = {config.n_items + 1}")
    model = BERT4Rec(config)
    embedding = TextItemEmbedding(text_vectors, config.hidden, id_embeddings, extra_rows=1,
                                  init_std=config.init_range)
    model.mlm.bert.embeddings.word_embeddings = embedding
    predictions = model.mlm.cls.predictions
    predictions.decoder = TiedDecoder(embedding, predictions.bias)
    return model


def forget_items(model: SASRec, items: np.ndarray | Sequence[int]) -> None:
    """Reset what a SASRec learned from the ID alone for ``items`` (ID rows to zero): the
    state of an item added to the catalogue after training. Text vectors are kept."""
    emb = model.item_emb
    if isinstance(emb, TextItemEmbedding):
        emb.forget(items)
    else:
        with torch.no_grad():
            emb.weight[torch.as_tensor(np.asarray(items, dtype=np.int64))] = 0


# ---------------------------------------------------------------- cold start
LLAMAREC_COUNTS = (610, 3650, 90274)  # users, items, interactions of ML latest-small in LlamaRec's table


def llamarec_latest_small() -> preprocess.Prepared:
    """ML latest-small prepared as LlamaRec (every rating an interaction, 5-core on users and items).

    Raises ``ValueError`` when the counts differ from :data:`LLAMAREC_COUNTS` (another file or
    another preprocessing): the comparison with LlamaRec's published table would not hold.
    """
    prepared = preprocess.prepare(data.load_interactions("ml-latest-small"), k_core=(5, 5))
    got = (prepared.n_users, prepared.n_items, len(prepared.interactions))
    if got != LLAMAREC_COUNTS:
        raise ValueError(f"LlamaRec's preprocessing of ML latest-small gives (users, items, interactions) "
                         f"= {LLAMAREC_COUNTS}, got {got}: is the data file the published one?")
    return prepared


def load_tag_events(name: str = "ml-latest-small", data_dir=None) -> pd.DataFrame:
    """Every tag event of a MovieLens "latest" data set: ``user_id, item_id, tag, timestamp``
    (original ids, file order). ``data.load_items`` keeps only each item's distinct tags and
    drops when they were written; a text that must not read the future needs the times."""
    spec = data.get_spec(name)
    (rel,) = [r for r in spec.files if r.rsplit("/", 1)[-1] == "tags.csv"]
    return data.read_table(data.fetch(name, data_dir) / rel, ",", ["user_id", "item_id", "tag", "timestamp"],
                           ints=("user_id", "item_id", "timestamp"), header=True, quoting=csv.QUOTE_MINIMAL)


def split_time(df: pd.DataFrame, cold_items: np.ndarray) -> int:
    """The split point of a cold-start split: the first timestamp at which any of
    ``cold_items`` was interacted with (``df`` in course ids, as for :func:`cold_start_split`).
    Before it every cold item was still unseen, so a text built from earlier events cannot know
    who will watch it. For ``how="newest"`` this is when the first new release appeared; for
    random cold items it lies early in the log and leaves few tags to anyone (the honest price
    of items that are cold at random times)."""
    times = df.loc[df["item_id"].isin(np.asarray(cold_items)), "timestamp"]
    if times.empty:
        raise ValueError("no interaction with any cold item")
    return int(times.min())


def tags_before(items: pd.DataFrame, tag_events: pd.DataFrame, cutoff: int | None) -> pd.DataFrame:
    """``items`` (``data.load_items``) whose ``tags`` hold only the tags of ``tag_events`` written
    before ``cutoff`` (None: all of them; pass the events without held-out users' to keep their
    tags out), distinct, in file order, for ``text.item_texts``. Title, year and genres are
    metadata a new item has on the day it is added, and stay."""
    kept = tag_events if cutoff is None else tag_events[tag_events["timestamp"] < cutoff]
    per_item = kept.groupby("item_id", sort=False)["tag"].agg(lambda s: list(dict.fromkeys(s)))
    out = items.copy()
    out["tags"] = [per_item.get(i, []) for i in out["item_id"]]
    return out


def cold_items_newest(df: pd.DataFrame, n_items: int, cold_fraction: float) -> np.ndarray:
    """The ``round(cold_fraction * n_items)`` items whose first interaction is latest."""
    first = df.groupby("item_id")["timestamp"].min().sort_values(kind="stable")  # oldest first
    n_cold = int(round(cold_fraction * n_items))
    return np.sort(first.index.to_numpy(dtype=np.int64)[len(first) - n_cold:])


def cold_start_split(df: pd.DataFrame, n_items: int, cold_fraction: float = 0.1, seed: int = 0,
                     how: str = "newest", cold_items: Sequence[int] | None = None) -> tuple[Split, np.ndarray]:
    """Leave-one-out in which some items never appear in training: ``(split, cold_items)``.

    Cold items: ``how="newest"`` (default) takes the ``cold_fraction`` of items that were
    first interacted with latest - new releases, the cold start a service meets; ``"random"``
    draws them uniformly with ``seed`` (less realistic, but not confounded with age);
    ``cold_items`` names them outright (then ``how`` and ``cold_fraction`` are unused).

    Every interaction with a cold item is removed from every user's sequence, except the
    user's last one: the test target stays, cold or not. From the warm rest ``w`` of the
    earlier items: train ``w[:-1]``, validation ``w[:-1] -> w[-1]`` (always warm), test
    ``w -> last item``. Users with fewer than 2 warm earlier items only train.
    """
    if not 0 <= cold_fraction < 1:
        raise ValueError(f"cold_fraction must lie in [0, 1), got {cold_fraction}")
    check_chronological(df)
    if cold_items is not None:
        cold = np.unique(np.asarray(cold_items, dtype=np.int64))
        how = "given"
    elif how == "newest":
        cold = cold_items_newest(df, n_items, cold_fraction)
    elif how == "random":
        rng = np.random.default_rng(seed)
        cold = np.sort(rng.choice(np.arange(1, n_items + 1), int(round(cold_fraction * n_items)), replace=False))
    else:
        raise ValueError(f"how must be 'newest' or 'random', got {how!r}")
    if len(cold) and (cold.min() < 1 or cold.max() > n_items):
        raise ValueError(f"cold items must lie in 1..{n_items}")
    is_cold = np.zeros(n_items + 1, dtype=bool)
    is_cold[cold] = True
    users, seqs = user_sequences(df)
    train, parts = [], {"valid": ([], [], []), "test": ([], [], [])}
    for u, s in zip(users, seqs):
        warm = s[:-1][~is_cold[s[:-1]]]
        if len(warm) < 2:
            train.append(warm if len(warm) else s[:0])
            continue
        train.append(warm[:-1])
        for name, history, target in (("valid", warm[:-1], warm[-1]), ("test", warm, s[-1])):
            parts[name][0].append(u)
            parts[name][1].append(history)
            parts[name][2].append(target)
    valid, test = (EvalSet(np.array(p[0], dtype=np.int64), p[1], np.array(p[2], dtype=np.int64))
                   for p in parts.values())
    protocol = (f"cold start ({how}, {len(cold)} cold items never trained on): leave-one-out, "
                "last item test (cold or warm), last warm item validation")
    return Split(n_items, train, users, valid, test, protocol), cold


def by_target(result: EvalResult, cold_items: np.ndarray | None = None, popularity: np.ndarray | None = None,
              head_share: float = 0.2, ci: Sequence[str] = (), n_resamples: int = 1000) -> pd.DataFrame:
    """Mean metrics for every user, then by target group: cold/warm (when ``cold_items``
    given) and head/tail (when the training ``popularity`` (V,) is given, see
    :func:`helpers.metrics.head_items`; an item never trained on is tail). Index
    ``(grouping, group)``; columns ``users``, each metric, and ``<metric> lo/hi`` for ``ci``."""
    targets = np.asarray(result.targets)
    groupings = {"all": np.full(len(targets), "all")}
    if cold_items is not None:
        is_cold = np.isin(targets, np.asarray(cold_items))
        groupings["cold start"] = np.where(is_cold, "cold", "warm")
    if popularity is not None:
        head = metrics.head_items(popularity, head_share)[targets]
        groupings["popularity"] = np.where(head, "head", "tail")
    tables = []
    for name, groups in groupings.items():
        table = metrics.by_group(result.metrics, groups)
        for metric in ci:
            bounds = [metrics.bootstrap_ci(result.metrics[metric][groups == g], n_resamples=n_resamples)
                      if (groups == g).sum() >= 2 else (np.nan, np.nan) for g in table.index]
            table[f"{metric} lo"], table[f"{metric} hi"] = np.array(bounds).T
        tables.append(table.set_index(pd.MultiIndex.from_product([[name], table.index], names=["grouping", "group"])))
    return pd.concat(tables)
