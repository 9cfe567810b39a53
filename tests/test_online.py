import numpy as np
import pandas as pd
import pytest
import torch

from helpers import online
from helpers.baselines import MostPopular
from helpers.ids import IGNORE, PAD
from helpers.sasrec import SASRec, SASRecConfig


def _log(n_users=6, per_user=12, n_items=15, seed=0) -> pd.DataFrame:
    """A random log, each user's rows in time order (as preprocess.prepare leaves them)."""
    rng = np.random.default_rng(seed)
    rows = [(u, int(rng.integers(1, n_items + 1)), int(t))
            for u in range(1, n_users + 1) for t in np.sort(rng.integers(0, 1000, per_user))]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def _unique_items_log(n_users=5, per_user=10, seed=0) -> pd.DataFrame:
    """Every event has its own item, in time order: after renumbering, item id = order + 1."""
    rng = np.random.default_rng(seed)
    times = rng.permutation(n_users * per_user)
    users = np.repeat(np.arange(1, n_users + 1), per_user)
    df = pd.DataFrame({"user_id": users, "timestamp": times})
    df = df.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    df["item_id"] = df["timestamp"] + 100  # any distinct ids
    return df


def _model(n_items: int) -> SASRec:
    torch.manual_seed(0)
    return SASRec(SASRecConfig(n_items, max_len=6, hidden=8, n_layers=1, n_heads=1, dropout=0.0))


def test_time_stream_numbers_items_by_first_appearance_and_cuts_periods():
    stream = online.time_stream(_log(), start=0.5, n_periods=3)
    ev = stream.events
    assert (np.diff(ev["timestamp"]) >= 0).all() and (ev["order"] == np.arange(len(ev))).all()
    first = ev.groupby("item_id")["order"].min().sort_values()
    assert first.index.tolist() == list(range(1, stream.n_items + 1))
    assert (ev["period"] == -1).sum() == len(ev) // 2
    assert sorted(ev["period"].unique()) == [-1, 0, 1, 2]
    counts = ev.loc[ev["period"] >= 0, "period"].value_counts()
    assert counts.max() - counts.min() <= 1
    original = _log()
    back = stream.source_items[ev["item_id"].to_numpy()]
    assert sorted(zip(ev["user_id"], back, ev["timestamp"])) == sorted(
        zip(original["user_id"], original["item_id"], original["timestamp"]))


def test_period_eval_histories_hold_exactly_the_earlier_events():
    stream = online.time_stream(_log(), start=0.5, n_periods=2)
    ev = stream.events
    for p in range(2):
        eval_set, info = stream.period_eval(p)
        assert (ev.set_index("order").loc[info["order"], "period"] == p).all()
        for user, history, target, order in zip(eval_set.users, eval_set.histories, eval_set.targets, info["order"]):
            before = ev[(ev["user_id"] == user) & (ev["order"] < order)]["item_id"].to_numpy()
            assert np.array_equal(history, before) and len(history) > 0
            assert target == ev.loc[ev["order"] == order, "item_id"].item()


@pytest.mark.parametrize("strategy", online.STRATEGIES)
def test_replay_never_evaluates_an_event_with_a_model_that_has_seen_it_or_later(strategy, monkeypatch):
    stream = online.time_stream(_unique_items_log(), start=0.4, n_periods=3)
    assert (stream.events["item_id"] == stream.events["order"] + 1).all()  # an item id names its event
    trained: list[int] = []  # for each update, the latest event any training step saw
    real_fit = online.fit_events

    def spy(model, batches, epochs, lr, seed=0):
        if len(batches):
            trained.append(int(max(batches.inputs.max(), batches.labels.max())) - 1)
        return real_fit(model, batches, epochs, lr, seed)

    monkeypatch.setattr(online, "fit_events", spy)
    base = _model(stream.n_items_by(-1))
    result = online.run_stream(stream, base, strategy, _model, epochs=1, finetune_epochs=1, lr=1e-2,
                               batch_size=8)
    last_base = int(stream.events.loc[stream.events["period"] < 0, "order"].max())
    for p, (row, info, res) in enumerate(zip(result.periods.itertuples(), result.events, result.results)):
        seen = max([last_base] + trained[:p] if strategy != "frozen" else [last_base])
        assert row.seen_until == seen < row.first_event == info["order"].min()
        assert (res.targets - 1 == info["order"].to_numpy()).all()  # the target is the event itself
    assert len(trained) == (0 if strategy == "frozen" else stream.n_periods)


