"""Cold start that works, on MovieLens latest-small: remedies for items nobody has interacted
with, and the short-history slice (new users).

Data as ``text_models.py`` (LlamaRec's preprocessing: 610 users, 3,650 items, asserted), on
``textrec.cold_start_split`` (``--how newest``: the newest 10% of items, or ``random``):
cold items never appear in any training sequence; every test target is kept.

Rows (NDCG@10 for all, cold and warm targets, head/tail, share of cold-target users with any
cold item in their top 10, and of all users):

* ``content``: the zero-shot content model (recency decay chosen on validation NDCG@10);
* ``sasrec``: ID-only SASRec (the warm reference);
* ``dropout``: text + ID SASRec trained with item-ID dropout ``--p`` and a softmax over items
  with training interactions only (``coldstart.dropout_text_sasrec``), cold ID rows reset
  (``textrec.forget_items``: a never-seen item is its text alone);
* ``sasrec + content`` and ``dropout + content``: ``coldstart.ColdBlend`` with weight and
  offset chosen on ``coldstart.validation_with_cold`` (never the test target).

Then the short-history slice: every test history cut to its last 1, 2, 3, 5, 10, 20 events
(``coldstart.short_history``) for popularity, content and both SASRecs, and the number of
events from which each SASRec beats both fallbacks.

    python benchmarks/cold_start.py --how newest
    python benchmarks/cold_start.py --how random --json results/cold_random.json
    python benchmarks/cold_start.py --max-len 200 --batch-size 32 --lr 2e-3 --epochs 16  # text_models.py's sizes

Training: the registry's SASRec settings for ``--profile`` (default ``cpu``: window 50, width
64, batch 256, the profile's patience), ``--epochs`` at most (a fixed count instead of the
profile's time budget, so a busy machine trains the same models; ``--budget`` adds a wall-clock
limit), 1 torch thread. Measured tables go to ``benchmarks/README.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle threads sleep, not spin

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from helpers import (baselines, coldstart, data, evaluate, metrics, preprocess, registry, sasrec,  # noqa: E402
                     text, textrec, train)
from helpers.profile import get_profile  # noqa: E402

DECAYS = (1.0, 0.8, 0.5, 0.3)


def load(args) -> tuple[preprocess.Prepared, torch.Tensor]:
    prepared = textrec.llamarec_latest_small()
    texts = text.item_texts(data.load_items("ml-latest-small"), prepared.ids)
    return prepared, text.encode(texts, args.text_model, max_tokens=128, progress=False)


def content_model(s, vectors, max_len) -> textrec.ContentRecommender:
    scores = {d: evaluate.evaluate(textrec.ContentRecommender(vectors, max_len, d), s.valid, s.n_items,
                                   ks=(10,)).summary()["ndcg@10"] for d in DECAYS}
    decay = max(scores, key=scores.get)
    print(f"content: validation ndcg@10 by decay {scores} -> {decay}", flush=True)
    return textrec.ContentRecommender(vectors, max_len, decay)


def fit_sasrec(name: str, s, vectors, args) -> tuple[sasrec.SASRec, dict]:
    """``sasrec``: the registry's ID SASRec; ``dropout``: the same sizes and training settings with
    the cold-start remedies. Both: the profile's sizes, ``--epochs`` epochs, no time budget."""
    profile = get_profile(args.profile)
    overrides = {"epochs": args.epochs, "max_seconds": args.budget,
                 **{k: v for k, v in (("max_len", args.max_len), ("batch_size", args.batch_size), ("lr", args.lr))
                    if v is not None}}
    start = time.perf_counter()
    if name == "sasrec":
        model = registry.fit("sasrec", s, profile, seed=args.seed, progress=False, **overrides)
        result = model.train_result
    else:
        config, tc = registry.configs("sasrec", s.n_items, profile, seed=args.seed, **overrides)
        warm = np.setdiff1d(np.arange(1, s.n_items + 1), coldstart.never_trained(s))
        torch.manual_seed(args.seed)
        model = coldstart.dropout_text_sasrec(config, vectors, args.p, softmax_items=warm)
        result = train.train(model, s, tc, progress=False)
    info = {"epochs": len(result.history), "best epoch": result.best_epoch,
            "valid ndcg@10": result.best_metric, "stopped": result.stopped, "fit s": time.perf_counter() - start}
    print(f"{name}: {info}", flush=True)
    return model, info


