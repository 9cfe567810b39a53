"""How fast is one full-ranking pass of helpers.evaluate over Amazon Beauty's test users?

Run: ``.venv/bin/python benchmarks/eval_speed.py`` (data from ``$COURSE_DATA_DIR``,
else ``../shared/data`` beside the repository).
Times two scorers over all 22,363 test users x 12,101 items (full ranking, seen
items excluded): a popularity scorer and a random 64-d dot-product scorer. RecBole's time
for the same size: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers import metrics
from helpers.evaluate import evaluate
from helpers.sequences import pad_left
from helpers.split import leave_one_out


DATA_DIR = Path(os.environ.get("COURSE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def load_beauty() -> pd.DataFrame:
    """helpers.data when present, else Beauty.txt (``user item item ...``, in time order)."""
    try:
        from helpers.data import load_interactions
    except ImportError:
        root = DATA_DIR
        rows = [np.array(line.split(), dtype=np.int64) for line in open(root / "amazon" / "Beauty.txt")]
        users = np.concatenate([np.full(len(r) - 1, r[0]) for r in rows])
        items = np.concatenate([r[1:] for r in rows])
        steps = np.concatenate([np.arange(len(r) - 1) for r in rows])
        return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": steps})
    return load_interactions("beauty", DATA_DIR)


class Popularity:
    """Scores every item by its training count, the same row for every user."""

    def __init__(self, counts: np.ndarray, max_len: int):
        self.counts = torch.as_tensor(counts, dtype=torch.float32)
        self.max_len = max_len

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(input_ids), -1)  # (B, V), a view: the harness copies it


class RandomDot(torch.nn.Module):
    """Mean of the window's item embeddings, dotted with every item embedding."""

    def __init__(self, n_items: int, dim: int = 64, max_len: int = 50):
        super().__init__()
        self.max_len = max_len
        self.items = torch.nn.Embedding(n_items + 1, dim, padding_idx=0)

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        user = self.items(input_ids).sum(1) / (input_ids > 0).sum(1, keepdim=True).clamp(min=1)  # (B, H)
        return user @ self.items.weight.T  # (B, V)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    split = leave_one_out(load_beauty())
    test = split.test
    print(f"data + split: {time.perf_counter() - t0:.1f} s | {len(test):,} test users x {split.n_items:,} items "
          f"| torch threads {torch.get_num_threads()}")
    repeat_share = np.mean([t in set(h.tolist()) for h, t in zip(test.histories, test.targets)])
    print(f"targets already in their history: {repeat_share:.2%}")
    counts = metrics.item_popularity(split.train, split.n_items)
    scorers = {"popularity": Popularity(counts, 50), "random 64-d dot": RandomDot(split.n_items)}
    print("wall = elapsed seconds (best of repeats); cpu = process CPU seconds / threads, "
          "what an otherwise idle machine would take")
    for name, model in scorers.items():
        alone = _timed(lambda: _score_only(model, test, args.batch_size), args.repeats)
        full = _timed(lambda: evaluate(model, test, split.n_items, batch_size=args.batch_size), args.repeats)
        s = full[2].summary()
        print(f"{name:>16}: evaluate wall {full[0]:.2f} s ({len(test) / full[0]:,.0f} users/s), cpu {full[1]:.2f} s "
              f"| model.score alone wall {alone[0]:.2f} s, cpu {alone[1]:.2f} s "
              f"| hr@10 {s['hr@10']:.4f} ndcg@10 {s['ndcg@10']:.4f}")
    for protocol in ("uniform100", "popular100"):
        wall, cpu, result = _timed(lambda: evaluate(scorers["popularity"], test, split.n_items, protocol=protocol,
                                                    popularity=counts), 1)
        print(f"popularity, {protocol}: wall {wall:.2f} s, cpu {cpu:.2f} s | hr@10 {result.summary()['hr@10']:.4f}")


def _score_only(model, test, batch_size: int) -> None:
    """What the model itself costs: padding and score() for every batch, no ranking."""
    with torch.inference_mode():
        for start in range(0, len(test), batch_size):
            model.score(pad_left(test.histories[start:start + batch_size], model.max_len))


def _timed(fn, repeats: int):
    """(best wall seconds, matching CPU seconds per thread, last result)."""
    best = (float("inf"), 0.0, None)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - wall, (time.process_time() - cpu) / torch.get_num_threads()
        best = min(best, (wall, cpu, out), key=lambda x: x[0])
    return best


if __name__ == "__main__":
    main()
