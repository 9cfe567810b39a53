"""Notebook 09's online-learning tables: replaying a log in time order with four update strategies.

    COURSE_PROFILE=cpu python benchmarks/online.py                       # ml-100k and latest-small
    python benchmarks/online.py --profile ci --datasets ml-100k --new-rows mean text --json results/online.json

Per data set: the log (5-core, the profile's user subset) is cut at 80% of its events in time;
SASRec trains ``online_epochs`` epochs on the first part, then the rest arrives in
``online_periods`` periods. Each period is evaluated (``online_eval_events`` sampled events,
each predicted from everything its user did before it, full ranking, seen items excluded)
before the model is updated: frozen, fine-tune on the period's events, fine-tune with replay
of as many older targets, or full retraining. Reported: NDCG@10 per period, the mean relative
to full retraining, the compute (targets trained on, seconds), forgetting, how soon items new
to the catalogue reach a top-10 (mean-, zero- or text-initialised rows) and how many events a
new user needs before SASRec beats popularity. Every strategy is scored on the same events, so
each gap to retraining (and forgetting, on period 0's events) gets a paired bootstrap CI
(``online.paired_gaps``, ``online.forgetting_ci``). ``--finetune-epochs 4 8`` adds fine-tuning
and replay with that many epochs per update: what closing the gap to retraining would take.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers import baselines, data, online, preprocess, sasrec, slices, text
from helpers.course import default_device
from helpers.evaluate import evaluate
from helpers.profile import get_profile


def text_rows(dataset: str, stream: online.Stream, prepared: preprocess.Prepared, profile):
    """``new_rows`` for run_stream: new items' text vectors mapped into the ID space."""
    items = data.load_items(dataset)
    every = preprocess.IdMap(prepared.ids.users, pd.Index(items["item_id"].unique()).sort_values())
    vectors = text.encode(text.item_texts(items, every), profile.text_model, max_tokens=profile.text_max_tokens,
                          progress=False)  # (1 + all items, D): the cache does not depend on the subsample
    original = prepared.ids.item_to_original(stream.source_items[1:])
    x = torch.cat([torch.zeros(1, vectors.shape[1]), vectors[every.item_from_original(original)]])  # stream order

    def rows(model, n_items: int):
        known = model.item_emb.weight.detach()[1:]
        return online.text_to_id_rows(x[1: n_items + 1], known)

    return rows


def new_user_table(stream: online.Stream, result: online.StreamResult, max_events: int | None) -> pd.DataFrame:
    """SASRec (this strategy) vs popularity on new users' events, by history length."""
    first = stream.events.groupby("user_id")["period"].min()
    new_users = set(first[first >= 0].index)
    lengths, model, pop = [], [], []
    for p, (res, info) in enumerate(zip(result.results, result.events)):
        _, seqs, _ = stream.sequences(p)
        fallback = baselines.MostPopular().fit(seqs, stream.n_items_by(p))
        eval_set, _ = stream.period_eval(p, max_events)
        pop_res = evaluate(fallback, eval_set, stream.n_items_by(p), ks=(10,))
        keep = info["user_id"].isin(new_users).to_numpy()
        lengths.append(res.history_lengths[keep])
        model.append(res.metrics["ndcg@10"][keep])
        pop.append(pop_res.metrics["ndcg@10"][keep])
    return slices.by_events(np.concatenate(lengths), {"sasrec": np.concatenate(model),
                                                      "popularity": np.concatenate(pop)})


