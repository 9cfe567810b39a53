"""Item text in sequential recommendation: zero-shot content scores, ID vs text-initialised
SASRec (and BERT4Rec), and a cold-start split, on MovieLens latest-small.

Data as LlamaRec (Yue et al., 2023): every rating is an interaction, 5-core on users and
items (610 users, 3,650 items, 90,274 interactions, asserted), leave-one-out, full ranking
with seen items excluded, histories of up to 200 items. Item texts from
``text.item_texts`` (title, year, genres, up to 10 tags), encoded by all-MiniLM-L6-v2
(``text.encode``, cached). Every neural model is trained by the shared loop with early
stopping on validation NDCG@10 and tested by the shared harness (95% bootstrap CIs).

    python benchmarks/text_models.py                                   # main table
    python benchmarks/text_models.py --models sasrec sasrec_text --budget 600
    python benchmarks/text_models.py --cold --models pop content sasrec sasrec_text sasrec_textonly

``--budget`` is the seconds of training and validation per model (``TrainConfig.max_seconds``:
training stops after the batch that spends it, or when early stopping ends it); the model then
holds its best validation epoch.
``--cold``: the same models on ``textrec.cold_start_split`` (the newest 10% of items never
trained on; every test target kept), reported for cold and warm targets and for head and
tail targets; a text+ID model is also scored with the ID rows of cold items reset
(``textrec.forget_items``: the items as if added after training).

Published by LlamaRec on this data (printed as the last rows): SASRec R@10 .0993, N@10 .0522;
BERT4Rec .0785 / .0366. Measured runs: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle threads sleep, not spin

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from helpers import (baselines, bert4rec, data, evaluate, metrics, preprocess, report, sasrec,  # noqa: E402
                     split, text, textrec, train)

PUBLISHED = {"sasrec (LlamaRec paper)": {"hr@10": 0.0993, "ndcg@10": 0.0522},
             "bert4rec (LlamaRec paper)": {"hr@10": 0.0785, "ndcg@10": 0.0366}}
NEURAL = ("sasrec", "sasrec_text", "sasrec_textonly", "bert4rec", "bert4rec_text")
DECAYS = (1.0, 0.9, 0.8, 0.7, 0.5, 0.3)


def load(args) -> tuple[preprocess.Prepared, torch.Tensor]:
    prepared = textrec.llamarec_latest_small()
    texts = text.item_texts(data.load_items("ml-latest-small"), prepared.ids)
    start = time.perf_counter()
    vectors = text.encode(texts, args.text_model, max_tokens=args.max_tokens)
    print(f"{len(texts) - 1} item texts encoded or loaded in {time.perf_counter() - start:.1f}s, "
          f"e.g. {texts[1]!r}", flush=True)
    return prepared, vectors


def content(s: split.Split, vectors: torch.Tensor, max_len: int) -> tuple[textrec.ContentRecommender, float]:
    """The zero-shot recommender, its recency decay chosen on validation NDCG@10."""
    scores = {d: evaluate.evaluate(textrec.ContentRecommender(vectors, max_len, d), s.valid, s.n_items,
                                   ks=(10,)).summary()["ndcg@10"] for d in DECAYS}
    decay = max(scores, key=scores.get)
    print(f"content: validation ndcg@10 by decay {scores} -> {decay}", flush=True)
    return textrec.ContentRecommender(vectors, max_len, decay), decay


def build(name: str, n_items: int, vectors: torch.Tensor, args):
    """``(model, make_batches)`` for a neural row."""
    torch.manual_seed(args.seed)
    if name.startswith("sasrec"):
        config = sasrec.SASRecConfig(n_items, max_len=args.max_len, hidden=args.hidden, n_layers=args.layers,
                                     n_heads=args.heads, dropout=args.dropout)
        if name == "sasrec":
            return sasrec.SASRec(config), None
        return textrec.text_sasrec(config, vectors, id_embeddings=name == "sasrec_text"), None
    config = bert4rec.BERT4RecConfig(n_items, max_len=args.max_len, hidden=args.hidden, n_layers=args.layers,
                                     n_heads=args.heads, dropout=args.dropout, mask_prob=args.mask_prob)
    model = bert4rec.BERT4Rec(config) if name == "bert4rec" else textrec.text_bert4rec(config, vectors)
    return model, bert4rec.cloze_batches(config)


def fit(name: str, s: split.Split, vectors: torch.Tensor, args) -> tuple[object, dict, dict]:
    """A fitted scorer, its row (fit seconds, epochs) and learning curve."""
    start = time.perf_counter()
    if name == "pop":
        return baselines.MostPopular().fit(s.train, s.n_items), {"fit s": time.perf_counter() - start}, {}
    if name == "content":
        model, decay = content(s, vectors, args.max_len)
        return model, {"fit s": time.perf_counter() - start, "decay": decay}, {}
    model, make_batches = build(name, s.n_items, vectors, args)
    config = train.TrainConfig(epochs=args.max_epochs, batch_size=args.batch_size, lr=args.lr,
                               weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                               patience=args.patience, eval_every=args.eval_every, max_len=args.max_len,
                               seed=args.seed, max_seconds=args.budget)
    result = train.train(model, s, config, make_batches=make_batches, progress=False)
    row = {"fit s": time.perf_counter() - start, "train s": float(result.history["seconds"].sum()),
           "epochs": len(result.history), "best epoch": result.best_epoch}
    return model, row, result.history.to_dict("list")


def test_row(name: str, result: evaluate.EvalResult, args) -> dict:
    row = {"model": name, **result.summary()}
    for metric in ("hr@10", "ndcg@10"):
        row[f"{metric} lo"], row[f"{metric} hi"] = result.ci(metric, n_resamples=args.n_bootstrap)
    return row


def main_table(prepared, vectors, args) -> tuple[list[dict], dict]:
    s = split.leave_one_out(prepared.interactions, n_items=prepared.n_items)
    rows, curves = [], {}
    for name in args.models:
        load_before = os.getloadavg()[0]
        model, info, curves[name] = fit(name, s, vectors, args)
        row = {**test_row(name, evaluate.evaluate(model, s.test, s.n_items), args), **info,
               "load": (load_before + os.getloadavg()[0]) / 2}
        rows.append(row)
        print(f"{name}: test hr@10 {row['hr@10']:.4f} ndcg@10 {row['ndcg@10']:.4f} ({info})", flush=True)
    rows += [{"model": k, **v} for k, v in PUBLISHED.items()]
    return rows, curves


def cold_table(prepared, vectors, args) -> pd.DataFrame:
    s, cold = textrec.cold_start_split(prepared.interactions, prepared.n_items, args.cold_fraction,
                                       seed=args.seed, how=args.cold_how)
    popularity = metrics.item_popularity(s.train, s.n_items)
    n_cold = int(np.isin(s.test.targets, cold).sum())
    print(f"cold start: {len(cold)} cold items ({args.cold_how}), {n_cold} of {len(s.test)} test targets cold",
          flush=True)
    tables = {}
    for name in args.models:
        model, info, _ = fit(name, s, vectors, args)
        tables[name] = textrec.by_target(evaluate.evaluate(model, s.test, s.n_items), cold, popularity,
                                         ci=["ndcg@10"], n_resamples=args.n_bootstrap)
        if name == "sasrec_text":
            textrec.forget_items(model, cold)
            tables[f"{name} (cold IDs reset)"] = textrec.by_target(
                evaluate.evaluate(model, s.test, s.n_items), cold, popularity, ci=["ndcg@10"],
                n_resamples=args.n_bootstrap)
        print(f"{name} ({info}):\n{tables[name][['users', 'hr@10', 'ndcg@10']].round(4)}", flush=True)
    return pd.concat(tables, names=["model"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pop", "content", "sasrec", "sasrec_text"],
                        choices=["pop", "content", *NEURAL])
    parser.add_argument("--cold", action="store_true", help="the cold-start table instead of the main one")
    parser.add_argument("--cold-fraction", type=float, default=0.1)
    parser.add_argument("--cold-how", default="newest", choices=["newest", "random"], help="which items are cold")
    parser.add_argument("--budget", type=float, default=480, help="seconds of training + validation per model")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--patience", type=int, default=5, help="validations without improvement")
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--mask-prob", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--text-model", default=text.DEFAULT_MODEL)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write rows and curves here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    prepared, vectors = load(args)
    print(f"ML latest-small: {textrec.LLAMAREC_COUNTS} | torch threads {torch.get_num_threads()} | "
          f"load {os.getloadavg()[0]:.1f} | {vars(args)}", flush=True)
    if args.cold:
        table = cold_table(prepared, vectors, args)
        print(table.round(4).to_markdown())
        out = {"cold": table.reset_index().to_dict("records")}
    else:
        rows, curves = main_table(prepared, vectors, args)
        print(report.markdown(rows, ["model", "hr@10", "ndcg@10", "epochs", "best epoch", "train s", "fit s", "load"],
                              {"epochs": ".0f", "best epoch": ".0f", "train s": ".0f", "fit s": ".0f",
                               "load": ".1f"}))
        out = {"rows": rows, "curves": curves}
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, **out},
                                        indent=1, default=float))


if __name__ == "__main__":
    main()
