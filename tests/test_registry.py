"""The contract every registered model keeps, checked for all of them at once.

Shapes, PAD (and MASK) never ranked, scores that do not depend on left padding, causal
models that do not read the future, save/load that keeps the scores, bit-identical CPU
training from the same seed; and the trained-model cache (hits, corrupt and stale entries,
forced retraining).
"""

import io
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import modelcache, registry
from helpers.evaluate import evaluate
from helpers.ids import PAD
from helpers.profile import get_profile
from helpers.sequences import pad_left
from helpers.split import leave_one_out

N_ITEMS = 24
TINY = get_profile("ci", epochs=2, hidden=8, n_layers=1, n_heads=2, max_len=6, batch_size=16,
                   eval_batch_size=64, dropout=0.1, max_steps=None)
NEURAL = [n for n in registry.names() if registry.MODELS[n].neural]


@pytest.fixture(scope="module")
def tiny_split():
    """Users walk through items in order (i -> i + 1, wrapping) from random starts."""
    rng = np.random.default_rng(0)
    n_users, length = 40, 9
    starts = rng.integers(0, N_ITEMS, n_users)
    items = (starts[:, None] + np.arange(length)[None, :]) % N_ITEMS + 1
    df = pd.DataFrame({"user_id": np.repeat(np.arange(n_users), length), "item_id": items.ravel(),
                       "timestamp": np.tile(np.arange(length), n_users)})
    return leave_one_out(df, N_ITEMS)


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(modelcache.CACHE_ENV, str(tmp_path / "models"))
    monkeypatch.delenv(modelcache.RETRAIN_ENV, raising=False)
    return tmp_path / "models"


@pytest.fixture(scope="module")
def fitted(tiny_split):
    """Every registered model, fitted once on the tiny split (no cache)."""
    return {name: registry.fit(name, tiny_split, TINY, progress=False, cache=False) for name in registry.names()}


def histories():
    return [np.array([3, 4, 5]), np.array([7]), np.array([10, 11, 12, 13, 14, 15, 16]), np.array([2, 3])]