def run(dataset: str, profile, strategies: list[str], new_rows: list[str], more_epochs: list[int]) -> dict:
    prepared = preprocess.prepare(data.load_interactions(dataset), k_core=(5, 5), max_users=profile.max_users)
    stream = online.time_stream(prepared.interactions, 0.8, profile.online_periods)

    def make_model(n_items: int) -> sasrec.SASRec:
        torch.manual_seed(0)
        return sasrec.SASRec(sasrec.SASRecConfig.from_profile(n_items, profile)).to(default_device())

    knobs = {"epochs": profile.online_epochs, "finetune_epochs": profile.online_finetune_epochs, "lr": profile.lr,
             "batch_size": profile.batch_size, "max_events": profile.online_eval_events}
    start = time.perf_counter()
    base = online.fit_base(stream, make_model(stream.n_items_by(-1)), profile.online_epochs, profile.lr,
                           profile.batch_size)
    print(f"{dataset}: {len(stream.events):,} events, {stream.n_items_by(-1)} items before the cut, "
          f"{stream.n_items - stream.n_items_by(-1)} new after; base model {time.perf_counter() - start:.0f}s",
          file=sys.stderr)
    results = {}
    for name in strategies:
        start = time.perf_counter()
        results[name] = online.run_stream(stream, base, name, make_model, **knobs)
        print(f"  {name}: {time.perf_counter() - start:.0f}s", file=sys.stderr)
    cold = {(name, "mean"): online.first_recommended(stream, r) for name, r in results.items()}
    for epochs in more_epochs:
        for name in ("finetune", "replay"):
            start = time.perf_counter()
            results[f"{name} x{epochs}"] = online.run_stream(stream, base, name, make_model,
                                                            **{**knobs, "finetune_epochs": epochs})
            print(f"  {name} x{epochs}: {time.perf_counter() - start:.0f}s", file=sys.stderr)
    per_period = pd.DataFrame({name: r.periods["ndcg@10"] for name, r in results.items()})
    gaps = online.paired_gaps(results, n_resamples=profile.n_bootstrap) if "retrain" in results else None
    forgetting = online.forgetting_ci(results, n_resamples=profile.n_bootstrap)
    for how in (h for h in new_rows if h != "mean"):
        rows = text_rows(dataset, stream, prepared, profile) if how == "text" else how
        for name in ("frozen", "finetune"):
            cold[(name, how)] = online.first_recommended(
                stream, online.run_stream(stream, base, name, make_model, new_rows=rows, **knobs))
    cold = pd.DataFrame({key: {"new items": len(f), "reached a top-10": f["hours"].notna().mean(),
                               "median hours to first top-10": f["hours"].median()} for key, f in cold.items()}).T
    users = new_user_table(stream, results[strategies[0]], profile.online_eval_events)
    return {"dataset": dataset, "per_period": per_period, "summary": online.summary(results), "gaps": gaps,
            "forgetting": forgetting, "cold": cold, "new_users": users,
            "events_to_beat": slices.events_to_beat(users, "sasrec", "popularity")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $COURSE_PROFILE)")
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-latest-small"])
    parser.add_argument("--strategies", nargs="+", default=list(online.STRATEGIES), choices=online.STRATEGIES)
    parser.add_argument("--new-rows", nargs="*", default=["mean", "zero", "text"], choices=["mean", "zero", "text"])
    parser.add_argument("--finetune-epochs", nargs="*", type=int, default=[],
                        help="also fine-tune (and replay) with these epochs per update, e.g. 4 8")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    out = {"profile": profile.name, "datasets": {}}
    for dataset in args.datasets:
        r = run(dataset, profile, args.strategies, args.new_rows, args.finetune_epochs)
        print(f"\n## {dataset}, profile {profile.name}: NDCG@10 per period\n\n"
              + r["per_period"].to_markdown(floatfmt=".4f"))
        print("\n" + r["summary"].to_markdown(floatfmt=".4g"))
        if r["gaps"] is not None:
            print("\neach strategy - retrain, paired over the same events (95% bootstrap CI):\n\n"
                  + r["gaps"].to_markdown(floatfmt=".4g"))
        print("\nforgetting on period 0's events (95% paired bootstrap CI):\n\n"
              + r["forgetting"].to_markdown(floatfmt=".4g"))
        print("\nitems new to the catalogue (strategy, new rows):\n\n" + r["cold"].to_markdown(floatfmt=".3g"))
        print(f"\nnew users: SASRec beats popularity from {r['events_to_beat']} events on\n\n"
              + r["new_users"].to_markdown(floatfmt=".4f"))
        out["datasets"][dataset] = {k: (v.reset_index().to_dict("records") if isinstance(v, pd.DataFrame) else v)
                                    for k, v in r.items()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
