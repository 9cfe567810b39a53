"""The course's results table: model x dataset under a run profile, one harness.

    python benchmarks/run.py                                  # every model, the profile's data sets
    python benchmarks/run.py --models pop markov --datasets beauty --profile cpu
    python benchmarks/run.py --json results/benchmark.json    # also write the rows as JSON

Each row: full-ranking test metrics (leave-one-out, seen items excluded) with 95% bootstrap
confidence intervals for HR@10 and NDCG@10, and the seconds spent fitting and evaluating.
Data: ``preprocess.prepare`` (5-core, the profile's user subset) then
``split.leave_one_out``; models are fitted on ``split.train`` only. Later notebooks add
their models to ``MODELS``. Set COURSE_DATA_DIR to use a local copy of the data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from helpers import baselines, bigram, data, evaluate, gru4rec, preprocess, sasrec, split, train
from helpers.profile import Profile, get_profile


def _bigram(s: split.Split, p: Profile):
    model = bigram.NeuralBigram(bigram.BigramConfig(s.n_items, hidden=p.hidden))
    train.train(model, s, train.TrainConfig.from_profile(p, max_len=1), progress=False)
    return model


def _trained(model, s: split.Split, p: Profile, **config):
    train.train(model, s, train.TrainConfig.from_profile(p, **config), progress=False)
    return model


def _sasrec(s: split.Split, p: Profile):
    config = sasrec.SASRecConfig(s.n_items, p.max_len, p.hidden, p.n_layers, p.n_heads, p.dropout)
    return _trained(sasrec.SASRec(config), s, p)


def _gru4rec(s: split.Split, p: Profile):
    config = gru4rec.GRU4RecConfig(s.n_items, p.max_len, p.hidden, dropout=p.dropout)
    return _trained(gru4rec.GRU4Rec(config), s, p, lr=gru4rec.LR)


# name -> fit(split, profile) -> a fitted scorer (``max_len`` + ``score``)
MODELS: dict[str, Callable[[split.Split, Profile], object]] = {
    "pop": lambda s, p: baselines.MostPopular().fit(s.train, s.n_items),
    "markov": lambda s, p: baselines.MarkovChain().fit(s.train, s.n_items),
    "itemknn": lambda s, p: baselines.ItemKNN(window=5).fit(s.train, s.n_items),
    "bigram": _bigram,
    "gru4rec": _gru4rec,
    "sasrec": _sasrec,
}


def load_split(name: str, profile: Profile, seed: int = 0) -> split.Split:
    """The course's standard leave-one-out split of data set ``name`` under ``profile``."""
    prepared = preprocess.prepare(data.load_interactions(name), k_core=(5, 5),
                                  max_users=profile.max_users, seed=seed)
    return split.leave_one_out(prepared.interactions, n_items=prepared.n_items)


def run(models: list[str], datasets: list[str], profile: Profile) -> pd.DataFrame:
    rows = []
    for dataset in datasets:
        s = load_split(dataset, profile)
        for name in models:
            start = time.perf_counter()
            model = MODELS[name](s, profile)
            fitted = time.perf_counter()
            result = evaluate.evaluate(model, s.test, s.n_items, batch_size=profile.eval_batch_size)
            done = time.perf_counter()
            row = {"dataset": dataset, "model": name, "users": len(result), **result.summary()}
            for metric in ("hr@10", "ndcg@10"):
                row[f"{metric} lo"], row[f"{metric} hi"] = result.ci(metric, n_resamples=profile.n_bootstrap)
            row.update({"fit s": fitted - start, "eval s": done - fitted})
            rows.append(row)
            print(f"{dataset:10s} {name:10s} ndcg@10 {row['ndcg@10']:.4f} hr@10 {row['hr@10']:.4f} "
                  f"fit {row['fit s']:.1f}s eval {row['eval s']:.1f}s", file=sys.stderr)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The table with CIs folded into the cells: ``.0456 [.0431, .0482]``."""
    out = table[["dataset", "model", "users"]].copy()
    for metric in ("hr@10", "ndcg@10"):
        out[metric] = [f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in
                       zip(table[metric], table[f"{metric} lo"], table[f"{metric} hi"])]
    for metric in ("hr@20", "ndcg@20", "mrr@10"):
        out[metric] = table[metric].map("{:.4f}".format)
    for col in ("fit s", "eval s"):
        out[col] = table[col].map("{:.1f}".format)
    return out.to_markdown(index=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--datasets", nargs="+", default=None, help="default: the profile's")
    parser.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $COURSE_PROFILE)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    datasets = args.datasets or [d for d in profile.datasets if d != "ml-1m"]
    table = run(args.models, datasets, profile)
    print(f"profile {profile.name}; full ranking, leave-one-out, seen items excluded; "
          "[95% bootstrap CI]\n")
    print(markdown(table))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"profile": profile.name, "rows": table.to_dict("records")}, indent=2))


if __name__ == "__main__":
    main()
