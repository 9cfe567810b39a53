"""Notebook 08's compression table: bytes against NDCG@10 for the registry's SASRec.

    COURSE_PROFILE=cpu python benchmarks/compression.py                      # Beauty, the profile's teacher
    python benchmarks/compression.py --subspaces 8 16 --finetune-epochs 3 --json results/compression.json
    python benchmarks/compression.py --subspaces --distill 1:0.5 1:0.9 2:0.5  # students only
    python benchmarks/compression.py --subspaces 8 16 --finetune-distill 1:0.5 --distill 1:0.5 1:0.9 2:0.5
    python benchmarks/compression.py --subspaces 16 --exact 1100 --finetune-distill 1:0.5   # 08's PQ row

The teacher is ``registry.fit("sasrec", split, profile)`` (trained once, then read from the
model cache). Every variant is scored with the course's harness (full ranking, seen items
excluded) on the validation users, which choose among the variants, and on the test users,
with a paired bootstrap interval of the difference from the teacher. Size: the bytes of the
saved weights (``compress.model_size_mb``), what a service loads; the ratio is the teacher's
size over the variant's. Latency: ``compress.scoring_latency`` on one torch thread, the longest
test history alone and the first 64 test users as a batch (time per user); quote it with the
machine's load.

Variants: int8 Linear layers; the item table in int8; product quantization of the item table
with ``m`` one-byte codes per item for each ``--subspaces m`` (256 centroids per sub-space),
as fitted after training and after ``--finetune-epochs`` epochs of training the centroids
(codes fixed) with the rest of the model (``compress.finetune_codebooks``, early stopping on
validation; with ``--finetune-distill T:ALPHA`` on the teacher's stored answers as well as
the next item); with ``--exact N`` the N most-trained items keep their own rows in int8; each
PQ row also with int8 Linear layers.

Distillation (``--distill T:alpha ...``): the teacher runs once over the training windows
(``compress.teacher_targets``, its ``--top-k`` items at every target); a student of
``profile.student_hidden`` dimensions trained alone (the registry's SASRec at that width) and
distilled with each temperature T and weight alpha of the softened teacher term
(``compress.distill``), every student for the same planned epochs; validation picks the
distilled setting, whose test NDCG@10 is compared with the lone student's by a paired
bootstrap interval. ``--alone-epochs-factor 2`` adds the student trained alone for twice the
planned epochs (about the distilled run's seconds: both are printed).
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
from helpers.sequences import pad_left


def variants(teacher, split, profile, subspaces: list[int], finetune_epochs: int, seed: int,
             finetune_lr: float | None = None, only_codebooks: bool = False,
             targets: compress.TeacherTargets | None = None, finetune_distill: tuple[float, float] | None = None,
             exact: int = 0):
    """(name, model) pairs, the teacher first; PQ rows built and fine-tuned here (with
    ``finetune_distill`` = (T, alpha), on the teacher's stored answers as well as the data)."""
    counts = torch.as_tensor(np.bincount(np.concatenate(split.train), minlength=split.n_items + 1))
    yield "teacher (fp32)", teacher
    yield "int8 Linear", compress.quantize_linear(teacher)
    yield "int8 table + int8 Linear", compress.quantize_linear(compress.compress_items(teacher, "int8"))
    for m in subspaces:
        pq = compress.compress_items(teacher, "pq", subspaces=m, item_weights=counts, exact=exact)
        rows = f", {exact} int8 rows" if exact else ""
        yield f"PQ m={m}{rows} + int8 Linear", compress.quantize_linear(pq)
        if finetune_epochs:
            _, config = registry.configs("sasrec", split.n_items, profile, seed=seed, epochs=finetune_epochs,
                                         **({"lr": finetune_lr} if finetune_lr else {}))
            start = time.perf_counter()
            kd = {} if finetune_distill is None else dict(zip(("temperature", "alpha"), finetune_distill),
                                                          targets=targets)
            result = compress.finetune_codebooks(pq, split, config, only_codebooks=only_codebooks, **kd)
            print(f"PQ m={m}: codebooks trained, {result.describe()} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr)
            pq.cpu().eval()
            how = "" if finetune_distill is None else " (T={:g}, alpha={:g})".format(*finetune_distill)
            yield f"PQ m={m}{rows}, centroids trained{how} + int8 Linear", compress.quantize_linear(pq)


def students(targets, split, profile, settings: list[tuple[float, float]], seed: int, alone_factor: int = 1):
    """(name, model) pairs: the student trained alone (and for ``alone_factor`` times the
    planned epochs), then distilled with each (T, alpha)."""
    h = profile.student_hidden
    alone = registry.fit("sasrec", split, profile, seed=seed, hidden=h)
    print(f"student alone: {alone.train_result.describe()}", file=sys.stderr)
    yield f"student H={h}, alone", alone
    _, config = registry.configs("sasrec", split.n_items, profile, seed=seed, hidden=h)
    if alone_factor > 1:
        longer = registry.fit("sasrec", split, profile, seed=seed, hidden=h,
                              epochs=alone_factor * profile.epochs,
                              max_steps=None if profile.max_steps is None else alone_factor * profile.max_steps)
        print(f"student alone, {alone_factor}x epochs: {longer.train_result.describe()}", file=sys.stderr)
        yield f"student H={h}, alone, {alone_factor}x epochs", longer
    for tau, alpha in settings:
        student = registry.build("sasrec", split, profile, seed=seed, hidden=h)
        result = compress.distill(targets, student, split, config, temperature=tau, alpha=alpha)
        print(f"distilled T={tau:g} alpha={alpha:g}: {result.describe()}", file=sys.stderr)
        yield f"student H={h}, distilled T={tau:g} alpha={alpha:g}", student


def table(teacher, split, profile, subspaces, finetune_epochs, seed, distill=(), top_k: int = 128,
          alone_factor: int = 1, **finetune) -> pd.DataFrame:
    rows, test_runs = [], {}
    teacher = teacher.cpu().eval()
    base_mb = compress.model_size_mb(teacher)
    longest = int(np.argmax([len(h) for h in split.test.histories]))
    one = pad_left([split.test.histories[longest]], teacher.max_len)  # (1, T): the longest request
    batch = pad_left(split.test.histories[:64], teacher.max_len)  # (64, T)
    targets = None
    if distill or finetune.get("finetune_distill"):
        start = time.perf_counter()
        targets = compress.teacher_targets(teacher, split.train, teacher.max_len, k=top_k)
        print(f"teacher's top {top_k} at {len(targets.targets):,} training targets "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    models = itertools.chain(variants(teacher, split, profile, subspaces, finetune_epochs, seed, targets=targets,
                                      **finetune),
                             students(targets, split, profile, list(distill), seed, alone_factor) if distill else ())
    for name, model in models:
        model = model.cpu().eval()
        with torch.inference_mode():
            valid = evaluate(model, split.valid, split.n_items, ks=(10,), batch_size=profile.eval_batch_size)
            test = evaluate(model, split.test, split.n_items, ks=(10,), batch_size=profile.eval_batch_size)
        test_runs[name] = test.metrics["ndcg@10"]
        mb = compress.model_size_mb(model)
        rows.append({"variant": name, "MB": mb, "x smaller": base_mb / mb,
                     "valid ndcg@10": valid.summary()["ndcg@10"], "test ndcg@10": test.summary()["ndcg@10"],
                     **compress.scoring_latency(model, one, batch, repeats=profile.latency_repeats)})
        print(rows[-1], file=sys.stderr)
    out = pd.DataFrame(rows).set_index("variant")
    teacher_test = out["test ndcg@10"].iloc[0]
    out["test vs teacher %"] = 100 * (out["test ndcg@10"] / teacher_test - 1)
    first = next(iter(test_runs))
    paired = [metrics.paired_comparison(test_runs[name], test_runs[first], n_resamples=profile.n_bootstrap)
              for name in list(test_runs)[1:]]
    out["test diff [95% CI]"] = [""] + [f"{d['diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" for d in paired]
    if distill:
        tried = [name for name in test_runs if ", distilled " in name]
        chosen = max(tried, key=lambda name: out.loc[name, "valid ndcg@10"])
        for alone in [name for name in test_runs if ", alone" in name]:
            d = metrics.paired_comparison(test_runs[chosen], test_runs[alone], n_resamples=profile.n_bootstrap)
            verdict = "beats" if d["ci_low"] > 0 else "loses to" if d["ci_high"] < 0 else "does not separate from"
            print(f"chosen on validation: {chosen}; test NDCG@10 minus {alone} {d['diff']:+.4f} "
                  f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]: distillation {verdict} it", file=sys.stderr)
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
    parser.add_argument("--finetune-distill", default=None, metavar="T:ALPHA",
                        help="train the PQ rows on the teacher's answers too (distillation loss)")
    parser.add_argument("--top-k", type=int, default=128, help="teacher items kept per training target")
    parser.add_argument("--exact", type=int, default=0, help="the N most-trained items keep int8 rows in the PQ tables")
    parser.add_argument("--alone-epochs-factor", type=int, default=1,
                        help="also train the lone student for this many times the planned epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    split = registry.load_split(args.dataset, profile, seed=args.seed)
    teacher = registry.fit("sasrec", split, profile, seed=args.seed)
    settings = [tuple(float(x) for x in item.split(":")) for item in args.distill]
    finetune_distill = None if args.finetune_distill is None else tuple(
        float(x) for x in args.finetune_distill.split(":"))
    if any(len(pair) != 2 for pair in settings + [finetune_distill or (1, 1)]):
        parser.error("--distill and --finetune-distill take T:ALPHA pairs, e.g. 2:0.5")
    out = table(teacher, split, profile, args.subspaces, args.finetune_epochs, args.seed, settings,
                top_k=args.top_k, alone_factor=args.alone_epochs_factor, finetune_lr=args.finetune_lr,
                only_codebooks=args.only_codebooks, exact=args.exact,
                finetune_distill=finetune_distill)
    print(out.round(4).to_markdown())
    if args.json:
        args.json.write_text(json.dumps({"profile": profile.name, "dataset": args.dataset,
                                         "rows": out.reset_index().to_dict("records")}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