def test_new_event_batches_put_loss_on_new_events_only_and_keep_context():
    seqs = [np.array([1, 2, 3, 4, 5, 6, 7]), np.array([8, 9, 10])]
    batches = online.NewEventBatches(seqs, n_old=[5, 3], max_len=4, batch_size=4)
    labels = batches.labels[batches.labels != IGNORE]
    assert sorted(labels.tolist()) == [6, 7]  # user 2 has nothing new: no window
    assert batches.inputs.tolist() == [[3, 4, 5, 6]]  # the full window, context included
    assert batches.labels.tolist() == [[IGNORE, IGNORE, 6, 7]]
    inputs, out = next(batches.epoch(torch.Generator().manual_seed(0)))
    assert inputs.tolist() == [[3, 4, 5, 6]] and out.tolist() == [[IGNORE, IGNORE, 6, 7]]


def test_replay_adds_about_the_requested_share_of_old_events():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 50, 40) for _ in range(50)]
    new_only = online.NewEventBatches(seqs, [30] * 50, max_len=10, batch_size=16)
    replayed = online.NewEventBatches(seqs, [30] * 50, max_len=10, batch_size=16, replay=1.0)
    assert new_only.n_targets == 50 * 10
    assert 1.7 < replayed.n_targets / new_only.n_targets < 2.3
    everything = online.NewEventBatches(seqs, [0] * 50, max_len=10, batch_size=16)
    assert everything.n_targets == 50 * 39


def test_add_items_grows_the_tied_table_without_touching_known_items():
    model = _model(5).eval()
    x = torch.tensor([[0, 0, 1, 2, 3, 4]])
    before = model.score(x)
    assert online.add_items(model, 8, "mean") == 3
    after = model.score(x)
    assert after.shape == (1, 9) and model.config.n_items == 8
    assert torch.allclose(after[:, :6], before)
    mean = model.item_emb.weight[1:6].mean(0)
    assert torch.allclose(model.item_emb.weight[6:], mean.expand(3, -1))
    assert online.add_items(model, 8, "zero") == 0
    online.add_items(model, 9, torch.ones(1, 8))
    assert torch.equal(model.item_emb.weight[9], torch.ones(8))


def test_text_to_id_rows_recovers_a_linear_map():
    torch.manual_seed(0)
    x = torch.randn(40, 6)
    w = torch.randn(6, 3)
    rows = online.text_to_id_rows(x, (x @ w)[:30], ridge=1e-8)
    assert torch.allclose(rows, x[30:] @ w, atol=1e-4)


def test_online_histories_duplicates_out_of_order_and_window():
    h = online.OnlineHistories(window=3)
    assert h.observe("u", 1, 10) == "added"
    assert h.observe("u", 2, 20) == "added"
    assert h.observe("u", 2, 20) == "duplicate"
    assert h.observe("u", 3, 15) == "inserted"
    assert h.history("u").tolist() == [1, 3, 2]
    assert h.observe("u", 4, 5) == "refused"  # older than a full window
    assert h.observe("u", 5, 30) == "added"
    assert h.history("u").tolist() == [3, 2, 5]
    assert h.observe("u", 6, 20) == "inserted"  # same time as item 2: after it
    assert h.history("u").tolist() == [2, 6, 5]
    assert h.observe("u", 2, 25) == "inserted"  # same item at another time is a new event
    assert h.history("u").tolist() == [6, 2, 5]
    strict = online.OnlineHistories(window=3, late="refuse")
    strict.observe(7, 1, 10)
    assert strict.observe(7, 2, 9) == "refused" and strict.observe(7, 2, 10) == "added"
    assert strict.history(7).tolist() == [1, 2] and h.history("nobody").tolist() == []
    assert h.forget("u") == 3 and "u" not in h and h.history("u").size == 0


def test_online_histories_match_the_log_replayed_in_time_order():
    rng = np.random.default_rng(1)
    log = pd.DataFrame([(u, int(rng.integers(1, 20)), int(t)) for u in range(4)
                        for t in rng.choice(1000, 30, replace=False)], columns=["user_id", "item_id", "timestamp"])
    arrivals = pd.concat([log, log.iloc[::7]]).sample(frac=1.0, random_state=0)  # out of order, some twice
    h = online.OnlineHistories(window=5)
    statuses = [h.observe(u, i, t) for u, i, t in arrivals.itertuples(index=False)]
    assert {"inserted", "duplicate", "refused"} <= set(statuses)
    for user, rows in log.groupby("user_id"):
        assert h.history(user).tolist() == rows.sort_values("timestamp")["item_id"].tail(5).tolist()


def test_fallback_answers_short_histories_with_the_fallback():
    model = _model(5).eval()
    pop = MostPopular().fit([np.array([1, 1, 1, 2])], 5)
    scorer = online.Fallback(model, pop, min_events=2)
    x = torch.tensor([[0, 0, 0, 0, 0, 3], [0, 0, 0, 0, 3, 4]])
    out = scorer.score(x)
    assert torch.allclose(out[0], pop.score(x[:1])[0].float())
    assert torch.allclose(out[1], model.score(x[1:])[0])
    assert int(out[0, 1:].argmax()) + 1 == 1 and out[0, PAD] == float("-inf")


