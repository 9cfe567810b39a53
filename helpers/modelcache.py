"""A cache of trained models, so a model trained once is reused by every later notebook.

An entry is keyed by everything that decides the trained weights: the registry name, the
model config, the training config (with the learner's seconds cap, so a model a cap cut
is never read by a run without one), a fingerprint of the training data (training
sequences and the validation set that picks the best epoch), a version of the code that
matters (a hash of the source files of the model and the training loop), the torch
version and the device type. It is stored with :mod:`helpers.storage` (atomic, with a
sha256 sidecar) and read with ``weights_only=True``. An entry that is corrupt, was
written under another key, or does not fit the model is retrained, never trusted.

Where: ``$COURSE_MODEL_CACHE``, else ``models/`` inside the download cache
(:func:`helpers.datasets.cache_dir`). ``COURSE_RETRAIN=1`` retrains every model (and
rewrites its entry); ``registry.fit(..., cache=False)`` neither reads nor writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pandas as pd
import torch
from torch import nn

from helpers import storage
from helpers.course import default_device
from helpers.datasets import cache_dir
from helpers.split import Split, fingerprint
from helpers.train import TrainConfig, TrainResult

CACHE_ENV = "COURSE_MODEL_CACHE"
RETRAIN_ENV = "COURSE_RETRAIN"
UNKEYED = ("checkpoint", "resume")  # TrainConfig fields that do not change the trained weights


def model_cache_dir() -> Path:
    """``$COURSE_MODEL_CACHE``, else ``<download cache>/models``."""
    return Path(os.environ.get(CACHE_ENV) or cache_dir() / "models")


def retrain_requested() -> bool:
    """True when ``$COURSE_RETRAIN`` is set to something other than ``0`` or empty."""
    return os.environ.get(RETRAIN_ENV, "").strip() not in ("", "0")


def code_version(modules: Iterable[ModuleType]) -> str:
    """sha256 of the source files of ``modules``: any edit to them retrains."""
    h = hashlib.sha256()
    for module in sorted(set(modules), key=lambda m: m.__name__):
        h.update(module.__name__.encode())
        h.update(Path(inspect.getfile(module)).read_bytes())
    return h.hexdigest()


def cache_key(name: str, config, train_config: TrainConfig, split: Split,
              modules: Iterable[ModuleType]) -> dict:
    """Everything an entry depends on, as a JSON-ready dict."""
    train_fields = {k: v for k, v in dataclasses.asdict(train_config).items() if k not in UNKEYED}
    return {"name": name, "config": dataclasses.asdict(config), "train": train_fields,
            "data": fingerprint(split), "code": code_version(modules),
            "torch": torch.__version__, "device": default_device().type}


def entry_path(key: dict) -> Path:
    """``<cache>/<name>-<first 16 hex digits of the key's sha256>.pt``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return model_cache_dir() / f"{key['name']}-{digest[:16]}.pt"


def save(model: nn.Module, result: TrainResult, key: dict) -> Path:
    """Store the trained weights and their training record (history, best epoch, why it
    stopped, planned epochs) under ``key``."""
    path = entry_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    storage.save_tensors({"key": json.dumps(key, sort_keys=True, default=str), "state": state,
                          "history": result.history.to_json(orient="split"),
                          "best_epoch": int(result.best_epoch), "best_metric": float(result.best_metric),
                          "metric": result.metric, "stopped": result.stopped, "planned": int(result.planned)},
                         path)
    return path


def load(model: nn.Module, key: dict) -> TrainResult | None:
    """Load the entry of ``key`` into ``model`` and return its training result.

    None when there is no entry; a corrupt, stale or ill-fitting entry is removed with a
    warning and None returned, so the caller retrains.
    """
    path = entry_path(key)
    if not path.exists():
        return None
    try:
        entry = storage.load_tensors(path)
        if entry["key"] != json.dumps(key, sort_keys=True, default=str):
            raise ValueError("it was written under another key")
        expected = model.state_dict()
        if set(entry["state"]) != set(expected) or any(entry["state"][k].shape != v.shape
                                                       for k, v in expected.items()):
            raise ValueError("its weights do not fit the model")
        model.load_state_dict(entry["state"])
        history = pd.read_json(io.StringIO(entry["history"]), orient="split")
        return TrainResult(history, int(entry["best_epoch"]), float(entry["best_metric"]),
                           entry["metric"], entry["stopped"], int(entry.get("planned", 0)))
    except (storage.CorruptFile, KeyError, TypeError, ValueError, RuntimeError) as e:
        warnings.warn(f"ignoring the cached model {path} ({e}); training it again", stacklevel=2)
        storage.remove(path)
        return None
