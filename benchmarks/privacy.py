"""Notebook 09's privacy tables: memorisation as epochs grow, DP-SGD's epsilon vs NDCG@10 and
attack AUC, what deleting users does to a trained model, and what a 70% share at epsilon 8 takes.

    COURSE_PROFILE=cpu python benchmarks/privacy.py                     # ml-100k, the profile's sizes
    python benchmarks/privacy.py --profile ci --epsilons 8 --json results/privacy.json
    python benchmarks/privacy.py --skip curve dp deletion --settings 10,240,0.005 20,472,0.005 --audience 0.25 0.5 1

Data: the course's leave-one-out split (``registry.load_split``); half of the users (seeded)
are members, the model trains on their training sequences only; of the other half, one half
trains the attacker's reference model and the other half are the non-members. Attack: the
loss minus the reference model's loss on the same sequence (``privacy.calibrated_losses``),
next to the plain loss; AUC with DeLong's 95% CI (``privacy.auc_ci``). NDCG@10: members' test
targets, full ranking, bootstrap CI over users. DP-SGD: ``privacy.dp_train`` at the level of
users, delta = 1/(10 members), next to the same loop without clipping and noise ("none"); the
share of its NDCG@10 with a paired CI. Deletion: a tenth of the members ask to be forgotten;
the model is retrained without them, or fine-tuned one epoch on the others. ``--settings``
(epochs,batch,lr) and ``--audience`` (fractions of the members, sample rate held fixed) measure
the share at one epsilon as DP-SGD's knobs and the number of users change.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import metrics, privacy, registry, split, train
from helpers.course import default_device
from helpers.evaluate import evaluate
from helpers.profile import get_profile


def dp_model(member: split.Split, sequences: list, profile, eps: float | None, lr: float, epochs: int,
             batch_size: int) -> tuple[object, privacy.DPResult, float]:
    """A registry SASRec trained by ``privacy.dp_train`` (None: no clipping, no noise); its seconds."""
    model = registry.build("sasrec", member, profile).to(default_device())
    start = time.perf_counter()
    result = privacy.dp_train(model, sequences, privacy.DPConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                                                                 target_epsilon=eps))
    return model, result, time.perf_counter() - start


def attack(model, reference, members: list, outsiders: list) -> dict[str, float]:
    """Plain and calibrated attack AUCs of members vs non-members, the calibrated one with its CI."""
    auc, low, high = privacy.auc_ci(privacy.calibrated_losses(model, reference, members),
                                    privacy.calibrated_losses(model, reference, outsiders))
    plain = privacy.attack_auc(privacy.sequence_losses(model, members), privacy.sequence_losses(model, outsiders))
    return {"attack auc": auc, "auc lo": low, "auc hi": high, "plain auc": plain}


def membership_curve(member: split.Split, others: list, reference, profile,
                     epochs: int) -> tuple[pd.DataFrame, object]:
    """Train SASRec on the members for ``epochs`` epochs (no early stop); attack AUCs and test
    NDCG@10 after every epoch. Returns the curve and the model (best validation epoch)."""
    model = registry.build("sasrec", member, profile)
    rows = []

    def after_epoch(m, row):
        ndcg = evaluate(m, member.test, member.n_items, ks=(10,)).summary()["ndcg@10"]
        rows.append({"epoch": row["epoch"], "train_loss": row["loss"], **attack(m, reference, member.train, others),
                     "test_ndcg@10": ndcg})
        print(rows[-1], file=sys.stderr)

    config = train.TrainConfig.from_profile(profile, epochs=epochs, patience=epochs + 1, max_seconds=None)
    train.train(model, member, config, progress=False, on_epoch=after_epoch)
    return pd.DataFrame(rows), model


def dp_table(member: split.Split, others: list, reference, profile, epsilons: list[float | None], lr: float,
             epochs: int, batch_size: int) -> pd.DataFrame:
    """One row per privacy budget (None = the same loop, no clipping, no noise, first)."""
    rows, plain = [], None
    for eps in epsilons:
        model, result, seconds = dp_model(member, member.train, profile, eps, lr, epochs, batch_size)
        res = evaluate(model, member.test, member.n_items, ks=(10,))
        low, high = res.ci("ndcg@10", n_resamples=profile.n_bootstrap)
        row = {"target epsilon": "none" if eps is None else eps, "epsilon": result.epsilon, "delta": result.delta,
               "sigma": result.noise_multiplier, "steps": result.steps, "ndcg@10": res.summary()["ndcg@10"],
               "ndcg lo": low, "ndcg hi": high, **attack(model, reference, member.train, others), "seconds": seconds}
        if eps is None:
            plain = res.metrics["ndcg@10"]
        elif plain is not None:
            row.update(_share(res.metrics["ndcg@10"], plain, profile.n_bootstrap))
        rows.append(row)
        print(rows[-1], file=sys.stderr)
    return pd.DataFrame(rows)


def _share(private: np.ndarray, plain: np.ndarray, n_resamples: int) -> dict[str, float]:
    """private / plain mean NDCG@10 with a paired CI (the difference's, over plain's mean)."""
    out = metrics.paired_comparison(private, plain, n_resamples=n_resamples)
    scale = out["mean_b"] or float("nan")  # a non-private model that never hits has no share
    return {"share": out["mean_a"] / scale, "share lo": 1 + out["ci_low"] / scale, "share hi": 1 + out["ci_high"] / scale}


def settings_table(member: split.Split, profile, settings: list[tuple[int, int, float]], eps: float) -> pd.DataFrame:
    """The share of the non-private NDCG@10 at ``eps`` for each (epochs, batch, lr) of DP-SGD,
    against the same loop without noise and against the profile's non-private loop (first)."""
    runs = [(profile.dp_epochs, profile.dp_batch_size, 5 * profile.lr), *settings]
    rows, reference_ndcg = [], None
    for epochs, batch, lr in runs:
        per_eps = {}
        for target in (None, eps):
            model, result, _ = dp_model(member, member.train, profile, target, lr, epochs, batch)
            per_eps[target] = (evaluate(model, member.test, member.n_items, ks=(10,)).metrics["ndcg@10"], result)
        plain, (private, result) = per_eps[None][0], per_eps[eps]
        reference_ndcg = plain if reference_ndcg is None else reference_ndcg
        rows.append({"epochs": epochs, "batch": batch, "lr": lr, "steps": result.steps,
                     "sigma": result.noise_multiplier, "plain ndcg@10": plain.mean(), "private ndcg@10": private.mean(),
                     **_share(private, plain, profile.n_bootstrap),
                     "share of the profile's plain": private.mean() / reference_ndcg.mean()})
        print(rows[-1], file=sys.stderr)
    return pd.DataFrame(rows)