def test_first_recommended_finds_the_first_top10_of_each_new_item():
    stream = online.time_stream(_log(n_users=8, per_user=15, n_items=30), start=0.5, n_periods=2)
    base = _model(stream.n_items_by(-1))
    result = online.run_stream(stream, base, "frozen", _model, epochs=1, finetune_epochs=1, lr=1e-2,
                               batch_size=8, new_rows="zero")
    first = online.first_recommended(stream, result)
    assert sorted(first["item_id"]) == list(range(stream.n_items_by(-1) + 1, stream.n_items + 1))
    top = np.concatenate([r.top_items[:, :10] for r in result.results])
    ts = pd.concat(result.events)["timestamp"].to_numpy()
    for row in first.itertuples():
        hits = ts[(top == row.item_id).any(1)]
        assert (np.isnan(row.first_top10_ts) and len(hits) == 0) or row.first_top10_ts == hits.min()
        assert np.isnan(row.hours) or row.first_top10_ts >= row.joined_ts


def _stream_result(name: str, periods: list[list[float]], orders: list[list[int]],
                   learned=(1.0,), final=(1.0,)) -> online.StreamResult:
    """A StreamResult holding only what paired_gaps and forgetting_ci read: per-event NDCG@10."""
    from helpers.evaluate import EvalResult

    def result(values):
        n = len(values)
        return EvalResult({"ndcg@10": np.asarray(values, dtype=np.float64)}, np.arange(n), np.ones(n, dtype=np.int64),
                          np.zeros((n, 10), dtype=np.int64), np.zeros(n), np.zeros(n), np.ones(n), "toy")

    return online.StreamResult(name, pd.DataFrame(), [result(v) for v in periods],
                               [pd.DataFrame({"order": o}) for o in orders], np.asarray(learned, dtype=np.float64),
                               np.asarray(final, dtype=np.float64), model=None)


def test_paired_gaps_pair_events_across_periods_by_hand():
    orders = [[10, 11], [20, 21]]
    runs = {"retrain": _stream_result("retrain", [[0.5, 0.0], [0.5, 0.0]], orders),
            "finetune": _stream_result("finetune", [[1.0, 0.0], [0.5, 0.5]], orders)}
    table = online.paired_gaps(runs, n_resamples=200)
    row = table.loc["finetune"]
    # per-event differences .5, 0, 0, .5: mean .25 on a reference mean of .25 -> +100%
    assert row["ndcg@10"] == 0.5 and row["retrain"] == 0.25 and row["diff"] == 0.25 and row["relative"] == 1.0
    assert 0 <= row["diff lo"] <= 0.25 <= row["diff hi"] <= 0.5
    assert row["relative lo"] == row["diff lo"] / 0.25 and row["events"] == 4 and list(table.index) == ["finetune"]
    never = {"retrain": _stream_result("retrain", [[0.0, 0.0]], [[1, 2]]),
             "frozen": _stream_result("frozen", [[0.5, 0.0]], [[1, 2]])}
    assert np.isnan(online.paired_gaps(never, n_resamples=50).loc["frozen", "relative"])
    runs["late"] = _stream_result("late", [[1.0, 0.0], [0.5, 0.5]], [[10, 11], [20, 22]])
    with pytest.raises(ValueError, match="same events"):
        online.paired_gaps(runs)


def test_forgetting_ci_is_the_paired_drop_on_period_0_by_hand():
    runs = {"finetune": _stream_result("finetune", [[0.0]], [[1]], learned=[1.0, 0.5, 0.0], final=[0.5, 0.5, 0.0]),
            "frozen": _stream_result("frozen", [[0.0]], [[1]], learned=[0.2, 0.4], final=[0.2, 0.4])}
    table = online.forgetting_ci(runs, n_resamples=200)
    assert table.loc["finetune", "forgetting"] == pytest.approx(0.5 / 3) == runs["finetune"].forgetting
    assert table.loc["finetune", "lo"] >= 0 and table.loc["finetune", "hi"] <= 0.5
    assert tuple(table.loc["frozen", ["forgetting", "lo", "hi"]]) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("strategy", ["frozen", "finetune"])
def test_run_stream_keeps_period_0_scores_for_forgetting(strategy):
    stream = online.time_stream(_log(), start=0.5, n_periods=2)
    result = online.run_stream(stream, _model(stream.n_items_by(-1)), strategy, _model, epochs=1,
                               finetune_epochs=2, lr=5e-2, batch_size=8)
    assert result.learned.shape == result.final.shape == result.results[0].metrics["ndcg@10"].shape
    assert result.forgetting == pytest.approx(result.learned.mean() - result.final.mean())
    if strategy == "frozen":  # nothing was learned: the same weights score period 0 the same
        assert np.array_equal(result.learned, result.results[0].metrics["ndcg@10"])
        assert np.array_equal(result.learned, result.final)
    else:  # learned after the update of period 0, not before it
        assert not np.array_equal(result.learned, result.results[0].metrics["ndcg@10"])
