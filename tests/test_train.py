"""The training loop: windows, batches, losses, schedule, early stopping, checkpoints."""

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import train as train_module
from helpers.ids import IGNORE, PAD
from helpers.sasrec import SASRec, SASRecConfig
from helpers.split import leave_one_out
from helpers.train import CausalBatches, TrainConfig, causal_windows, load_checkpoint, plot_history, train



def successor_split(n_users=60, n_items=20, length=8, seed=0):
    """Users walk through items in order (i -> i + 1, wrapping), from random starts."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    items = (starts[:, None] + np.arange(length)[None, :]) % n_items + 1
    df = pd.DataFrame({"user_id": np.repeat(np.arange(n_users), length), "item_id": items.ravel(),
                       "timestamp": np.tile(np.arange(length), n_users)})
    return leave_one_out(df, n_items)


def tiny_sasrec(n_items=20, seed=0, **kw):
    torch.manual_seed(seed)
    return SASRec(SASRecConfig(n_items, max_len=8, hidden=16, n_layers=1, n_heads=2, **kw))


# ---------------------------------------------------------------- windows and batches
def test_causal_windows_by_hand():
    inputs, labels = causal_windows([np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([8, 9])], 3)
    assert inputs.tolist() == [[2, 3, 4], [0, 0, 1], [0, 0, 8]]
    assert labels.tolist() == [[3, 4, 5], [IGNORE, IGNORE, 2], [IGNORE, IGNORE, 9]]


def test_every_target_once():
    rng = np.random.default_rng(1)
    seqs = [rng.integers(1, 50, n) for n in rng.integers(1, 30, 40)]
    inputs, labels = causal_windows(seqs, 7)
    keep = labels != IGNORE
    got = sorted(zip(inputs[keep].tolist(), labels[keep].tolist()))
    want = sorted((int(a), int(b)) for s in seqs for a, b in zip(s[:-1], s[1:]))
    assert got == want
    assert (inputs[~keep] == PAD).all()


def test_batches_cover_each_window_once_and_trim_padding():
    rng = np.random.default_rng(2)
    seqs = [rng.integers(1, 50, n) for n in rng.integers(2, 30, 100)]
    batches = CausalBatches(seqs, 10, batch_size=16, bucket=3)
    seen, n_batches = 0, 0
    for x, y in batches.epoch(torch.Generator().manual_seed(0)):
        assert x.shape == y.shape
        assert (y[:, 0] != IGNORE).any()  # no all-padding column is kept
        n = int((y != IGNORE).sum())
        assert n <= batches.budget + 10  # about `budget` targets, at most one window over
        seen, n_batches = seen + n, n_batches + 1
    assert seen == sum(len(s) - 1 for s in seqs)
    assert n_batches == len(batches) == math.ceil(seen / batches.budget)
    first = [x for x, _ in batches.epoch(torch.Generator().manual_seed(0))]
    again = [x for x, _ in batches.epoch(torch.Generator().manual_seed(0))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


# ---------------------------------------------------------------- schedule and precision
def test_schedule_warmup_then_cosine():
    factor = train_module._schedule(total=10, warmup=2, cosine=True)
    assert [factor(s) for s in (0, 1)] == [0.5, 1.0]
    assert factor(2) == pytest.approx(1.0) and factor(6) == pytest.approx(0.5)
    assert factor(10) == pytest.approx(0.0)
    assert train_module._schedule(10, 0, cosine=False)(7) == 1.0


def test_amp_only_on_cuda_unless_asked():
    cpu = torch.device("cpu")
    assert train_module.amp_dtype(None, cpu) is None
    assert train_module.amp_dtype(True, cpu) is torch.bfloat16
    assert train_module.amp_dtype(False, torch.device("cuda")) is None


# ---------------------------------------------------------------- the loop
def test_training_learns_the_successor_pattern():
    split = successor_split()
    model = tiny_sasrec(dropout=0.0)
    config = TrainConfig(epochs=40, batch_size=32, lr=1e-2, max_len=8, patience=40, eval_every=40)
    result = train(model, split, config, progress=False)
    assert result.history["loss"].iloc[-1] < 0.5 * result.history["loss"].iloc[0]
    assert result.best_metric > 0.9  # item i + 1 is ranked first after item i
    assert list(result.history.columns) == ["epoch", "loss", "seconds", "valid_hr@10", "valid_ndcg@10"]


def scripted_validation(monkeypatch, values: list[float]) -> list[dict]:
    """Validation returns ``values`` in turn; the returned list fills with the weights validated."""
    metrics, snapshots = iter(values), []

    def fake_validate(model, eval_set, n_items, config):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        value = next(metrics)
        return {"hr@10": value, "ndcg@10": value}

    monkeypatch.setattr(train_module, "_validate", fake_validate)
    return snapshots


def test_early_stopping_restores_the_best_epoch(monkeypatch):
    snapshots = scripted_validation(monkeypatch, [0.1, 0.3, 0.2, 0.25, 0.9])
    model = tiny_sasrec()
    result = train(model, successor_split(), TrainConfig(epochs=5, batch_size=16, max_len=8, patience=2),
                   progress=False)
    assert len(result.history) == 4  # epochs 3 and 4 did not improve on epoch 2: stop
    assert (result.best_epoch, result.best_metric) == (2, 0.3)
    assert not torch.equal(snapshots[1]["item_emb.weight"], snapshots[3]["item_emb.weight"])
    assert all(torch.equal(v, snapshots[1][k]) for k, v in model.state_dict().items())


def test_keep_last_trains_every_planned_epoch_and_keeps_the_last_weights(monkeypatch):
    # epoch 1 is best on validation; patience 1 would stop at epoch 2
    snapshots = scripted_validation(monkeypatch, [0.9, 0.1, 0.2, 0.05, 0.3])
    model = tiny_sasrec()
    result = train(model, successor_split(), TrainConfig(epochs=5, batch_size=16, max_len=8, patience=1,
                                                         keep="last"), progress=False)
    assert len(result.history) == 5 and result.stopped == "epochs"
    assert (result.best_epoch, result.best_metric) == (5, 0.3)  # the epoch it holds, not the best one
    assert not torch.equal(snapshots[0]["item_emb.weight"], snapshots[4]["item_emb.weight"])
    assert all(torch.equal(v, snapshots[4][k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="keep"):
        train(tiny_sasrec(), successor_split(), TrainConfig(epochs=1, keep="final"), progress=False)


def test_validation_metric_at_any_cut_off():
    result = train(tiny_sasrec(), successor_split(), TrainConfig(epochs=2, batch_size=16, max_len=8,
                                                                  metric="ndcg@20"), progress=False)
    assert result.metric == "ndcg@20" and result.history["valid_ndcg@20"].notna().all()
    assert result.best_metric == result.history["valid_ndcg@20"].max()
    for bad in ("ndcg", "auc@10", "ndcg@0"):
        with pytest.raises(ValueError, match="metric"):
            train(tiny_sasrec(), successor_split(), TrainConfig(epochs=1, metric=bad), progress=False)


def test_resume_continues_from_the_checkpoint(tmp_path):
    split = successor_split()
    config = TrainConfig(epochs=3, batch_size=16, max_len=8, warmup_steps=5, checkpoint=tmp_path / "a.pt")
    straight = tiny_sasrec()
    full = train(straight, split, config, progress=False)

    resumed = tiny_sasrec()
    path = tmp_path / "b.pt"
    train(resumed, split, TrainConfig(**{**vars(config), "epochs": 1, "checkpoint": path}), progress=False)
    fresh = tiny_sasrec(seed=123)  # different weights: everything must come from the checkpoint
    rest = train(fresh, split, TrainConfig(**{**vars(config), "checkpoint": path, "resume": True}),
                 progress=False)
    pd.testing.assert_frame_equal(rest.history.drop(columns="seconds"), full.history.drop(columns="seconds"))
    assert all(torch.equal(v, straight.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_checkpoint_round_trip_reproduces_scores(tmp_path):
    split = successor_split()
    model = tiny_sasrec()
    train(model, split, TrainConfig(epochs=2, batch_size=16, max_len=8, checkpoint=tmp_path / "c.pt"),
          progress=False)
    loaded = tiny_sasrec(seed=7).eval()
    state = load_checkpoint(loaded, tmp_path / "c.pt")
    x = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    assert torch.equal(loaded.score(x), model.score(x))
    assert state["epoch"] == 2 and not (tmp_path / "c.pt.tmp").exists()


def test_cpu_bf16_autocast_runs_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    result = train(tiny_sasrec(), successor_split(), TrainConfig(epochs=2, batch_size=16, max_len=8, amp=True),
                   progress=False)
    assert np.isfinite(result.history["loss"]).all()
    ax = plot_history(result)
    assert ax.get_xlabel() == "epoch"


def test_seconds_cap_stops_after_one_batch_warns_and_keeps_a_validated_model():
    split = successor_split()
    model = tiny_sasrec()
    config = TrainConfig(epochs=50, batch_size=8, max_len=8, max_seconds=1e-9, patience=50)
    with pytest.warns(UserWarning, match="COURSE_MAX_TRAIN_SECONDS.*machine's speed"):
        result = train(model, split, config, progress=False)
    assert result.stopped == "cap" and result.planned == 50
    assert len(result.history) == 1 and result.best_epoch == 1
    assert not np.isnan(result.history["valid_ndcg@10"].iloc[0])
    assert result.history["loss"].iloc[0] > 0
    assert "CUT by the COURSE_MAX_TRAIN_SECONDS cap" in result.describe()


class SlowBatches:
    """The default batches with a delay before each one: a busy or slow machine."""

    def __init__(self, batches, delay):
        self.batches, self.delay = batches, delay

    def __len__(self):
        return len(self.batches)

    def epoch(self, generator):
        for batch in self.batches.epoch(generator):
            time.sleep(self.delay)
            yield batch


def test_a_slow_machine_trains_the_same_weights_bit_for_bit():
    split = successor_split()
    config = TrainConfig(epochs=6, max_steps=20, batch_size=8, max_len=8, patience=50, seed=3)
    steps = len(train_module.causal_batches(split.train, config))
    assert config.planned_epochs(steps) < config.epochs  # the step cap, not `epochs`, ends this run
    fast, slow = tiny_sasrec(), tiny_sasrec()
    a = train(fast, split, config, progress=False)
    b = train(slow, split, config, progress=False,
              make_batches=lambda seqs, c: SlowBatches(train_module.causal_batches(seqs, c), 0.02))
    assert len(a.history) == len(b.history) == config.planned_epochs(steps) == a.planned
    assert b.history["seconds"].sum() > a.history["seconds"].sum()  # the delay was real
    for (name, x), y in zip(fast.state_dict().items(), slow.state_dict().values()):
        assert torch.equal(x, y), name
    pd.testing.assert_frame_equal(a.history.drop(columns="seconds"), b.history.drop(columns="seconds"))


def test_planned_epochs_are_the_whole_epochs_that_fit_in_the_step_cap():
    assert TrainConfig(epochs=20, max_steps=900).planned_epochs(88) == 10  # Beauty-sized epochs
    assert TrainConfig(epochs=20, max_steps=900).planned_epochs(10) == 20  # small epochs: `epochs` binds
    assert TrainConfig(epochs=20, max_steps=50).planned_epochs(88) == 1  # never zero epochs
    assert TrainConfig(epochs=20).planned_epochs(10_000) == 20
    with pytest.raises(ValueError, match="max_steps"):
        train(tiny_sasrec(), successor_split(), TrainConfig(max_steps=0), progress=False)


def test_the_seconds_cap_comes_from_the_environment(monkeypatch):
    from helpers.profile import get_profile

    monkeypatch.delenv(train_module.SECONDS_CAP_ENV, raising=False)
    assert TrainConfig.from_profile(get_profile("cpu")).max_seconds is None
    assert TrainConfig.from_profile(get_profile("cpu")).max_steps == get_profile("cpu").max_steps
    monkeypatch.setenv(train_module.SECONDS_CAP_ENV, " 90 ")
    assert TrainConfig.from_profile(get_profile("cpu")).max_seconds == 90.0
    for bad in ("ten", "0", "-5", "nan"):
        monkeypatch.setenv(train_module.SECONDS_CAP_ENV, bad)
        with pytest.raises(ValueError, match="COURSE_MAX_TRAIN_SECONDS"):
            train_module.seconds_cap()


def test_patience_is_reported_as_the_reason_to_stop():
    result = train(tiny_sasrec(), successor_split(), TrainConfig(epochs=20, batch_size=8, max_len=8,
                                                                  patience=1, lr=0.0), progress=False)
    assert result.stopped == "patience" and len(result.history) == 2


def test_validation_on_a_seeded_sample_of_users(monkeypatch):
    split = successor_split(n_users=60)
    seen = []

    def fake_validate(model, eval_set, n_items, config):
        seen.append(eval_set.users.copy())
        return {"hr@10": 0.5, "ndcg@10": 0.5}

    monkeypatch.setattr(train_module, "_validate", fake_validate)
    config = TrainConfig(epochs=3, batch_size=16, max_len=8, patience=5, valid_users=10, seed=3)
    train(tiny_sasrec(), split, config, progress=False)
    assert len(seen) == 3 and all(np.array_equal(u, seen[0]) for u in seen)  # the same users every epoch
    assert len(seen[0]) == 10 and np.isin(seen[0], split.valid.users).all()
    assert np.all(np.diff(seen[0]) > 0)  # in the set's own order, no repeats
    sample = train_module.validation_users(split.valid, config)
    row = int(np.flatnonzero(split.valid.users == sample.users[0])[0])
    assert sample.targets[0] == split.valid.targets[row]
    assert np.array_equal(sample.histories[0], split.valid.histories[row])
    assert not np.array_equal(train_module.validation_users(split.valid, TrainConfig(valid_users=10, seed=4)).users,
                              sample.users)  # another seed, another sample
    assert train_module.validation_users(split.valid, TrainConfig(valid_users=100)) is split.valid  # fewer users: all
    with pytest.raises(ValueError, match="valid_users"):
        train(tiny_sasrec(), split, TrainConfig(epochs=1, batch_size=16, max_len=8, valid_users=0), progress=False)
