"""Every model of the course by name: built, trained and scored one way, everywhere.

    from helpers import registry
    s = registry.load_split("ml-100k", profile)           # the standard leave-one-out split
    model = registry.fit("sasrec", s, profile)             # trained (or read from the cache)
    evaluate(model, s.test, s.n_items)                     # any fitted model is a scorer

:data:`MODELS` is an explicit dict, name -> :class:`ModelSpec`: which class, which settings,
which training settings. Notebooks and benchmark scripts build models only through
:func:`fit`, so the same model on the same profile and data gives the same number
everywhere. Adding a model is one file (config with ``from_profile``, model with
``forward(input_ids, labels=None)``, ``score`` and ``max_len``) plus one entry here.

Neural models train with :func:`helpers.train.train` and are cached
(:mod:`helpers.modelcache`): a later notebook asking for the same model on the same data
reads it instead of training it again. A fitted neural model carries its
:class:`helpers.train.TrainResult` as ``model.train_result`` (learning curve, best epoch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from helpers import (baselines, batches, bert4rec, bigram, bsarec, data, evaluate, gru4rec, item2vec, losses,
                     modelcache, preprocess, sasrec, split, train)
from helpers.course import default_device, seed_everything
from helpers.profile import Profile

# modules whose source decides a neural model's trained weights besides the model's own file
TRAINING_CODE = (train, losses, batches, evaluate)


def _nothing(*_) -> dict:
    return {}


def _steps(profile: Profile, factor: int) -> dict:
    """A model whose steps cost a fraction of a sequence model's takes ``factor`` times the
    profile's step cap (its epochs are many small steps), so it still trains several epochs."""
    return {"max_steps": None if profile.max_steps is None else factor * profile.max_steps}


@dataclass(frozen=True)
class ModelSpec:
    """How to build, train and score one registered model."""

    summary: str  # one line: what the model is
    baseline: type | None = None  # a count model: ``baseline(**settings).fit(sequences, n_items)``
    config: type | None = None  # a neural model's config class, with ``from_profile``
    model: type | None = None  # the ``nn.Module`` built from the config
    settings: dict = field(default_factory=dict)  # constructor/config values that define this entry
    train: Callable[[Profile], dict] = _nothing  # TrainConfig values for this model, from the profile
    batches: Callable[[Any], Callable] | None = None  # config -> make_batches; None = next-item windows
    inputs: Callable[[split.Split], dict] = _nothing  # extra model constructor arguments from the data
    causal: bool = False  # position t of forward's logits reads items 0..t only

    @property
    def neural(self) -> bool:
        return self.config is not None


MODELS: dict[str, ModelSpec] = {
    "pop": ModelSpec("most popular items (log-counts)", baseline=baselines.MostPopular),
    "markov": ModelSpec("first-order Markov chain, popularity prior", baseline=baselines.MarkovChain),
    "itemknn": ModelSpec("item-kNN, co-occurrence within 5 steps", baseline=baselines.ItemKNN,
                         settings={"window": 5}),
    "bigram": ModelSpec(
        "neural bigram: embedding -> linear -> softmax", config=bigram.BigramConfig,
        model=bigram.NeuralBigram,
        train=lambda p: {"max_len": 1, "lr": 5 * p.lr, **_steps(p, 5)}, causal=True),  # one layer takes a larger step
    "item2vec": ModelSpec(
        "skip-gram item embeddings, mean history vector", config=item2vec.Item2VecConfig,
        model=item2vec.Item2Vec,
        train=lambda p: {"batch_size": 16 * p.batch_size, "lr": 10 * p.lr, **_steps(p, 5)},  # pairs are cheap
        batches=lambda config: item2vec.skipgram_batches(window=5),
        inputs=lambda s: {"counts": item2vec.item_counts(s.train, s.n_items)}),
    "gru4rec": ModelSpec(
        "GRU over item embeddings, full softmax", config=gru4rec.GRU4RecConfig, model=gru4rec.GRU4Rec,
        train=lambda p: {"lr": gru4rec.LR}, causal=True),
    "sasrec": ModelSpec("causal self-attention, full softmax", config=sasrec.SASRecConfig,
                        model=sasrec.SASRec, causal=True),
    "sasrec_sampled": ModelSpec("SASRec, sampled softmax over 100 negatives", config=sasrec.SASRecConfig,
                                model=sasrec.SASRec, settings={"loss": "sampled", "n_negatives": 100},
                                causal=True),
    "sasrec_bce": ModelSpec("SASRec, BCE with one negative (the original paper)",
                            config=sasrec.SASRecConfig, model=sasrec.SASRec, settings={"loss": "bce"},
                            causal=True),
    "sasrec_linear": ModelSpec("SASRec with causal linear attention, elu + 1 features", config=sasrec.SASRecConfig,
                               model=sasrec.SASRec, settings={"attention": "linear"}, causal=True),
    "bsarec": ModelSpec("SASRec + causal low/high-frequency filter beside attention (BSARec)",
                        config=bsarec.BSARecConfig, model=bsarec.BSARec, causal=True),
    "bert4rec": ModelSpec("bidirectional masked model (Hugging Face BERT)", config=bert4rec.BERT4RecConfig,
                          model=bert4rec.BERT4Rec, batches=bert4rec.cloze_batches),
}


def names() -> list[str]:
    """Registered model names, in table order."""
    return list(MODELS)


