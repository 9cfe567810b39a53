"""The course's results table: model x dataset under a run profile, one harness.

    python benchmarks/run.py                                  # every model, the profile's data sets
    python benchmarks/run.py --models pop markov --datasets beauty --profile cpu
    python benchmarks/run.py --json results/benchmark.json    # also write the rows as JSON

Each row: full-ranking test metrics (leave-one-out, seen items excluded) with 95% bootstrap
confidence intervals for HR@10 and NDCG@10, and the seconds spent fitting and evaluating.
Data: ``preprocess.prepare`` (5-core, the profile's user subset) then
``split.leave_one_out`` (``registry.load_split``); models are the registry's
(``helpers.registry.MODELS``), fitted on ``split.train`` only, so every number here is the
one a notebook gets for the same model and profile. Trained models come from the model
cache when they are there (``COURSE_RETRAIN=1`` retrains). Set COURSE_DATA_DIR to use a
local copy of the data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from helpers import evaluate, registry
from helpers.profile import Profile, get_profile


def run(models: list[str], datasets: list[str], profile: Profile) -> pd.DataFrame:
    rows = []
    for dataset in datasets:
        s = registry.load_split(dataset, profile)
        for name in models:
            start = time.perf_counter()
            model = registry.fit(name, s, profile, progress=False)
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
    parser.add_argument("--models", nargs="+", default=registry.names(), choices=registry.names())
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