@pytest.mark.parametrize("name", registry.names())
def test_scores_are_batch_by_items_with_pad_never_ranked(name, fitted, tiny_split):
    model = fitted[name]
    scores = model.score(pad_left(histories(), model.max_len))
    assert scores.shape == (4, N_ITEMS + 1) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, PAD]).all()
    assert torch.isfinite(scores[:, 1:]).all()
    top = evaluate(model, tiny_split.test, N_ITEMS, ks=(N_ITEMS // 2,)).top_items
    assert ((top >= 1) & (top <= N_ITEMS)).all()  # neither PAD nor MASK (n_items + 1) is recommended


@pytest.mark.parametrize("name", registry.names())
def test_scores_do_not_depend_on_left_padding(name, fitted):
    model = fitted[name]
    together = model.score(pad_left(histories(), model.max_len))  # rows padded to the longest
    for row, h in enumerate(histories()):
        alone = model.score(pad_left([h], min(len(h), model.max_len)))  # no padding at all
        assert torch.allclose(alone[0, 1:], together[row, 1:], atol=1e-5), row


@pytest.mark.parametrize("name", [n for n in NEURAL if registry.MODELS[n].causal])
def test_causal_models_do_not_see_the_future(name, fitted):
    """Training reads every position's logits: none may depend on a later item."""
    model = fitted[name].cpu()
    x = pad_left([np.array([3, 4, 5, 6, 7, 8]), np.array([9, 10, 11])], 6)  # (2, T)
    with torch.no_grad():
        logits, _ = model(x)  # (B, T, V)
        for t in range(1, 6):
            changed = x.clone()
            changed[:, t] = 20  # a different item at t and every later position ...
            changed[:, t + 1:] = 21
            real = x[:, :t] != PAD  # ... leaves every real position before t alone
            assert torch.allclose(logits[:, :t][real], model(changed)[0][:, :t][real], atol=1e-6), t


@pytest.mark.parametrize("name", NEURAL)
def test_save_and_load_keep_the_scores(name, fitted, tiny_split):
    model = fitted[name].cpu()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = registry.build(name, tiny_split, TINY, seed=1)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.eval()
    x = pad_left(histories(), model.max_len)
    assert torch.equal(model.score(x), fresh.score(x))


@pytest.mark.parametrize("name", NEURAL)
def test_same_seed_gives_bit_identical_cpu_training(name, fitted, tiny_split):
    again = registry.fit(name, tiny_split, TINY, progress=False, cache=False)
    for (key, a), b in zip(fitted[name].state_dict().items(), again.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu()), key
    pd.testing.assert_frame_equal(fitted[name].train_result.history.drop(columns="seconds"),
                                  again.train_result.history.drop(columns="seconds"))


def test_overrides_reach_the_model_and_the_loop(tiny_split):
    config, train_config = registry.configs("sasrec", N_ITEMS, TINY, seed=3, hidden=4, epochs=1, max_len=5)
    assert (config.hidden, config.max_len, train_config.max_len, train_config.epochs, train_config.seed) == \
        (4, 5, 5, 1, 3)
    assert registry.configs("gru4rec", N_ITEMS, TINY)[1].lr == registry.gru4rec.LR
    assert registry.configs("sasrec_bce", N_ITEMS, TINY)[0].loss == "bce"
    assert registry.fit("itemknn", tiny_split, TINY, window=2).window == 2
    with pytest.raises(TypeError, match="unknown settings"):
        registry.fit("sasrec", tiny_split, TINY, hiden=4)
    with pytest.raises(KeyError, match="unknown model"):
        registry.fit("sasrek", tiny_split, TINY)


# ---------------------------------------------------------------- the trained-model cache
def test_cache_hit_skips_training_and_gives_the_same_scores(tiny_split, model_cache, monkeypatch):
    first = registry.fit("gru4rec", tiny_split, TINY, progress=False)
    assert len(list(model_cache.glob("gru4rec-*.pt"))) == 1
    monkeypatch.setattr(registry.train, "train", lambda *a, **k: pytest.fail("trained again"))
    second = registry.fit("gru4rec", tiny_split, TINY, progress=False)
    x = pad_left(histories(), first.max_len)
    assert torch.equal(first.score(x), second.score(x))
    pd.testing.assert_frame_equal(first.train_result.history, second.train_result.history)
    assert second.train_result.best_epoch == first.train_result.best_epoch


def test_every_fit_prints_its_training_record_and_the_cache_keeps_it(tiny_split, model_cache, capsys):
    first = registry.fit("sasrec", tiny_split, TINY)
    trained = capsys.readouterr().out
    second = registry.fit("sasrec", tiny_split, TINY)
    read = capsys.readouterr().out
    record = first.train_result.describe()
    assert f"sasrec: trained: {record}" in trained
    assert f"sasrec: read from the model cache: {record}" in read  # epochs, best epoch, metric, seconds, why
    assert second.train_result.planned == first.train_result.planned == TINY.epochs
    assert second.train_result.stopped == first.train_result.stopped


def test_a_model_cut_by_the_seconds_cap_is_never_read_without_it(tiny_split, model_cache, monkeypatch):
    monkeypatch.setenv(registry.train.SECONDS_CAP_ENV, "1e-9")
    with pytest.warns(UserWarning, match="machine's speed"):
        capped = registry.fit("sasrec", tiny_split, TINY, progress=False)
    assert capped.train_result.stopped == "cap" and len(capped.train_result.history) == 1
    monkeypatch.delenv(registry.train.SECONDS_CAP_ENV)
    full = registry.fit("sasrec", tiny_split, TINY, progress=False)  # trained, not the capped entry
    assert full.train_result.stopped != "cap" and len(full.train_result.history) == TINY.epochs
    assert len(list(model_cache.glob("sasrec-*.pt"))) == 2


def test_corrupt_entry_is_retrained_not_trusted(tiny_split, model_cache):
    first = registry.fit("bigram", tiny_split, TINY, progress=False)
    (entry,) = model_cache.glob("bigram-*.pt")
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="training it again"):
        second = registry.fit("bigram", tiny_split, TINY, progress=False)
    x = pad_left(histories(), 1)
    assert torch.equal(first.score(x), second.score(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.fit("bigram", tiny_split, TINY, progress=False)  # the rewritten entry loads cleanly


def test_a_different_setting_or_data_is_a_different_entry(tiny_split, model_cache):
    registry.fit("bigram", tiny_split, TINY, progress=False)
    registry.fit("bigram", tiny_split, TINY, progress=False, lr=0.01)
    other = leave_one_out(pd.DataFrame({"user_id": [0] * 5, "item_id": [1, 2, 3, 4, 5],
                                        "timestamp": range(5)}), N_ITEMS)
    registry.fit("bigram", other, TINY, progress=False)
    assert len(list(model_cache.glob("bigram-*.pt"))) == 3


def test_stale_entry_under_the_same_name_is_retrained(tiny_split, model_cache, monkeypatch):
    registry.fit("bigram", tiny_split, TINY, progress=False)
    (entry,) = model_cache.glob("bigram-*.pt")
    real_key = modelcache.cache_key
    monkeypatch.setattr(modelcache, "entry_path", lambda key: entry)  # every key lands on this file
    monkeypatch.setattr(modelcache, "cache_key", lambda *a: {**real_key(*a), "code": "changed"})
    with pytest.warns(UserWarning, match="another key"):
        registry.fit("bigram", tiny_split, TINY, progress=False)


def test_retrain_env_forces_training(tiny_split, monkeypatch):
    registry.fit("bigram", tiny_split, TINY, progress=False)
    monkeypatch.setenv(modelcache.RETRAIN_ENV, "1")
    calls = []
    real_train = registry.train.train
    monkeypatch.setattr(registry.train, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    registry.fit("bigram", tiny_split, TINY, progress=False)
    assert calls == [1]
    monkeypatch.delenv(modelcache.RETRAIN_ENV)
    registry.fit("bigram", tiny_split, TINY, progress=False, retrain=True)  # the argument does the same
    registry.fit("bigram", tiny_split, TINY, progress=False)  # and the rewritten entry is read
    assert calls == [1, 1]


def test_fit_leaves_the_global_random_state_as_it_found_it(tiny_split):
    """Trained or read from the cache, a notebook's next draw is the same."""
    torch.manual_seed(5)
    np.random.seed(5)
    registry.fit("bigram", tiny_split, TINY, progress=False)  # trains
    trained = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(5)
    np.random.seed(5)
    registry.fit("bigram", tiny_split, TINY, progress=False)  # reads the cache
    cached = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(5)
    np.random.seed(5)
    untouched = (torch.rand(3), np.random.rand(3))
    assert torch.equal(trained[0], cached[0]) and torch.equal(cached[0], untouched[0])
    assert np.array_equal(trained[1], cached[1]) and np.array_equal(cached[1], untouched[1])


def test_the_cache_key_reads_every_course_module_a_model_is_built_from(tiny_split):
    """Editing the attention or block a model borrows retrains it, as editing its own file does."""
    code = {name: {m.__name__ for m in registry.model_code(registry.build(name, tiny_split, TINY))}
            for name in ("sasrec", "sasrec_linear", "bsarec", "gru4rec")}
    assert code == {"sasrec": {"helpers.sasrec"}, "sasrec_linear": {"helpers.sasrec", "helpers.linear_attention"},
                    "bsarec": {"helpers.sasrec", "helpers.bsarec"}, "gru4rec": {"helpers.gru4rec"}}