def prepare(dataset: str, profile: Profile, seed: int = 0, **load) -> preprocess.Prepared:
    """The course's standard preparation of ``dataset``: 5-core, the profile's user subset.

    ``load`` goes to :func:`helpers.data.load_interactions` (``data_dir``, ``max_malformed``).
    """
    return preprocess.prepare(data.load_interactions(dataset, **load), k_core=(5, 5),
                              max_users=profile.max_users, seed=seed)


def load_split(dataset: str, profile: Profile, seed: int = 0, **load) -> split.Split:
    """The course's standard leave-one-out split of ``dataset`` under ``profile`` (``load``: see
    :func:`prepare`)."""
    prepared = prepare(dataset, profile, seed, **load)
    return split.leave_one_out(prepared.interactions, n_items=prepared.n_items)


def _route(spec: ModelSpec, overrides: dict) -> tuple[dict, dict]:
    """Split ``overrides`` into (model settings, TrainConfig values); a name in both goes to both."""
    if not spec.neural:
        return {**spec.settings, **overrides}, {}
    model_fields = {f.name for f in dataclasses.fields(spec.config)}
    train_fields = {f.name for f in dataclasses.fields(train.TrainConfig)}
    unknown = set(overrides) - model_fields - train_fields
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}: not fields of {spec.config.__name__} "
                        "nor of TrainConfig")
    return ({**spec.settings, **{k: v for k, v in overrides.items() if k in model_fields}},
            {k: v for k, v in overrides.items() if k in train_fields})


def configs(name: str, n_items: int, profile: Profile, *, seed: int = 0, **overrides) -> tuple[Any, train.TrainConfig]:
    """The model config and TrainConfig :func:`fit` uses for a neural model ``name``."""
    spec = MODELS[name]
    if not spec.neural:
        raise ValueError(f"{name!r} is a count model: it has no model or training config")
    model_values, train_values = _route(spec, overrides)
    config = spec.config.from_profile(n_items, profile, **model_values)
    train_config = train.TrainConfig.from_profile(profile, **{**spec.train(profile), "seed": seed, **train_values})
    return config, train_config


def build(name: str, s: split.Split, profile: Profile, *, seed: int = 0, **overrides) -> nn.Module:
    """A fresh, untrained neural model ``name`` for ``s`` (weights seeded by ``seed``)."""
    spec = MODELS[name]
    config, _ = configs(name, s.n_items, profile, seed=seed, **overrides)
    seed_everything(seed)
    return spec.model(config, **spec.inputs(s))


@contextlib.contextmanager
def _global_rng_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random state on exit."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


def fit(name: str, s: split.Split, profile: Profile, *, seed: int = 0, cache: bool = True,
        retrain: bool = False, progress: bool = True, **overrides) -> Any:
    """Model ``name`` fitted on ``s.train`` (validated on ``s.valid``): a scorer for ``evaluate``.

    ``overrides`` change a model setting (a field of its config, or a count model's
    constructor argument) or a training setting (a field of :class:`helpers.train.TrainConfig`);
    a name in both (``max_len``) changes both. Neural models are seeded by ``seed`` before
    they are built, trained for the profile's epochs, and read from / written to the model
    cache when ``cache``; ``retrain`` (or ``$COURSE_RETRAIN=1``) trains anyway and rewrites the
    entry. They come back in eval mode on the default device, with ``model.train_result``;
    unless ``progress`` is False, one line says whether the model was trained or read from
    the cache and what its training record holds (:meth:`helpers.train.TrainResult.describe`).
    The global random state is left as it was, so what a notebook draws next is the same
    whether the model was trained or read.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {names()}")
    spec = MODELS[name]
    if not spec.neural:
        settings, _ = _route(spec, overrides)
        return spec.baseline(**settings).fit(s.train, s.n_items)
    with _global_rng_kept():
        return _fit_neural(name, spec, s, profile, seed, cache, retrain, progress, overrides)


def model_code(model: nn.Module) -> set:
    """The course modules that define ``model``'s layers (its own file, and e.g. the attention or
    block classes it borrows from another): editing any of them retrains a cached entry."""
    modules = {inspect.getmodule(cls) for m in model.modules() for cls in type(m).__mro__}
    return {m for m in modules if m is not None and m.__name__.startswith("helpers.")}


def _fit_neural(name: str, spec: ModelSpec, s: split.Split, profile: Profile, seed: int, cache: bool,
                retrain: bool, progress: bool, overrides: dict) -> nn.Module:
    """:func:`fit` for a neural model: build, then read from the cache or train (and store)."""
    config, train_config = configs(name, s.n_items, profile, seed=seed, **overrides)
    model = build(name, s, profile, seed=seed, **overrides)
    key = modelcache.cache_key(name, config, train_config, s, (*model_code(model), *TRAINING_CODE))
    result, source = None, "trained"
    if cache and not (retrain or modelcache.retrain_requested()):
        result = modelcache.load(model, key)
        source = "read from the model cache"
    if result is None:  # a failed load leaves the fresh weights untouched (modelcache.load checks first)
        make_batches = spec.batches(config) if spec.batches else None
        result, source = train.train(model, s, train_config, make_batches=make_batches, progress=progress), "trained"
        if cache:
            modelcache.save(model, result, key)
    if progress:
        print(f"{name}: {source}: {result.describe()}")
    model.to(default_device()).eval()
    model.train_result = result
    return model