def audience_table(member: split.Split, profile, fractions: list[float], eps: float) -> pd.DataFrame:
    """The share at ``eps`` when only a (seeded) ``fraction`` of the members is trained on, with
    the batch scaled alike (same sample rate q, same steps): how the share grows with users."""
    rows = []
    for fraction in fractions:
        part = privacy.split_members(member, fraction, seed=3)[0] if fraction < 1 else member
        batch = max(1, round(profile.dp_batch_size * len(part.train) / len(member.train)))
        ndcg = {}
        for target in (None, eps):
            model, result, _ = dp_model(part, part.train, profile, target, 5 * profile.lr, profile.dp_epochs, batch)
            ndcg[target] = evaluate(model, part.test, part.n_items, ks=(10,)).metrics["ndcg@10"]
        rows.append({"users": len(part.train), "batch": batch, "sigma": result.noise_multiplier,
                     "plain ndcg@10": ndcg[None].mean(), "private ndcg@10": ndcg[eps].mean(),
                     **_share(ndcg[eps], ndcg[None], profile.n_bootstrap)})
        print(rows[-1], file=sys.stderr)
    return pd.DataFrame(rows)


def deletion(member: split.Split, others: list, reference, model, profile, fraction: float = 0.1) -> pd.DataFrame:
    """Calibrated attack AUC (with CI) of the deleted users against non-members, before and after
    forgetting them."""
    gone, _ = privacy.member_split(len(member.train), fraction, seed=1)
    gone_set = set(gone.tolist())
    deleted = [member.train[i] for i in gone]
    rest = split.Split(member.n_items, [s for i, s in enumerate(member.train) if i not in gone_set],
                       member.train_users[[i for i in range(len(member.train)) if i not in gone_set]],
                       member.valid, member.test, member.protocol)

    def row(name, m, seconds):
        return {"model": name, **attack(m, reference, deleted, others), "seconds": seconds}

    rows = [row("trained with them", model, 0.0)]
    start = time.perf_counter()
    tuned = copy.deepcopy(model)
    train.train(tuned, rest, train.TrainConfig.from_profile(profile, epochs=1), progress=False)
    rows.append(row("fine-tuned 1 epoch without them", tuned, time.perf_counter() - start))
    start = time.perf_counter()
    fresh = registry.build("sasrec", rest, profile)
    train.train(fresh, rest, train.TrainConfig.from_profile(profile, epochs=profile.mia_epochs,
                                                            patience=profile.mia_epochs + 1, max_seconds=None),
                progress=False)
    rows.append(row("retrained without them", fresh, time.perf_counter() - start))
    return pd.DataFrame(rows)


