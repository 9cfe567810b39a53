"""Fine-tuning a pretrained BERT on histories written as text: full vs top layers vs LoRA,
and re-ranking SASRec's top-K with a BERT click cross-encoder.

    python benchmarks/finetune_modes.py modes --steps 150                # 4a table, every mode
    python benchmarks/finetune_modes.py modes --modes lora --budget 300  # one mode, 300 s of training
    python benchmarks/finetune_modes.py rerank --steps 300 --k 20 --users 200

Data: MovieLens latest-small with LlamaRec's preprocessing (every rating as an interaction,
5-core: 610 users, 3,650 items, 90,274 interactions), leave-one-out. Training examples are
prefixes of the training sequences only; validation / test are the split's validation /
test targets.

``modes`` (4a): from a history written as text (titles, genres, tags and the ratings the user
gave), predict whether the next rating is positive (>= 4) or (``--task genre``) the first
listed genre of the next item. One row per mode: trainable parameters, seconds per step,
memory, best validation step, test accuracy and macro-F1, plus the majority-class baseline.
Memory is ``torch.cuda.max_memory_allocated`` on a GPU; on a CPU the bytes of parameters +
gradients + AdamW moments (activations not counted).

``rerank`` (4b): trains SASRec (the profile's sizes) and a click cross-encoder (pairs of
history text and candidate text, one sampled negative per positive unless ``--negatives``),
reports validation AUC, then full-ranking HR/NDCG of SASRec and of SASRec re-ranked by the
cross-encoder on its top ``--k`` unseen items, on ``--users`` test users (0 = all).

Timings on CPU use ``--threads`` threads (default 1); they are noisy when the machine is shared.

Measured runs: benchmarks/README.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from helpers import (data, evaluate, finetune, preprocess, registry, rerank, split, text,  # noqa: E402
                     textdata)
from helpers.profile import get_profile  # noqa: E402

LR = {"full": 5e-5, "top": 2e-4, "lora": 1e-3}  # peak learning rates per mode


def load(seed: int = 0):
    """(prepared log, leave-one-out split, item texts) of ml-latest-small, LlamaRec preprocessing."""
    prepared = preprocess.prepare(data.load_interactions("ml-latest-small"), k_core=(5, 5), seed=seed)
    sp = split.leave_one_out(prepared.interactions, n_items=prepared.n_items)
    texts = text.item_texts(data.load_items("ml-latest-small"), prepared.ids)
    return prepared, sp, texts


def learning_rates(args) -> dict[str, float]:
    """:data:`LR` with ``--lr MODE=VALUE`` overrides."""
    rates = dict(LR)
    for item in args.lr:
        mode, _, value = item.partition("=")
        if mode not in rates or not value:
            raise SystemExit(f"--lr takes MODE=VALUE with MODE in {sorted(rates)}, got {item!r}")
        rates[mode] = float(value)
    return rates


def task_data(args, prepared, sp, texts, tokenizer):
    """Tokenised train / valid / test sets of the 4a task and the number of classes."""
    df = prepared.interactions
    parts = {"train": textdata.prefix_examples(sp, last=args.last), "valid": sp.valid, "test": sp.test}
    if args.task == "rating":
        labels = {k: (textdata.next_values(df, ex) >= 4).astype(np.int64) for k, ex in parts.items()}
        n_labels = 2
    else:
        classes, names = textdata.first_genres(data.load_items("ml-latest-small"), prepared.ids, sp.n_items)
        labels = {k: classes[ex.targets] for k, ex in parts.items()}
        n_labels = len(names)
    out = {}
    for name, ex in parts.items():
        ratings = textdata.history_values(df, ex)
        strings = [textdata.history_text(texts, h, args.max_items, ratings=r)
                   for h, r in zip(ex.histories, ratings)]
        out[name] = textdata.text_dataset(tokenizer, strings, labels[name], max_length=args.max_tokens)
    return out, labels, n_labels


def run_modes(args) -> pd.DataFrame:
    prepared, sp, texts = load(args.seed)
    tokenizer = textdata.load_tokenizer(args.model)
    sets, labels, n_labels = task_data(args, prepared, sp, texts, tokenizer)
    print(f"task {args.task}: {len(sets['train'])} training examples, {n_labels} classes", file=sys.stderr)
    base = finetune.majority_baseline(labels["train"], labels["test"], n_labels)
    rows = [{"mode": "majority class", "test accuracy": base["accuracy"], "test macro-F1": base["macro_f1"]}]
    curves = {}
    for mode in args.modes:
        model = finetune.prepare_model(args.model, n_labels, mode, top_layers=args.top_layers, lora_r=args.lora_r)
        trainable, total = finetune.trainable_parameters(model)
        config = finetune.FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=learning_rates(args)[mode],
                                         eval_every=args.eval_every, patience=args.patience,
                                         metric="macro_f1", seed=args.seed, max_seconds=args.budget)
        result = finetune.fit(model, sets["train"], sets["valid"], tokenizer, config, progress=args.progress)
        logits, y = finetune.predict(model, textdata.loader(sets["test"], tokenizer, config.eval_batch_size))
        test = finetune.scores(logits, y)
        guess = np.full(len(y), np.bincount(labels["train"], minlength=n_labels).argmax())
        gain = finetune.macro_f1_gain(logits.argmax(1), guess, y, n_labels, seed=args.seed)
        memory = result.peak_memory if result.peak_memory is not None else finetune.training_state_bytes(model)
        rows.append({"mode": mode, "trainable": trainable, "total": total, "trainable %": 100 * trainable / total,
                     "s/step": result.seconds_per_step, "steps": int(result.history["step"].iloc[-1]),
                     "memory MB": memory / 2**20, "best step": result.best_step,
                     "valid macro-F1": result.best_metric, "test accuracy": test["accuracy"],
                     "test macro-F1": test["macro_f1"],
                     "gain vs majority [95% CI]": f"{gain['gain']:+.3f} [{gain['lo']:+.3f}, {gain['hi']:+.3f}]"})
        curves[mode] = result.history.to_dict("list")
        print(pd.DataFrame(rows[-1:]).to_string(index=False), file=sys.stderr)
    columns = ["mode", "trainable", "total", "trainable %", "s/step", "steps", "memory MB", "best step",
               "valid macro-F1", "test accuracy", "test macro-F1", "gain vs majority [95% CI]"]
    table = pd.DataFrame(rows).reindex(columns=columns)
    table.attrs["curves"] = curves
    return table


def run_rerank(args) -> pd.DataFrame:
    prepared, sp, texts = load(args.seed)
    profile = get_profile(args.profile)
    start = time.perf_counter()
    base = registry.fit("sasrec", sp, profile, seed=args.seed, progress=args.progress,
                        **({"epochs": args.sasrec_epochs} if args.sasrec_epochs else {}))  # cached like a notebook's
    sasrec_s = time.perf_counter() - start
    tokenizer = textdata.load_tokenizer(args.model)
    examples = textdata.prefix_examples(sp, last=args.last)
    train_pairs = rerank.pair_dataset(tokenizer, texts, examples, sp.n_items, args.negatives,
                                      max_items=args.max_items, max_length=args.max_tokens, seed=args.seed)
    valid_pairs = rerank.pair_dataset(tokenizer, texts, sp.valid, sp.n_items, 1, max_items=args.max_items,
                                      max_length=args.max_tokens, seed=args.seed + 1)
    mode = args.modes[0]
    model = finetune.prepare_model(args.model, 1, mode, top_layers=args.top_layers, lora_r=args.lora_r)
    config = finetune.FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=LR[mode],
                                     eval_every=args.eval_every, patience=args.patience, metric="auc",
                                     seed=args.seed, max_seconds=args.budget)
    result = finetune.fit(model, train_pairs, valid_pairs, tokenizer, config, progress=args.progress)
    encoder = rerank.CrossEncoder(model, tokenizer, texts, max_items=args.max_items, max_length=args.max_tokens)
    users = np.arange(len(sp.test))
    if args.users:
        users = np.sort(np.random.default_rng(args.seed).choice(users, size=min(args.users, len(users)), replace=False))
    test = split.EvalSet(sp.test.users[users], [sp.test.histories[u] for u in users], sp.test.targets[users])
    longest = max(len(h) for h in test.histories)
    reranker = rerank.Reranker(base, encoder, sp.n_items, k=args.k, max_len=longest)
    rows = []
    for name, scorer in (("sasrec", base), (f"sasrec + BERT {mode} re-rank top {args.k}", reranker)):
        start = time.perf_counter()
        r = evaluate.evaluate(scorer, test, sp.n_items, batch_size=64, progress=args.progress)
        rows.append({"model": name, "users": len(r), **{k: r.summary()[k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20")},
                     "eval s": time.perf_counter() - start})
    table = pd.DataFrame(rows)
    table.attrs.update(valid_auc=result.best_metric, sasrec_s=sasrec_s, best_step=result.best_step,
                       s_per_step=result.seconds_per_step, curves={mode: result.history.to_dict("list")})
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["modes", "rerank"])
    parser.add_argument("--modes", nargs="+", default=list(finetune.MODES), choices=finetune.MODES,
                        help="rerank uses the first")
    parser.add_argument("--task", choices=["rating", "genre"], default="rating")
    parser.add_argument("--model", default=None, help="hub id or folder (default: the profile's text_model)")
    parser.add_argument("--profile", default="cpu", help="sizes of SASRec and the default model")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--budget", type=float, default=None, help="seconds of training per mode")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", nargs="*", default=[], metavar="MODE=VALUE", help="peak learning rate of a mode")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-items", type=int, default=10, help="history items written out")
    parser.add_argument("--last", type=int, default=20, help="training examples per user (most recent)")
    parser.add_argument("--top-layers", type=int, default=2)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=1, help="sampled negatives per positive (rerank)")
    parser.add_argument("--k", type=int, default=20, help="candidates re-ranked (rerank)")
    parser.add_argument("--users", type=int, default=200, help="test users re-ranked; 0 = all (rerank)")
    parser.add_argument("--sasrec-epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows (and curves) here")
    args = parser.parse_args(argv)
    args.model = args.model or get_profile(args.profile).text_model
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    table = run_modes(args) if args.part == "modes" else run_rerank(args)
    device = "cuda" if torch.cuda.is_available() else f"cpu, {args.threads} thread(s)"
    print(f"\n{args.part}: model {args.model}, {device}, {time.perf_counter() - start:.0f} s in all; "
          f"extras {json.dumps({k: v for k, v in table.attrs.items() if k != 'curves'})}\n")
    print(table.to_markdown(index=False, floatfmt=".4g"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": table.to_dict("records"), **table.attrs}, indent=2))


if __name__ == "__main__":
    main()
