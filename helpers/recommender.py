"""A trained model behind one call: ``recommend(history, k)`` in raw IDs, with titles and reasons.

:class:`Recommender` holds a trained sequence model, the item catalogue (course ID ->
raw ID, title, genres, popularity) and answers in the IDs a product uses, never the
course's ``1..n_items``. A history may name items by raw ID or by title; an unknown item
raises :class:`UnknownItems` listing every one, a title that fits several items raises
:class:`AmbiguousTitle` listing the candidates. An empty history gets the most popular
items, labelled as a fallback in the answer.

``save(folder)`` writes one artefact: ``weights.pt`` (a state dict, read back with
``weights_only=True``) and its sidecar ``weights.pt.sha256``, ``config.json`` (the format
version, the model kind and every field of its config) and ``items.csv`` (the catalogue)
as plain files, and ``MANIFEST.sha256`` with the sha256 of each of them, in ``sha256sum``
format (``sha256sum -c MANIFEST.sha256`` checks it; ``<hex> *name`` lines are read too).
The artefact's checksum is the sha256 of that manifest. ``load`` refuses, with an
:class:`ArtefactError` naming the file, an artefact whose files do not match it, whose
format is not one it reads (format 1, without the sidecar in the manifest, is converted),
or whose config lacks a field or has one the model does not know: a default is never
guessed for a field the artefact did not record.

The manifest proves the files belong together, not who wrote them: whoever can rewrite
the weights can rewrite the manifest. Pin the checksum (``load(folder, checksum=...)``,
``COURSE_MODEL_CHECKSUM`` for the service) to refuse any other artefact.

Per-user state lives in ``Recommender.users`` (:class:`helpers.online.OnlineHistories`, each
user's latest ``max_len`` events): ``observe(user, item, timestamp)`` records an event,
``recommend_for(user)`` answers from it. ``recommend`` itself is stateless.

Letters: T window (``model.max_len``), V = n_items + 1, K recommendations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from helpers import data, explain, split, storage
from helpers.gru4rec import GRU4Rec, GRU4RecConfig
from helpers.ids import PAD, ascii_int, check_id, short_repr
from helpers.online import OnlineHistories
from helpers.preprocess import IdMap
from helpers.profile import Profile
from helpers.sasrec import SASRec, SASRecConfig
from helpers.sequences import pad_left

MODEL_KINDS: dict[str, tuple[type[nn.Module], type]] = {
    "sasrec": (SASRec, SASRecConfig),
    "gru4rec": (GRU4Rec, GRU4RecConfig),
}
FILES = ("weights.pt", "weights.pt.sha256", "config.json", "items.csv")  # every file, in the manifest
MANIFEST = "MANIFEST.sha256"
FORMAT = 2  # bump when the artefact layout changes; 2: the manifest covers the weights' sidecar
READS = {1: FILES[:1] + FILES[2:], 2: FILES}  # format -> the files its manifest must list
CATALOGUE_COLUMNS = ("raw_id", "title")  # items.csv must have these (year, genres, popularity are optional)


class RecommendError(ValueError):
    """A request the recommender cannot answer; the message says why."""


class UnknownItems(RecommendError):
    """Some history items are not in the catalogue; ``.items`` lists them."""

    def __init__(self, items: list):
        self.items = items
        more = f" and {len(items) - 10} more" if len(items) > 10 else ""
        shown = ", ".join(short_repr(i) for i in items[:10]) + more
        super().__init__(f"unknown item(s), not in the catalogue: [{shown}]")


class AmbiguousTitle(RecommendError):
    """A title that fits several items; ``.candidates`` maps raw ID -> "title (year)"."""

    def __init__(self, title: str, candidates: dict):
        self.title, self.candidates = title, candidates
        super().__init__(f"title {title!r} fits {len(candidates)} items, pass one of their IDs "
                         f"instead: {candidates}")


class ArtefactError(ValueError):
    """A saved recommender whose files are missing or do not match its manifest."""


def normalise_checksum(text: str) -> str:
    """A sha256 as 64 lower-case hex digits: case, surrounding whitespace and a ``sha256:``
    prefix are ignored (``COURSE_MODEL_CHECKSUM`` is pasted from many places)."""
    digest = text.strip().lower().removeprefix("sha256:").strip()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ArtefactError(f"the expected checksum {short_repr(text)} is not a sha256 (64 hex digits, "
                            "optionally after 'sha256:')")
    return digest


def read_manifest(path: Path) -> dict[str, str]:
    """``name -> sha256`` from a file in either ``sha256sum`` form: ``<hex>  name`` (text) or
    ``<hex> *name`` (binary); any other line is an :class:`ArtefactError` naming it."""
    recorded = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line[:64], line[64:66], line[66:]
        if sep not in ("  ", " *") or not name or len(digest) != 64 or \
                any(c not in "0123456789abcdef" for c in digest.lower()):
            raise ArtefactError(f"{path} line {number} is not '<sha256>  name' or '<sha256> *name' "
                                f"(sha256sum's two forms): {short_repr(line)}")
        recorded[name] = digest.lower()
    return recorded


@dataclass
class Recommendation:
    """One recommended item, in raw IDs."""

    item: Any  # raw item ID
    title: str
    score: float  # the model's score (a logit; popularity fallback: log share of interactions)
    because: list = field(default_factory=list)  # raw IDs of the history items that drove it, strongest first
    because_titles: list[str] = field(default_factory=list)
    shared_genres: list[str] = field(default_factory=list)  # genres it shares with `because`


@dataclass
class Answer:
    """What :meth:`Recommender.recommend` returns."""

    items: list[Recommendation]
    source: str  # "model", or "popularity (empty history)" for the fallback
    history: list  # the history as raw IDs, oldest first

    def frame(self) -> pd.DataFrame:
        """One row per recommendation, for notebooks."""
        return pd.DataFrame([dataclasses.asdict(r) for r in self.items],
                            index=pd.RangeIndex(1, len(self.items) + 1, name="rank"))

    def sentence(self, n: int = 2) -> list[str]:
        """One line per recommendation: 'Title, because you watched X and Y'."""
        out = []
        for r in self.items:
            if not r.because_titles:
                out.append(f"{r.title}: {self.source}")
                continue
            reason = " and ".join(r.because_titles[:n])
            genres = f" (shared genres: {', '.join(r.shared_genres)})" if r.shared_genres else ""
            out.append(f"{r.title}, because you watched {reason}{genres}")
        return out


def catalogue(ids: IdMap, items: pd.DataFrame | None = None, sequences: Sequence[np.ndarray] = ()) -> pd.DataFrame:
    """Course IDs 1..n_items (index) with ``raw_id``, ``title``, ``genres``, ``popularity``.

    ``items`` is :func:`helpers.data.load_items`'s frame (titles and genres where the data
    has them, else the raw ID is the title); ``popularity`` counts each item in ``sequences``.
    """
    cat = pd.DataFrame({"raw_id": ids.items.to_numpy()}, index=pd.RangeIndex(1, ids.n_items + 1, name="item"))
    info = items.set_index("item_id") if items is not None else pd.DataFrame()
    title = info["title"].reindex(cat["raw_id"]).to_numpy() if "title" in info else cat["raw_id"].astype(str)
    year = info["year"].reindex(cat["raw_id"]).to_numpy() if "year" in info else [pd.NA] * len(cat)
    genres = info["genres"].reindex(cat["raw_id"]).to_numpy() if "genres" in info else [[]] * len(cat)
    cat["title"] = [str(t) if isinstance(t, str) else str(r) for t, r in zip(title, cat["raw_id"])]
    cat["year"] = pd.array([y if pd.notna(y) else pd.NA for y in year], dtype="Int64")
    cat["genres"] = [list(g) if isinstance(g, (list, np.ndarray)) else [] for g in genres]
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else np.array([], int)
    cat["popularity"] = np.bincount(flat, minlength=ids.n_items + 1)[1:]
    return cat


def from_registry(dataset: str, profile: Profile, model: str = "sasrec",
                  seed: int = 0) -> tuple[Recommender, split.Split]:
    """The registry's ``model`` trained on ``dataset``'s standard split (read from the model
    cache when it is there), with the catalogue of that data, and the split (test histories
    in course IDs: ``rec.raw_id`` maps them back); what the benchmarks serve."""
    from helpers import registry  # imports every model of the course: only when asked

    prepared = registry.prepare(dataset, profile, seed)
    s = split.leave_one_out(prepared.interactions, n_items=prepared.n_items)
    fitted = registry.fit(model, s, profile, seed=seed, progress=False).cpu()
    return Recommender(fitted, catalogue(prepared.ids, data.load_items(dataset), s.train)), s


def bake(model: nn.Module) -> nn.Module:
    """The model for serving: eval mode, and a computed item table (e.g. text-aware SASRec's)
    stored as a plain ``nn.Embedding``, so the state dict alone rebuilds it. Same scores."""
    if hasattr(model, "item_emb") and not isinstance(model.item_emb, nn.Embedding):
        with torch.no_grad():
            weight = model.item_emb.weight.detach().clone()  # (V, H)
        model.item_emb = nn.Embedding.from_pretrained(weight, freeze=True, padding_idx=PAD)
    return model.eval()


def _kind(model: nn.Module) -> str:
    for kind, (cls, _) in MODEL_KINDS.items():
        if type(model) is cls:
            return kind
    raise TypeError(f"cannot save a {type(model).__name__}; supported: {sorted(MODEL_KINDS)}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Recommender:
    """A trained scorer plus its catalogue, answering in raw IDs (see the module docstring)."""

    def __init__(self, model: nn.Module, items: pd.DataFrame, explain_with: str = "occlusion"):
        if explain_with not in explain.METHODS:
            raise ValueError(f"explain_with must be one of {explain.METHODS}, got {explain_with!r}")
        if len(items) == 0:
            raise ValueError("the catalogue is empty: a recommender needs at least one item")
        broken = [name for name, t in [*model.named_parameters(), *model.named_buffers()]
                  if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if broken:
            raise ValueError(f"the model has NaN or infinite values in {broken}: it would answer "
                             "nothing meaningful; retrain it or load a good copy")
        self.model = bake(model)
        self.items = items  # see `catalogue`
        self.n_items = len(items)
        self.explain_with = explain_with
        self.users = OnlineHistories(window=self.max_len)  # per-user windows, see observe()
        # plain lists and dicts, indexed by course ID: a pandas lookup costs microseconds each
        self._raw_ids = [None, *(r.item() if isinstance(r, np.generic) else r for r in items["raw_id"])]
        self._titles = [None, *items["title"]]
        self._genres = [set(), *(set(g) for g in items["genres"])]
        self._by_raw = {raw: course for course, raw in enumerate(self._raw_ids) if course}
        folded = items["title"].str.casefold().to_numpy()
        self._by_title = items.reset_index().groupby(folded)["item"].agg(list).to_dict()  # title -> course IDs
        self._popular = torch.as_tensor(np.log(items["popularity"].to_numpy() + 1.0) -
                                        math.log(items["popularity"].sum() + self.n_items))
        self.checksum: str | None = None  # set by save() and load()

    @property
    def max_len(self) -> int:
        return self.model.max_len

    # ------------------------------------------------------------ IDs
    def resolve(self, history: Sequence) -> np.ndarray:
        """Raw IDs and/or titles (``"Heat"`` or ``"Heat (1995)"``) -> course IDs, oldest first.

        IDs follow :func:`helpers.ids.check_id`: a bool or a float is a :class:`RecommendError`,
        and only ASCII digits spell a number (``"50"``, not ``"５０"``).
        """
        out, unknown = [], []
        for entry in history:
            item = self._resolve_one(entry)
            if item is None:
                unknown.append(entry)
            else:
                out.append(item)
        if unknown:
            raise UnknownItems(unknown)
        return np.asarray(out, dtype=np.int64)

    def _resolve_one(self, entry) -> int | None:
        try:
            entry = check_id(entry)  # the course's one id rule: no bool, no float
        except TypeError as error:
            raise RecommendError(str(error)) from None
        if isinstance(entry, int):
            return self._by_raw.get(entry)
        if entry in self._by_raw:  # raw IDs that are strings (e.g. Amazon ASINs)
            return self._by_raw[entry]
        key = entry.strip().casefold()
        found = self._by_title.get(key)
        if found is None and key.endswith(")") and "(" in key:  # "Title (1995)"
            head, _, year = key.rpartition("(")
            found = [i for i in self._by_title.get(head.strip(), [])
                     if str(self.items.at[i, "year"]) == year.rstrip(")").strip()] or None
        number = ascii_int(key)
        if found is None and number is not None and number in self._by_raw:
            return self._by_raw[number]
        if not found:
            return None
        if len(found) > 1:
            raise AmbiguousTitle(entry, {self.raw_id(i): f"{self.items.at[i, 'title']} ({self.items.at[i, 'year']})"
                                         for i in found})
        return int(found[0])

    def raw_id(self, item: int):
        """The raw ID of course item ``item``."""
        return self._raw_ids[int(item)]

    # ------------------------------------------------------------ scoring
    def scores(self, history: np.ndarray) -> torch.Tensor:
        """(V,) scores of every item after a course-ID history; column PAD is -inf."""
        window = pad_left([history], self.max_len)  # (1, T)
        with torch.inference_mode():
            return self.model.score(window)[0, : self.n_items + 1].float()

    def recommend(self, history: Sequence, k: int = 10, exclude_seen: bool = True,
                  explain_top: int = 2) -> Answer:
        """The top ``k`` items after ``history`` (raw IDs or titles, oldest first).

        ``exclude_seen`` drops every history item from the answer. ``explain_top`` (0 = no
        explanation) history items per recommendation are named as its reasons, found with
        ``explain_with`` (occlusion by default: the items whose removal lowers its score most).
        """
        if k < 1:
            raise RecommendError(f"k must be >= 1, got {k}")
        ids = self.resolve(history)
        if len(ids) == 0:
            scores = torch.cat([torch.tensor([float("-inf")]), self._popular.float()])  # (V,)
            source = "popularity (empty history)"
        else:
            scores, source = self.scores(ids).clone(), "model"
        scores[PAD] = float("-inf")
        if exclude_seen and len(ids):
            scores[torch.as_tensor(ids)] = float("-inf")
        values, top = scores.topk(min(k, self.n_items))
        keep = ~torch.isneginf(values)
        values, top = values[keep], top[keep]
        reasons = self._reasons(ids, top, explain_top) if len(ids) and explain_top else [[] for _ in top]
        recs = []
        for item, score, because in zip(top.tolist(), values.tolist(), reasons):
            shared = sorted(self._genres[item].intersection(*(self._genres[b] for b in because))) if because else []
            recs.append(Recommendation(self._raw_ids[item], self._titles[item], score,
                                       [self._raw_ids[b] for b in because], [self._titles[b] for b in because],
                                       shared))
        return Answer(recs, source, [self.raw_id(i) for i in ids])

    # ------------------------------------------------------------ per-user state
    def observe(self, user, item, timestamp: float) -> str:
        """Record that ``user`` met ``item`` (raw ID or title) at ``timestamp``.

        Returns ``"added"``, ``"inserted"`` (out of order, put in place), ``"duplicate"``
        (the same item and time again: ignored) or ``"refused"`` (see ``OnlineHistories``).
        """
        (course_id,) = self.resolve([item])
        return self.users.observe(user, int(course_id), timestamp)

    def recommend_for(self, user, k: int = 10, exclude_seen: bool = True, explain_top: int = 2) -> Answer:
        """:meth:`recommend` from the events observed for ``user`` (none: the popularity fallback)."""
        return self.recommend([self._raw_ids[i] for i in self.users.history(user)], k, exclude_seen, explain_top)

    def _reasons(self, ids: np.ndarray, top: torch.Tensor, n: int) -> list[list[int]]:
        """For each recommended item, the ``n`` history items (course IDs) that drove it most."""
        window = ids[-self.max_len:]
        attribution = explain.attribute(self.model, window, top, self.explain_with)  # (K, T')
        order = attribution.argsort(dim=1, descending=True)[:, :n]  # (K, n)
        return [[int(window[t]) for t, a in zip(row, attribution[k, row]) if a > 0]
                for k, row in enumerate(order.tolist())]

    # ------------------------------------------------------------ artefact
    def save(self, folder: str | os.PathLike) -> str:
        """Write the artefact into ``folder`` (created); returns its checksum."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        kind = _kind(self.model)
        storage.save_tensors(self.model.state_dict(), folder / "weights.pt")  # and weights.pt.sha256
        config = {"format": FORMAT, "kind": kind, "config": dataclasses.asdict(self.model.config),
                  "explain_with": self.explain_with}
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        items = self.items.assign(genres=self.items["genres"].str.join("|"))
        items.to_csv(folder / "items.csv")
        lines = "".join(f"{_sha256(folder / name)}  {name}\n" for name in FILES)
        (folder / MANIFEST).write_text(lines)
        self.checksum = hashlib.sha256(lines.encode()).hexdigest()
        return self.checksum

    @classmethod
    def load(cls, folder: str | os.PathLike, checksum: str | None = None) -> Recommender:
        """Read an artefact written by :meth:`save`, after verifying every file against the
        manifest (and the manifest against ``checksum`` when given, in any case, with or
        without a ``sha256:`` prefix)."""
        folder = Path(folder)
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise ArtefactError(f"{folder} is not a recommender artefact: {MANIFEST} is missing")
        actual = hashlib.sha256(manifest.read_bytes()).hexdigest()
        if checksum is not None and actual != normalise_checksum(checksum):
            raise ArtefactError(f"{manifest} has checksum {actual}, expected {checksum.strip()}: "
                                "a different or altered artefact")
        recorded = read_manifest(manifest)
        for name, digest in recorded.items():
            path = folder / name
            if not path.is_file():
                raise ArtefactError(f"{path} is listed in {MANIFEST} but missing; save the artefact again")
            if _sha256(path) != digest:
                raise ArtefactError(f"{path} does not match {MANIFEST} (altered or truncated); save it again")
        if "config.json" not in recorded:
            raise ArtefactError(f"{manifest} does not list config.json; save the artefact again")
        config = json.loads((folder / "config.json").read_text())
        found = config.get("format")
        if found not in READS:
            raise ArtefactError(f"{folder / 'config.json'}: artefact format {found!r}; this code reads formats "
                                f"{sorted(READS)} and writes {FORMAT}: use the version that wrote it, or save it again")
        missing = [name for name in READS[found] if name not in recorded]
        if missing:
            raise ArtefactError(f"{manifest} (format {found}) does not list {missing}; save the artefact again")
        model = _model_from_config(config, folder / "config.json")
        model.load_state_dict(storage.load_tensors(folder / "weights.pt"))
        recommender = cls(model, _read_catalogue(folder / "items.csv"), config.get("explain_with", "occlusion"))
        recommender.checksum = actual
        return recommender


def _model_from_config(config: dict, path: Path) -> nn.Module:
    """The model of a ``config.json``; every config field must be recorded, none unknown."""
    found = config.get("format")
    if config.get("kind") not in MODEL_KINDS:
        raise ArtefactError(f"{path} (format {found}): model kind {config.get('kind')!r} is not one of "
                            f"{sorted(MODEL_KINDS)}")
    model_cls, config_cls = MODEL_KINDS[config["kind"]]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    saved = config.get("config")
    if not isinstance(saved, dict):
        raise ArtefactError(f"{path} (format {found}) has no 'config' object")
    unknown, lacking = sorted(set(saved) - fields), sorted(fields - set(saved))
    if unknown or lacking:
        raise ArtefactError(f"{path} (format {found}, this code writes format {FORMAT}) does not fit "
                            f"{config_cls.__name__}: unknown fields {unknown}, missing fields {lacking}; "
                            "a default is never guessed for a missing field: use the version that wrote "
                            "it, or add the fields with the values the model was trained with")
    try:
        return model_cls(config_cls(**saved))
    except (TypeError, ValueError) as error:
        raise ArtefactError(f"{path} (format {found}): {error}") from None


def _read_catalogue(path: Path) -> pd.DataFrame:
    """``items.csv`` back as :func:`catalogue`'s frame; ``year``, ``genres`` and ``popularity``
    may be absent (NA, no genres, 0), ``item``, ``raw_id`` and ``title`` may not."""
    items = pd.read_csv(path, keep_default_na=False, dtype={"title": str, "genres": str})
    absent = [c for c in ("item", *CATALOGUE_COLUMNS) if c not in items.columns]
    if absent:
        raise ArtefactError(f"{path} has no column(s) {absent}; it needs item, raw_id and title")
    items = items.set_index("item")
    genres = items["genres"] if "genres" in items else pd.Series("", index=items.index)
    items["genres"] = [g.split("|") if g else [] for g in genres]
    items["year"] = pd.to_numeric(items["year"], errors="coerce").astype("Int64") if "year" in items else \
        pd.array([pd.NA] * len(items), dtype="Int64")
    items["popularity"] = pd.to_numeric(items["popularity"]).astype(np.int64) if "popularity" in items else 0
    return items