def _setting(text: str) -> tuple[int, int, float]:
    epochs, batch, lr = text.split(",")
    return int(epochs), int(batch), float(lr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $COURSE_PROFILE)")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epsilons", nargs="*", type=float, default=None, help="default: the profile's")
    parser.add_argument("--dp-lr", type=float, default=None, help="DP loop learning rate (default 5 x profile's)")
    parser.add_argument("--dp-epochs", type=int, default=None, help="default: profile.dp_epochs")
    parser.add_argument("--dp-batch", type=int, default=None, help="default: profile.dp_batch_size")
    parser.add_argument("--skip", nargs="*", default=[], choices=["curve", "dp", "deletion"])
    parser.add_argument("--settings", nargs="*", type=_setting, default=[],
                        help="DP-SGD settings epochs,batch,lr to compare at --target-epsilon (after the profile's)")
    parser.add_argument("--audience", nargs="*", type=float, default=[],
                        help="fractions of the members to train on at --target-epsilon, e.g. 0.25 0.5 1")
    parser.add_argument("--target-epsilon", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    s = registry.load_split(args.dataset, profile)
    member, others = privacy.split_members(s, 0.5, seed=0)
    reference_rows, outsider_rows = privacy.member_split(len(others), 0.5, seed=2)
    reference_users, outsiders = [others[i] for i in reference_rows], [others[i] for i in outsider_rows]
    out: dict = {"profile": profile.name, "dataset": args.dataset, "members": len(member.train),
                 "reference_users": len(reference_users), "non_members": len(outsiders)}
    print(f"profile {profile.name}, {args.dataset}: {len(member.train)} members, {len(reference_users)} reference "
          f"users, {len(outsiders)} non-members\n")
    reference, _, _ = dp_model(member, reference_users, profile, None, 5 * profile.lr, profile.dp_epochs,
                               profile.dp_batch_size)
    model = None
    if "curve" not in args.skip:
        curve, model = membership_curve(member, outsiders, reference, profile, profile.mia_epochs)
        print("## membership inference as epochs grow (SASRec)\n\n" + curve.to_markdown(index=False, floatfmt=".4f"))
        out["curve"] = curve.to_dict("records")
    if "dp" not in args.skip:
        epsilons = [None, *(args.epsilons if args.epsilons is not None else profile.dp_epsilons)]
        table = dp_table(member, outsiders, reference, profile, epsilons, args.dp_lr or 5 * profile.lr,
                         args.dp_epochs or profile.dp_epochs, args.dp_batch or profile.dp_batch_size)
        print("\n## DP-SGD (user level)\n\n" + table.to_markdown(index=False, floatfmt=".4g"))
        out["dp"] = table.to_dict("records")
    if "deletion" not in args.skip and model is not None:
        table = deletion(member, outsiders, reference, model, profile)
        print("\n## deleting a tenth of the members\n\n" + table.to_markdown(index=False, floatfmt=".4f"))
        out["deletion"] = table.to_dict("records")
    if args.settings:
        table = settings_table(member, profile, args.settings, args.target_epsilon)
        print(f"\n## DP-SGD settings at epsilon {args.target_epsilon:g}\n\n" + table.to_markdown(index=False, floatfmt=".4g"))
        out["settings"] = table.to_dict("records")
    if args.audience:
        table = audience_table(member, profile, args.audience, args.target_epsilon)
        print(f"\n## users trained on, at epsilon {args.target_epsilon:g}\n\n" + table.to_markdown(index=False, floatfmt=".4g"))
        out["audience"] = table.to_dict("records")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
