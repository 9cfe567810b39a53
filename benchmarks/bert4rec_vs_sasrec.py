"""BERT4Rec against SASRec (full cross-entropy) on Beauty under the same wall-clock budget.

The registry's models with the profile's sizes (``cpu``: max_len 50, hidden 64, 2 layers, 2
heads) on the standard Beauty split, trained by the shared loop with this script's training
settings and a time budget (``TrainConfig.max_seconds``: training stops after the batch that
spends it and the model keeps its best validation epoch), tested by the shared harness (full
ranking, seen items excluded, 95% bootstrap CIs). Validation reads a random ``--valid-users``
sample (early stopping needs a ranking, not every user); the test reads every user.

    python benchmarks/bert4rec_vs_sasrec.py --budget 600                  # 10 min per model
    python benchmarks/bert4rec_vs_sasrec.py --models bert4rec --budget 900 --mask-prob 0.4

A published full-ranking number on this file is printed as a last row: the all-item table of
the RUCAIBox/CIKM2020-S3Rec repository README (a picture, read by eye), not the S3-Rec paper,
whose numbers rank the target against 99 sampled negatives.
Measured runs: benchmarks/README.md. Set COURSE_DATA_DIR to the folder holding amazon/Beauty.txt.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle threads sleep, not spin

import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers import evaluate, registry, report, split  # noqa: E402
from helpers.profile import get_profile  # noqa: E402

# the all-item (full ranking) table in the RUCAIBox/CIKM2020-S3Rec README, an image (all_rank.PNG),
# so not in helpers.published; the S3-Rec paper's tables are sampled (99 negatives), not this
PUBLISHED = {"bert4rec": {"hr@10": 0.0347, "ndcg@10": 0.0170}}
PUBLISHED_LABEL = "published, CIKM2020-S3Rec repo all-item table"


def sample_valid(s: split.Split, valid_users: int | None, seed: int) -> split.Split:
    """``s`` with a random sample of ``valid_users`` validation users (all when None or more)."""
    if not valid_users or valid_users >= len(s.valid):
        return s
    rows = np.sort(np.random.default_rng(seed).choice(len(s.valid), valid_users, replace=False))
    valid = split.EvalSet(s.valid.users[rows], [s.valid.histories[i] for i in rows], s.valid.targets[rows])
    return dataclasses.replace(s, valid=valid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bert4rec", "sasrec"], choices=["bert4rec", "sasrec"])
    parser.add_argument("--profile", default="cpu", help="sizes from this profile (default cpu)")
    parser.add_argument("--budget", type=float, default=600, help="seconds of training + validation per model")
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--patience", type=int, default=3, help="validations without improvement")
    parser.add_argument("--valid-users", type=int, default=5000)
    parser.add_argument("--mask-prob", type=float, default=0.2)
    parser.add_argument("--last-item-prob", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write rows and curves here")
    args = parser.parse_args(argv)

    profile = get_profile(args.profile)
    s = sample_valid(registry.load_split("beauty", profile, args.seed), args.valid_users, args.seed)
    print(f"Beauty: {len(s.train)} users, {s.n_items} items | profile {profile.name} | torch threads "
          f"{torch.get_num_threads()} | load {os.getloadavg()[0]:.1f} | {vars(args)}", flush=True)
    training = {"epochs": args.max_epochs, "max_seconds": args.budget, "eval_every": args.eval_every,
                "patience": args.patience, "lr": args.lr, "weight_decay": args.weight_decay,
                "warmup_steps": args.warmup_steps}
    rows, curves = [], {}
    for name in args.models:
        masking = {"mask_prob": args.mask_prob, "last_item_prob": args.last_item_prob} if name == "bert4rec" else {}
        start, load = time.perf_counter(), os.getloadavg()[0]
        model = registry.fit(name, s, profile, seed=args.seed, cache=False, progress=False, **training, **masking)
        fit_s, result = time.perf_counter() - start, model.train_result
        test = evaluate.evaluate(model, s.test, s.n_items, batch_size=profile.eval_batch_size)
        row = {"model": name, "epochs": len(result.history), "best epoch": result.best_epoch,
               "train s": float(result.history["seconds"].sum()), "fit s": fit_s,
               "load": (load + os.getloadavg()[0]) / 2, **test.summary()}
        for metric in ("hr@10", "ndcg@10"):
            row[f"{metric} lo"], row[f"{metric} hi"] = test.ci(metric, n_resamples=profile.n_bootstrap)
        rows.append(row)
        curves[name] = result.history.assign(elapsed=result.history["seconds"].cumsum()).to_dict("list")
        print(f"{name}: test {report.ci_text(row['ndcg@10'], row['ndcg@10 lo'], row['ndcg@10 hi'])} NDCG@10 "
              f"after {row['epochs']} epochs (best {row['best epoch']}, stopped by {result.stopped}), "
              f"{fit_s:.0f}s", flush=True)
    rows += [{"model": f"{name} ({PUBLISHED_LABEL})", **ref} for name, ref in PUBLISHED.items()]
    print(report.markdown(rows, ["model", "hr@10", "ndcg@10", "epochs", "best epoch", "train s", "fit s", "load"],
                          {"epochs": ".0f", "best epoch": ".0f", "train s": ".0f", "fit s": ".0f", "load": ".1f"}))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows,
                                         "curves": curves}, indent=1, default=float))


if __name__ == "__main__":
    main()
