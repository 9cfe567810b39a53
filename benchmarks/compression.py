"""Notebook 08's compression table: bytes against NDCG@10 for the registry's SASRec.

    COURSE_PROFILE=cpu python benchmarks/compression.py                      # Beauty, the profile's teacher
    python benchmarks/compression.py --subspaces 8 16 --finetune-epochs 3 --json results/compression.json
    python benchmarks/compression.py --subspaces --distill 2:0.5 4:0.9 1:0.2  # students only

The teacher is ``registry.fit("sasrec", split, profile)`` (trained once, then read from the
model cache). Every variant is scored with the course's harness (full ranking, seen items
excluded) on the validation users, which choose among the variants, and on the test users,
with a paired bootstrap interval of the difference from the teacher. Size: the bytes of the
saved weights (``compress.model_size_mb``), what a service loads; the ratio is the teacher's
size over the variant's.

Variants: int8 Linear layers; the item table in int8; product quantization of the item table
with ``m`` one-byte codes per item for each ``--subspaces m`` (256 centroids per sub-space),
as fitted after training and after ``--finetune-epochs`` epochs of training the centroids
(codes fixed) with the rest of the model (``compress.finetune_codebooks``, early stopping on
validation); each PQ row also with int8 Linear layers.

Distillation (``--distill T:alpha ...``): a student of ``profile.student_hidden`` dimensions
trained alone (the registry's SASRec at that width) and distilled from the teacher with each
temperature T and weight alpha of the softened teacher term (``compress.distill``), every
student for the same planned epochs; validation picks the distilled setting, whose test
NDCG@10 is compared with the lone student's by a paired bootstrap interval.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers import compress, metrics, registry
from helpers.evaluate import evaluate
from helpers.profile import get_profile


def variants(teacher, split, profile, subspaces: list[int], finetune_epochs: int, seed: int,
             finetune_lr: float | None = None, only_codebooks: bool = False):
    """(name, model) pairs, the teacher first; PQ rows built and fine-tuned here."""
    counts = torch.as_tensor(np.bincount(np.concatenate(split.train), minlength=split.n_items + 1))
    yield "teacher (fp32)", teacher
    yield "int8 Linear", compress.quantize_linear(teacher)
    yield "int8 table + int8 Linear", compress.quantize_linear(compress.compress_items(teacher, "int8"))
    for m in subspaces:
        pq = compress.compress_items(teacher, "pq", subspaces=m, item_weights=counts)
        yield f"PQ m={m} + int8 Linear", compress.quantize_linear(pq)
        if finetune_epochs:
            _, config = registry.configs("sasrec", split.n_items, profile, seed=seed, epochs=finetune_epochs,
                                         **({"lr": finetune_lr} if finetune_lr else {}))
            start = time.perf_counter()
            result = compress.finetune_codebooks(pq, split, config, only_codebooks=only_codebooks)
            print(f"PQ m={m}: codebooks trained, {result.describe()} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr)
            pq.cpu().eval()
            yield f"PQ m={m}, centroids trained + int8 Linear", compress.quantize_linear(pq)


def students(teacher, split, profile, settings: list[tuple[float, float]], seed: int):
    """(name, model) pairs: the student trained alone, then distilled with each (T, alpha)."""
    h = profile.student_hidden
    yield f"student H={h}, alone", registry.fit("sasrec", split, profile, seed=seed, hidden=h)
    _, config = registry.configs("sasrec", split.n_items, profile, seed=seed, hidden=h)
    for tau, alpha in settings:
        student = registry.build("sasrec", split, profile, seed=seed, hidden=h)
        result = compress.distill(teacher, student, split, config, temperature=tau, alpha=alpha)
        print(f"distilled T={tau:g} alpha={alpha:g}: {result.describe()}", file=sys.stderr)
        yield f"student H={h}, distilled T={tau:g} alpha={alpha:g}", student


def table(teacher, split, profile, subspaces, finetune_epochs, seed, distill=(), **finetune) -> pd.DataFrame:
    rows, test_runs = [], {}
    teacher = teacher.cpu().eval()
    base_mb = compress.model_size_mb(teacher)
    models = itertools.chain(variants(teacher, split, profile, subspaces, finetune_epochs, seed, **finetune),
                             students(teacher, split, profile, list(distill), seed) if distill else ())
    for name, model in models:
        model = model.cpu().eval()
        with torch.inference_mode():
            valid = evaluate(model, split.valid, split.n_items, ks=(10,), batch_size=profile.eval_batch_size)
            test = evaluate(model, split.test, split.n_items, ks=(10,), batch_size=profile.eval_batch_size)
        test_runs[name] = test.metrics["ndcg@10"]
        mb = compress.model_size_mb(model)
        rows.append({"variant": name, "MB": mb, "x smaller": base_mb / mb,
                     "valid ndcg@10": valid.summary()["ndcg@10"], "test ndcg@10": test.summary()["ndcg@10"]})
        print(rows[-1], file=sys.stderr)
    out = pd.DataFrame(rows).set_index("variant")
    teacher_test = out["test ndcg@10"].iloc[0]
    out["test vs teacher %"] = 100 * (out["test ndcg@10"] / teacher_test - 1)
    first = next(iter(test_runs))
    paired = [metrics.paired_comparison(test_runs[name], test_runs[first], n_resamples=profile.n_bootstrap)
              for name in list(test_runs)[1:]]
    out["test diff [95% CI]"] = [""] + [f"{d['diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" for d in paired]
    if distill:
        alone = next(name for name in test_runs if name.endswith(", alone"))
        tried = [name for name in test_runs if ", distilled " in name]
        chosen = max(tried, key=lambda name: out.loc[name, "valid ndcg@10"])
        d = metrics.paired_comparison(test_runs[chosen], test_runs[alone], n_resamples=profile.n_bootstrap)
        verdict = "beats" if d["ci_low"] > 0 else "loses to" if d["ci_high"] < 0 else "does not separate from"
        print(f"chosen on validation: {chosen}; test NDCG@10 minus the student alone {d['diff']:+.4f} "
              f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]: distillation {verdict} training alone", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--profile", default=None, help="default: $COURSE_PROFILE")
    parser.add_argument("--subspaces", type=int, nargs="*", default=[8, 16], help="PQ codes per item")
    parser.add_argument("--distill", nargs="*", default=[], metavar="T:ALPHA",
                        help="temperature and teacher weight of each distilled student")
    parser.add_argument("--finetune-epochs", type=int, default=3, help="0 = PQ fitted after training only")
    parser.add_argument("--finetune-lr", type=float, default=None, help="peak learning rate (default: the profile's)")
    parser.add_argument("--only-codebooks", action="store_true", help="train the centroids alone, the model frozen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    split = registry.load_split(args.dataset, profile, seed=args.seed)
    teacher = registry.fit("sasrec", split, profile, seed=args.seed)
    settings = [tuple(float(x) for x in item.split(":")) for item in args.distill]
    if any(len(pair) != 2 for pair in settings):
        parser.error("--distill takes T:ALPHA pairs, e.g. 2:0.5")
    out = table(teacher, split, profile, args.subspaces, args.finetune_epochs, args.seed, settings,
                finetune_lr=args.finetune_lr, only_codebooks=args.only_codebooks)
    print(out.round(4).to_markdown())
    if args.json:
        args.json.write_text(json.dumps({"profile": profile.name, "dataset": args.dataset,
                                         "rows": out.reset_index().to_dict("records")}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
