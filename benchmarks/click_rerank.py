"""A click model re-ranking SASRec's top 50 on MovieLens latest-small: logistic regression, a
small MLP trained with binary cross-entropy, and LightGBM's lambdarank.

Data as ``text_models.py`` (LlamaRec's preprocessing: 610 users, 3,650 items, asserted),
leave-one-out. The base model is the ID-only SASRec or, with ``--base sasrec_text``, the text + ID
one (``textrec.text_sasrec``, the course's best on this data), with the registry's SASRec settings for
``--profile`` (default ``cpu``) and ``--epochs`` at most instead of the profile's time budget.

The click model never sees a test target: its training rows are the base model's top ``--k``
unseen candidates for every *validation* example (history ``s[:-2]``, click ``s[-2]``),
features from ``clickmodel.ClickFeatures`` (base score, gap and rank, text similarity to the
history and the last item, popularity and recent popularity in the training sequences,
genre and tag overlap, history length). Per learner: 5-fold cross-validated AUC and
re-ranked NDCG@10 on validation; then, fitted on all validation rows, test AUC over the test
candidates and the full-ranking HR/NDCG@10 of the re-ranked list (``clickmodel.click_reranker``,
which only re-orders the K candidates) with paired bootstrap CIs of the differences to the
base model and Holm-adjusted Wilcoxon p-values over the three learners
(``clickmodel.learner_table``). The headline is the learner chosen on validation (best
cross-validated NDCG@10), whatever the test says of the others. The labels are proxies: a
"non-click" is a candidate nobody was shown (see ``helpers/clickmodel.py``).

    python benchmarks/click_rerank.py
    python benchmarks/click_rerank.py --max-len 200 --batch-size 32 --lr 2e-3 --epochs 20  # text_models.py's base
    python benchmarks/click_rerank.py --base sasrec_text --epochs 10 --json results/click.json
    python benchmarks/click_rerank.py --weights /tmp/base.pt   # train once, then reuse the base

Measured tables go to ``benchmarks/README.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle threads sleep, not spin

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers import (clickmodel, data, evaluate, registry, sasrec, split, text,  # noqa: E402
                     textrec, train)
from helpers.profile import get_profile  # noqa: E402



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="sasrec", choices=["sasrec", "sasrec_text"])
    parser.add_argument("--k", type=int, default=50, help="candidates per user")
    parser.add_argument("--profile", default="cpu", help="base-model sizes and training settings (helpers.profile)")
    parser.add_argument("--epochs", type=int, default=12, help="most base-model epochs (early stopping may end sooner)")
    parser.add_argument("--budget", type=float, help="optional seconds of base-model training + validation")
    parser.add_argument("--max-len", type=int, help="base-model window (default: the profile's)")
    parser.add_argument("--batch-size", type=int, help="base-model batch (default: the profile's)")
    parser.add_argument("--lr", type=float, help="base-model learning rate (default: the profile's)")
    parser.add_argument("--decay", type=float, default=0.8, help="recency decay of the history text vector")
    parser.add_argument("--min-tag-items", type=int, default=3, help="tags on fewer items are dropped")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=Path, help="base-model weights: loaded when the file exists, else saved")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    prepared = textrec.llamarec_latest_small()
    items = data.load_items("ml-latest-small")
    vectors = text.encode(text.item_texts(items, prepared.ids), max_tokens=128, progress=False)
    s = split.leave_one_out(prepared.interactions, n_items=prepared.n_items)
    print(f"ML latest-small {textrec.LLAMAREC_COUNTS} | load {os.getloadavg()[0]:.1f} | {vars(args)}", flush=True)

    profile = get_profile(args.profile)
    sizes = {k: v for k, v in (("max_len", args.max_len), ("batch_size", args.batch_size), ("lr", args.lr))
             if v is not None}
    config, tc = registry.configs("sasrec", s.n_items, profile, seed=args.seed, epochs=args.epochs,
                                  max_seconds=args.budget, **sizes)
    torch.manual_seed(args.seed)
    base = sasrec.SASRec(config) if args.base == "sasrec" else textrec.text_sasrec(config, vectors)
    start = time.perf_counter()
    if args.weights is not None and args.weights.exists():
        base.load_state_dict(torch.load(args.weights, weights_only=True))
        print(f"{args.base}: weights loaded from {args.weights}", flush=True)
    else:
        fit = train.train(base, s, tc, progress=False)
        print(f"{args.base}: {len(fit.history)} epochs, best {fit.best_epoch} (valid ndcg@10 {fit.best_metric:.4f}), "
              f"stopped by {fit.stopped}, {time.perf_counter() - start:.0f}s", flush=True)
        if args.weights is not None:
            torch.save(base.state_dict(), args.weights)
    base.eval()

    facts = clickmodel.item_facts(s.train, s.n_items, vectors,
                                  clickmodel.multi_hot(items, prepared.ids, "genres"),
                                  clickmodel.multi_hot(items, prepared.ids, "tags", args.min_tag_items))
    features = clickmodel.ClickFeatures(facts, args.decay)
    X, y, group = clickmodel.candidate_table(base, features, s.valid, s.n_items, args.k)
    X_test, y_test, _ = clickmodel.candidate_table(base, features, s.test, s.n_items, args.k)
    print(f"click rows: validation {len(y)} ({int(y.sum())} clicks among {len(s.valid)} examples), "
          f"test {len(y_test)} ({int(y_test.sum())} clicks)", flush=True)

    longest = max(len(h) for h in s.test.histories)
    plain = evaluate.evaluate(base, s.test, s.n_items, ks=(10, args.k), max_len=longest)
    cv = {name: clickmodel.cross_validate(X, y, group, name, seed=args.seed, k=args.k) for name in clickmodel.LEARNERS}
    reranked, test_auc = {}, {}
    for name, fit_learner in clickmodel.LEARNERS.items():
        model = fit_learner(X, y, group)
        result = evaluate.evaluate(clickmodel.click_reranker(base, features, model, s.n_items, args.k, longest),
                                   s.test, s.n_items, ks=(10, args.k), max_len=longest)
        assert np.allclose(result.metrics[f"hr@{args.k}"], plain.metrics[f"hr@{args.k}"])  # only re-ordered
        reranked[name], test_auc[name] = result.metrics, clickmodel.auc(model.predict(X_test), y_test)
        print(f"{name}: valid cv {cv[name]}, test auc {test_auc[name]:.4f}", flush=True)
    table = clickmodel.learner_table(plain.metrics, reranked, {n: cv[n]["ndcg@10"] for n in cv},
                                     n_resamples=args.n_bootstrap, seed=args.seed)
    table.insert(1, "valid cv auc", [cv[n]["auc"] for n in table.index])
    table["test auc"] = [test_auc[n] for n in table.index]
    print(f"{args.base} (base): test " + ", ".join(f"{m} {plain.summary()[m]:.4f}" for m in ("hr@10", "ndcg@10")))
    print(f"base order, validation ndcg@10 (same candidates): {next(iter(cv.values()))['base ndcg@10']:.4f}")
    print(table.round(4).to_markdown())
    for key in ("hr@10", "ndcg@10"):
        print(clickmodel.verdict(table, key))  # the headline: the learner validation chose
    print(f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.json:
        out = {"args": vars(args), "base": plain.summary(), "rows": table.reset_index().to_dict("records"), "cv": cv}
        args.json.write_text(json.dumps(out, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


if __name__ == "__main__":
    main()
