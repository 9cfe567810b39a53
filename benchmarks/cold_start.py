"""Cold start that works, on MovieLens latest-small: remedies for items nobody has interacted
with.

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
* ``dropout + content``, the one cold-start method, the same on both splits:
  ``coldstart.ColdBlend`` over the dropout model. Its knobs (``--p`` when several values are
  given, the blend's weight and offset) are chosen on ``coldstart.pseudo_cold_split``: the past
  alone (the test's cold items and every test target removed) with its own newest (or random)
  items made cold, disjoint from the test's, a dropout model trained there and the blend grid on
  its test set. Then it is compared with the zero-shot content model on the same cold-target
  users (``coldstart.against_content``, paired bootstrap CI).

Item texts never read the future: title, year, genres and only the tags written before the
split point (``textrec.split_time``: the first interaction with any cold item;
``textrec.tags_before``), the pseudo-cold split's texts before its own.

New users are not measured here: that needs users held out of training (notebooks 05 and 07,
``split.hold_out_users`` and ``slices.first_events``), not trained users' histories cut short.

    python benchmarks/cold_start.py --how newest
    python benchmarks/cold_start.py --how random --json results/cold_random.json
    python benchmarks/cold_start.py --p 0.25 0.5 0.75   # p chosen on the pseudo-cold split
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

from helpers import (baselines, coldstart, data, evaluate, metrics, registry, sasrec,  # noqa: E402
                     text, textrec, train)
from helpers.profile import get_profile  # noqa: E402

DECAYS = (1.0, 0.8, 0.5, 0.3)
METHOD = "dropout + content"  # the one cold-start method, the same on both splits


def content_model(s, vectors, max_len) -> textrec.ContentRecommender:
    scores = {d: evaluate.evaluate(textrec.ContentRecommender(vectors, max_len, d), s.valid, s.n_items,
                                   ks=(10,)).summary()["ndcg@10"] for d in DECAYS}
    decay = max(scores, key=scores.get)
    print(f"content: validation ndcg@10 by decay {scores} -> {decay}", flush=True)
    return textrec.ContentRecommender(vectors, max_len, decay)


def fit_sasrec(name: str, s, vectors, args, p: float = 0.5) -> tuple[sasrec.SASRec, dict]:
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
        model = coldstart.dropout_text_sasrec(config, vectors, p, softmax_items=warm)
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


def encode_before(prepared, items, tags, cutoff: int, args) -> torch.Tensor:
    """Text vectors of every item from title, year, genres and the tags written before ``cutoff``."""
    texts = text.item_texts(textrec.tags_before(items, tags, cutoff), prepared.ids)
    return text.encode(texts, args.text_model, max_tokens=128, progress=False)


def choose_knobs(df, s, cold, items, tags, prepared, args) -> dict:
    """ID dropout ``p`` and the blend's weight and offset, chosen on :func:`coldstart.pseudo_cold_split`
    (pseudo-cold items disjoint from ``cold``, texts cut at its own split point): for each ``p``, a
    dropout model trained on its training set and the blend grid on its test set; best NDCG@10."""
    ps, pseudo = coldstart.pseudo_cold_split(df, s, cold, args.cold_fraction, how=args.how, seed=args.seed)
    cutoff = textrec.split_time(df, pseudo)  # over all events: never later than its own
    vectors = encode_before(prepared, items, tags, cutoff, args)
    content = content_model(ps, vectors, args.max_len or get_profile(args.profile).max_len)
    never = coldstart.never_trained(ps)
    print(f"pseudo-cold split: {len(pseudo)} items (none of the test's), {int(np.isin(ps.test.targets, pseudo).sum())}"
          f"/{len(ps.test)} cold targets, texts before {pd.Timestamp(cutoff, unit='s'):%Y-%m-%d}", flush=True)
    best = None
    for p in args.p:
        model, _ = fit_sasrec("dropout", ps, vectors, args, p)
        textrec.forget_items(model, never)
        w, b, grid = coldstart.choose_blend(model, content, never, ps.test, ps.n_items)
        score = float(grid["ndcg@10"].max())
        print(f"pseudo-cold: p {p}, blend weight {w:g}, offset {b:g}: NDCG@10 {score:.4f}", flush=True)
        if best is None or score > best["pseudo ndcg@10"]:
            best = {"p": p, "weight": w, "offset": b, "pseudo ndcg@10": score}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--how", default="newest", choices=["newest", "random"], help="which items are cold")
    parser.add_argument("--cold-fraction", type=float, default=0.1)
    parser.add_argument("--p", type=float, nargs="+", default=[0.5],
                        help="item-ID dropout; several values: chosen on the pseudo-cold split")
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

    prepared = textrec.llamarec_latest_small()
    items, tags = data.load_items("ml-latest-small"), textrec.load_tag_events()
    df = prepared.interactions
    s, cold = textrec.cold_start_split(df, prepared.n_items, args.cold_fraction, seed=args.seed, how=args.how)
    cutoff = textrec.split_time(df, cold)
    vectors = encode_before(prepared, items, tags, cutoff, args)
    never = coldstart.never_trained(s)
    popularity = metrics.item_popularity(s.train, s.n_items)
    print(f"{args.how}: {len(cold)} cold items, {len(never)} never trained; test targets cold "
          f"{int(np.isin(s.test.targets, cold).sum())}/{len(s.test)}; item texts from the "
          f"{int((tags['timestamp'] < cutoff).sum())}/{len(tags)} tag events before the split point "
          f"{pd.Timestamp(cutoff, unit='s'):%Y-%m-%d} | load {os.getloadavg()[0]:.1f} | {vars(args)}", flush=True)

    knobs = choose_knobs(df, s, cold, items, tags, prepared, args)
    content = content_model(s, vectors, args.max_len or get_profile(args.profile).max_len)
    models = {"pop": baselines.MostPopular().fit(s.train, s.n_items), "content": content}
    infos, results = {}, {}
    models["sasrec"], infos["sasrec"] = fit_sasrec("sasrec", s, vectors, args)
    models["dropout"], infos["dropout"] = fit_sasrec("dropout", s, vectors, args, knobs["p"])
    textrec.forget_items(models["dropout"], never)
    models[METHOD] = coldstart.ColdBlend(models["dropout"], content, never, s.n_items, knobs["weight"], knobs["offset"])
    rows = []
    for name in ("content", "sasrec", "dropout", METHOD):
        results[name] = evaluate.evaluate(models[name], s.test, s.n_items)
        rows.append(row(name, results[name], cold, popularity, args))
    rows[-1]["blend"] = f"p {knobs['p']:g}, weight {knobs['weight']:g}, offset {knobs['offset']:g} (pseudo-cold)"
    print(markdown(rows), flush=True)
    vs = coldstart.against_content(results[METHOD], results["content"], cold, n_resamples=args.n_bootstrap,
                                   seed=args.seed)
    print(f"{METHOD} minus content (zero-shot), NDCG@10 on the {vs['users']} cold-target users: "
          f"{vs['diff']:+.4f} [{vs['ci_low']:+.4f}, {vs['ci_high']:+.4f}], Wilcoxon p {vs['p_wilcoxon']:.3f}: "
          + ("beats content" if vs["ci_low"] > 0 else "worse than content" if vs["ci_high"] < 0
             else "does not beat content (the interval holds 0)"), flush=True)

    print(f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.json:
        out = {"args": vars(args), "split time": cutoff, "knobs": knobs, "rows": rows, "against content": vs,
               "fits": infos, "short": short.reset_index().to_dict("list"), "events to win": wins}
        args.json.write_text(json.dumps(out, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


if __name__ == "__main__":
    main()
