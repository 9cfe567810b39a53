"""The course's results table: model x dataset under a run profile, one harness.

    python benchmarks/run.py                                  # every model, the profile's data sets
    python benchmarks/run.py --models pop markov --datasets beauty --profile cpu
    python benchmarks/run.py --json results/benchmark.json    # also write the rows as JSON
    python benchmarks/run.py --sequence-file my_log.txt --name mine   # your own S3-Rec-format file
    python benchmarks/run.py --models sasrec --datasets beauty --seeds 0 1 2 3 4   # the seed spread

Each row: full-ranking test metrics (leave-one-out; seen items excluded unless a test target
repeats an item of its user's history, ``evaluate.honest_exclude_seen``) with 95% bootstrap
confidence intervals for HR@10 and NDCG@10, and the seconds spent fitting and evaluating.
``--json`` writes ``results_table.write_table``'s format: the rows with the profile and each
data set's data version, which ``results_table.read_table`` (notebook 07) checks.
Data: ``preprocess.prepare`` (5-core, the profile's user subset) then
``split.leave_one_out`` (``registry.load_split``); models are the registry's
(``helpers.registry.MODELS``), fitted on ``split.train`` only, so every number here is the
one a notebook gets for the same model and profile. Trained models come from the model
cache when they are there (``COURSE_RETRAIN=1`` retrains). Set COURSE_DATA_DIR to use a
local copy of the data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import data, datasets, evaluate, registry, report, results_table, stats
from helpers.profile import Profile, get_profile


def register_sequence_file(path: Path, name: str | None = None) -> tuple[str, dict]:
    """Register a file in S3-Rec format (``user item item ...`` per line, oldest first) as a data
    set: ``(its name, the arguments that load it)``. Any malformed line refuses the file, and the
    error names the first one."""
    if not path.is_file():
        raise FileNotFoundError(f"--sequence-file {path}: no such file")
    path, name = path.resolve(), name or path.stem
    if name in datasets.DATASETS:
        raise ValueError(f"--name {name!r} is a data set of the course; choose another name")
    datasets.register(datasets.sequence_dataset(name, path.as_uri(), datasets.file_sha256(path), path=path.name,
                                                description=f"sequences from {path.name}"))
    return name, {"data_dir": path.parent, "max_malformed": 0.0}


def run(models: list[str], dataset_names: list[str], profile: Profile,
        load: dict[str, dict] | None = None, seed: int = 0,
        per_user: dict[tuple[str, str], np.ndarray] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per (data set, model), and each data set's ``results_table.data_version``;
    ``load[name]`` holds extra arguments to load a data set; ``seed`` seeds the models' training
    (the split stays the same). ``per_user``, if given, receives each (data set, model)'s
    per-user test NDCG@10 (N,)."""
    rows, versions = [], {}
    for dataset in dataset_names:
        s = registry.load_split(dataset, profile, **(load or {}).get(dataset, {}))
        versions[dataset] = results_table.data_version(s)
        exclude_seen = evaluate.honest_exclude_seen(s.test)
        for name in models:
            start = time.perf_counter()
            model = registry.fit(name, s, profile, seed=seed, progress=False)
            fitted = time.perf_counter()
            result = evaluate.evaluate(model, s.test, s.n_items, batch_size=profile.eval_batch_size,
                                       exclude_seen=exclude_seen)
            done = time.perf_counter()
            row = {"dataset": dataset, "model": name, "users": len(result), "seen excluded": exclude_seen,
                   **result.summary()}
            for metric in ("hr@10", "ndcg@10"):
                row[f"{metric} lo"], row[f"{metric} hi"] = result.ci(metric, n_resamples=profile.n_bootstrap)
            row.update({"fit s": fitted - start, "eval s": done - fitted})
            rows.append(row)
            if per_user is not None:
                per_user[dataset, name] = result.metrics["ndcg@10"]
            print(f"{dataset:10s} {name:10s} ndcg@10 {row['ndcg@10']:.4f} hr@10 {row['hr@10']:.4f} "
                  f"fit {row['fit s']:.1f}s eval {row['eval s']:.1f}s", file=sys.stderr)
    return pd.DataFrame(rows), versions


def markdown(table: pd.DataFrame) -> str:
    """The table with CIs folded into the cells: ``0.0456 [0.0431, 0.0482]``."""
    out = report.fold_ci(table)[["dataset", "model", "users", "hr@10", "ndcg@10"]].copy()
    for metric in ("hr@20", "ndcg@20", "mrr@10"):
        out[metric] = table[metric].map("{:.4f}".format)
    for col in ("fit s", "eval s"):
        out[col] = table[col].map("{:.1f}".format)
    return out.to_markdown(index=False)


def seed_runs(models: list[str], dataset_names: list[str], profile: Profile, load: dict[str, dict],
              seeds: list[int]) -> pd.DataFrame:
    """Every model trained once per seed (same split): prints each run's row and, per (data set,
    model), ``stats.seed_table`` (the spread of test NDCG@10 across seeds against one run's CI
    width); returns that table."""
    per_seed: dict[str, list[np.ndarray]] = {}
    for seed in seeds:
        per_user: dict[tuple[str, str], np.ndarray] = {}
        table, _ = run(models, dataset_names, profile, load, seed=seed, per_user=per_user)
        print(f"profile {profile.name}, seed {seed}\n\n{markdown(table)}\n")
        for (dataset, name), values in per_user.items():
            per_seed.setdefault(f"{dataset}/{name}", []).append(values)
    spread = stats.seed_table(per_seed, n_resamples=profile.n_bootstrap)
    print(f"test NDCG@10 across seeds {seeds} (profile {profile.name}):\n\n{spread.to_markdown(floatfmt='.4f')}")
    return spread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=registry.names(), choices=registry.names())
    parser.add_argument("--datasets", nargs="+", default=None, help="default: the profile's")
    parser.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $COURSE_PROFILE)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--sequence-file", type=Path, default=None,
                        help="run on this file instead: S3-Rec format, 'user item item ...' per line, oldest first")
    parser.add_argument("--name", default=None, help="the data set name of --sequence-file (default: its stem)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the split does not change)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="train with each of these seeds and report the spread of test NDCG@10 across them "
                             "against one run's bootstrap CI width (replaces --seed)")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    names = args.datasets or [d for d in profile.datasets if d != "ml-1m"]
    load = {}
    if args.sequence_file is not None:
        try:
            name, load[name] = register_sequence_file(args.sequence_file, args.name)
        except (FileNotFoundError, ValueError) as e:
            parser.error(str(e))
        names = [name]
    if args.seeds:
        seed_runs(args.models, names, profile, load, args.seeds)
        return
    try:
        table, versions = run(args.models, names, profile, load, seed=args.seed)
    except data.DataFormatError as e:  # a malformed line: the message names it
        parser.error(str(e))
    kept = sorted(set(table.loc[~table["seen excluded"], "dataset"]))
    print(f"profile {profile.name}, seed {args.seed}; full ranking, leave-one-out, seen items excluded"
          + (f" (kept on {', '.join(kept)}: targets repeat history items)" if kept else "")
          + "; [95% bootstrap CI]\n")
    print(markdown(table))
    if args.json:
        results_table.write_table(args.json, table, profile.name, versions)


if __name__ == "__main__":
    main()
