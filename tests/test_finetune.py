"""Fine-tuning mechanics on a tiny random BERT with the real tokenizer's vocabulary."""

import numpy as np
import pytest
import torch
from transformers import BertConfig

from helpers import finetune, textdata
from helpers.text import DEFAULT_MODEL

TEXTS = ["", "Toy Story (1995)", "Heat (1995)", "Alien (1979)", "Up (2009)", "Jaws (1975)"]


@pytest.fixture(scope="module")
def tokenizer():
    return textdata.load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)


@pytest.mark.parametrize("mode", finetune.MODES)
def test_prepare_model_trains_exactly_the_right_parameters(tiny, mode):
    model = finetune.prepare_model(tiny, 3, mode, top_layers=1, lora_r=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    n_train, n_total = finetune.trainable_parameters(model)
    assert n_train == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    if mode == "full":
        assert n_train == n_total == sum(p.numel() for p in model.parameters())
    elif mode == "top":
        assert all(n.startswith(("bert.encoder.layer.1.", "bert.pooler.", "classifier.")) for n in trainable)
        assert any(n.startswith("bert.encoder.layer.1.") for n in trainable) and n_train < n_total
    else:
        assert all("lora_" in n or "classifier" in n for n in trainable)
        lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
        assert lora == 2 * 2 * (4 * 32 + 32 * 4)  # 2 layers x (query, value) x (A + B)
        assert n_train == lora + 32 * 3 + 3  # + the trainable classifier copy (modules_to_save)
    assert model(input_ids=torch.tensor([[101, 2000, 102]])).logits.shape == (1, 3)


def test_prepare_model_rejects_bad_arguments(tiny):
    with pytest.raises(ValueError, match="mode"):
        finetune.prepare_model(tiny, 2, "half")
    with pytest.raises(ValueError, match="top_layers"):
        finetune.prepare_model(tiny, 2, "top", top_layers=3)


def _data(tokenizer, n=24, pairs=False):
    rng = np.random.default_rng(0)
    texts = [textdata.history_text(TEXTS, rng.integers(1, 6, 3)) for _ in range(n)]
    labels = [int("Toy" in t) for t in texts]
    return textdata.text_dataset(tokenizer, texts, labels, pairs=TEXTS[1:2] * n if pairs else None,
                                 max_length=32)


def test_lora_changes_only_adapters_and_head(tiny, tokenizer):
    model = finetune.prepare_model(tiny, 2, "lora", lora_r=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = _data(tokenizer)
    config = finetune.FinetuneConfig(steps=3, batch_size=8, lr=1e-2, eval_every=3, patience=5)
    finetune.fit(model, data, data, tokenizer, config, progress=False)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert any("lora_B" in k for k in changed) and any("classifier" in k for k in changed)
    frozen = [k for k in before if "lora_" not in k and "modules_to_save" not in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


def test_fit_restores_the_best_step_and_logs_every_validation(tiny, tokenizer):
    model = finetune.prepare_model(tiny, 2, "full")
    data = _data(tokenizer)
    config = finetune.FinetuneConfig(steps=6, batch_size=8, lr=1e-3, eval_every=2, patience=10)
    result = finetune.fit(model, data, data, tokenizer, config, progress=False)
    assert result.history["step"].tolist() == [2, 4, 6]
    assert result.best_metric == result.history["valid_macro_f1"].max()
    valid = textdata.loader(data, tokenizer, 64)
    assert finetune.scores(*finetune.predict(model, valid))["macro_f1"] == pytest.approx(result.best_metric)
    assert result.seconds_per_step > 0 and result.peak_memory is None
    budget = finetune.FinetuneConfig(steps=100, batch_size=8, eval_every=50, max_seconds=0.0)
    result = finetune.fit(model, data, data, tokenizer, budget, progress=False)
    assert result.history["step"].tolist() == [1]  # the budget ends it after one step, validated


def test_click_logit_trains_with_bce_and_reports_auc(tiny, tokenizer):
    model = finetune.prepare_model(tiny, 1, "top", top_layers=1)
    data = _data(tokenizer, pairs=True)
    config = finetune.FinetuneConfig(steps=2, batch_size=8, eval_every=2, metric="auc")
    result = finetune.fit(model, data, data, tokenizer, config, progress=False)
    assert 0 <= result.best_metric <= 1 and "valid_auc" in result.history


def test_scores_and_baseline_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    labels = np.array([0, 0, 0, 1])
    s = finetune.scores(logits, labels)
    assert s["accuracy"] == 0.75
    # class 0: precision 1, recall 2/3 -> F1 0.8; class 1: precision 1/2, recall 1 -> F1 2/3
    assert s["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert finetune.confusion(logits, labels).tolist() == [[2, 1], [0, 1]]
    base = finetune.majority_baseline(np.array([0, 0, 1]), labels, 2)
    assert base["accuracy"] == 0.75 and base["macro_f1"] == pytest.approx((6 / 7) / 2)
    click = finetune.scores(np.array([[0.1], [0.9], [0.5]]), np.array([0, 1, 0]))
    assert click["auc"] == 1.0


def test_training_state_bytes():
    net = torch.nn.Linear(3, 2)  # 8 float32 parameters
    assert finetune.training_state_bytes(net) == 8 * 4 * 4
    net.weight.requires_grad_(False)
    assert finetune.training_state_bytes(net) == 8 * 4 + 2 * 4 * 3


def test_macro_f1_gain_agrees_with_scikit_learn_and_its_interval_reads_the_evidence():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    good = np.where(rng.random(400) < 0.8, labels, rng.integers(0, 3, 400))  # right 80% of the time
    majority = np.full(400, np.bincount(labels).argmax())
    by_hand = (f1_score(labels, good, average="macro", labels=[0, 1, 2], zero_division=0)
               - f1_score(labels, majority, average="macro", labels=[0, 1, 2], zero_division=0))
    gain = finetune.macro_f1_gain(good, majority, labels, 3, n_resamples=300)
    assert gain["gain"] == pytest.approx(by_hand)
    assert 0 < gain["lo"] < gain["gain"] < gain["hi"]  # far above the majority class: the interval excludes 0
    same = finetune.macro_f1_gain(majority, majority, labels, 3, n_resamples=300)
    assert same == {"gain": 0.0, "lo": 0.0, "hi": 0.0}
    noisy = finetune.macro_f1_gain(rng.integers(0, 3, 400), majority, labels, 3, n_resamples=300)
    assert noisy["lo"] < noisy["gain"] < noisy["hi"]