def row(name, result, cold, popularity, args) -> dict:
    table = textrec.by_target(result, cold, popularity, ci=["ndcg@10"], n_resamples=args.n_bootstrap)
    out = {"model": name}
    for (grouping, group), r in table.iterrows():
        out[f"{group} users"] = int(r["users"])
        out[f"{group} ndcg@10"] = r["ndcg@10"]
        out[f"{group} lo"], out[f"{group} hi"] = r["ndcg@10 lo"], r["ndcg@10 hi"]
    is_cold = np.isin(result.targets, cold)
    out["cold reach (cold users)"] = float(np.isin(result.top_items[is_cold, :10], cold).any(1).mean())
    out["cold reach (all)"] = coldstart.cold_reach(result, cold)
    return out


def markdown(rows: list[dict]) -> str:
    def cell(r, g):
        return f"{r[f'{g} ndcg@10']:.4f} [{r[f'{g} lo']:.4f}, {r[f'{g} hi']:.4f}]"

    return pd.DataFrame([{"model": r["model"], "all": cell(r, "all"), "cold": cell(r, "cold"),
                          "warm": cell(r, "warm"), "head": f"{r['head ndcg@10']:.4f}",
                          "tail": f"{r['tail ndcg@10']:.4f}",
                          "cold reach (cold users / all)": f"{r['cold reach (cold users)']:.3f} / "
                                                           f"{r['cold reach (all)']:.3f}",
                          "blend": r.get("blend", "")} for r in rows]).to_markdown(index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--how", default="newest", choices=["newest", "random"], help="which items are cold")
    parser.add_argument("--cold-fraction", type=float, default=0.1)
    parser.add_argument("--p", type=float, default=0.5, help="item-ID dropout")
    parser.add_argument("--profile", default="cpu", help="sizes and training settings (helpers.profile)")
    parser.add_argument("--epochs", type=int, default=10, help="most epochs per model (early stopping may end sooner)")
    parser.add_argument("--budget", type=float, help="optional seconds of training + validation per model")
    parser.add_argument("--max-len", type=int, help="SASRec window (default: the profile's)")
    parser.add_argument("--batch-size", type=int, help="SASRec batch (default: the profile's)")
    parser.add_argument("--lr", type=float, help="SASRec learning rate (default: the profile's)")
    parser.add_argument("--text-model", default=text.DEFAULT_MODEL)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    prepared, vectors = load(args)
    df = prepared.interactions
    s, cold = textrec.cold_start_split(df, prepared.n_items, args.cold_fraction, seed=args.seed, how=args.how)
    never = coldstart.never_trained(s)
    popularity = metrics.item_popularity(s.train, s.n_items)
    valid_cold = coldstart.validation_with_cold(df, s, cold)
    print(f"{args.how}: {len(cold)} cold items, {len(never)} never trained; test targets cold "
          f"{int(np.isin(s.test.targets, cold).sum())}/{len(s.test)}; validation with cold items: "
          f"{int(np.isin(valid_cold.targets, cold).sum())}/{len(valid_cold)} cold | load {os.getloadavg()[0]:.1f} | "
          f"{vars(args)}", flush=True)

    content = content_model(s, vectors, args.max_len or get_profile(args.profile).max_len)
    models = {"pop": baselines.MostPopular().fit(s.train, s.n_items), "content": content}
    rows, infos = [], {}
    for name in ("sasrec", "dropout"):
        models[name], infos[name] = fit_sasrec(name, s, vectors, args)
    textrec.forget_items(models["dropout"], never)
    for name in ("content", "sasrec", "dropout"):
        rows.append(row(name, evaluate.evaluate(models[name], s.test, s.n_items), cold, popularity, args))
    for name in ("sasrec", "dropout"):
        w, b, grid = coldstart.choose_blend(models[name], content, never, valid_cold, s.n_items)
        blend = coldstart.ColdBlend(models[name], content, never, s.n_items, w, b)
        rows.append(row(f"{name} + content", evaluate.evaluate(blend, s.test, s.n_items), cold, popularity, args)
                    | {"blend": f"weight {w:g}, offset {b:g}"})
        print(f"{name} + content: validation grid best {grid['ndcg@10'].max():.4f} at weight {w}, offset {b}",
              flush=True)
    print(markdown(rows), flush=True)

    short = coldstart.short_history({k: models[k] for k in ("pop", "content", "sasrec", "dropout")},
                                    s.test, s.n_items)
    wins = {m: coldstart.events_to_win(short, m, ["pop", "content"]) for m in ("sasrec", "dropout")}
    print(f"short-history slice (test NDCG@10, histories cut to their last n events):\n"
          f"{short.round(4).to_markdown()}\nevents from which each beats pop and content: {wins}", flush=True)
    print(f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.json:
        out = {"args": vars(args), "rows": rows, "fits": infos, "short": short.reset_index().to_dict("list"),
               "events to win": wins}
        args.json.write_text(json.dumps(out, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


if __name__ == "__main__":
    main()
