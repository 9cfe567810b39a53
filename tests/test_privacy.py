import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers import privacy
from helpers.ids import IGNORE
from helpers.online import OnlineHistories
from helpers.sasrec import SASRec, SASRecConfig

KEY = "0123456789abcdef" * 4


def _model(n_items: int = 12, dropout: float = 0.0) -> SASRec:
    torch.manual_seed(0)
    return SASRec(SASRecConfig(n_items, max_len=5, hidden=8, n_layers=1, n_heads=2, dropout=dropout))


def test_pseudonym_is_hmac_sha256_rfc4231_test_case_1():
    # test case 2's key ("Jefe", 4 bytes) is now refused as too short: case 1 has 20 bytes
    assert privacy.Pseudonymiser(b"\x0b" * 20)("Hi There") == (
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")


def test_load_key_from_env_or_a_file_outside_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    monkeypatch.delenv(privacy.KEY_FILE_ENV, raising=False)
    with pytest.raises(KeyError):
        privacy.load_key()
    monkeypatch.setenv(privacy.KEY_ENV, KEY)
    assert privacy.load_key() == KEY.encode()
    monkeypatch.delenv(privacy.KEY_ENV)
    (tmp_path / "key").write_text(KEY + "\n")
    monkeypatch.setenv(privacy.KEY_FILE_ENV, str(tmp_path / "key"))
    assert privacy.load_key() == KEY.encode()
    monkeypatch.setenv(privacy.KEY_FILE_ENV, str(Path(privacy.__file__).parents[1] / "pyproject.toml"))
    with pytest.raises(ValueError, match="inside a git repository"):
        privacy.load_key()
    monkeypatch.setenv(privacy.KEY_ENV, "short")
    with pytest.raises(ValueError, match="at least"):
        privacy.load_key()


def test_the_key_is_never_written(monkeypatch, tmp_path):
    monkeypatch.setenv(privacy.KEY_ENV, KEY)
    pseudo = privacy.Pseudonymiser(privacy.load_key())
    events = pd.DataFrame({"user_id": [1, 2, 1], "item_id": [5, 6, 7], "timestamp": [10, 11, 12]})
    log = privacy.EventLog(tmp_path / "log" / "events.csv")
    log.append(pseudo.frame(events))
    log.forget(pseudo(2))
    assert KEY not in repr(pseudo)
    with pytest.raises(TypeError):
        pickle.dumps(pseudo)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(KEY.encode() not in p.read_bytes() for p in written)
    stored = log.read()
    assert set(stored["user_id"]) == {pseudo(1)} and "1" not in set(stored["user_id"])


def test_pseudonyms_are_stable_and_join_histories():
    pseudo = privacy.Pseudonymiser(KEY.encode())
    events = pd.DataFrame({"user_id": [3, 4, 3], "item_id": [1, 2, 3]})
    out = pseudo.frame(events)
    assert out["user_id"].tolist() == [pseudo(3), pseudo(4), pseudo(3)] and len(pseudo(3)) == 64
    assert privacy.Pseudonymiser(b"another key, 16+ bytes")(3) != pseudo(3)
    assert events["user_id"].tolist() == [3, 4, 3]  # the input is not modified


def test_delete_user_removes_every_stored_event(tmp_path):
    pseudo = privacy.Pseudonymiser(KEY.encode())
    events = pd.DataFrame({"user_id": [1, 2, 1, 3, 1], "item_id": [5, 6, 7, 8, 9], "timestamp": range(5)})
    stored = pseudo.frame(events)
    log = privacy.EventLog(tmp_path / "events.csv")
    log.append(stored)
    cache = OnlineHistories(window=2)
    for user, item, ts in stored.itertuples(index=False):
        cache.observe(user, item, ts)
    removed = privacy.delete_user(pseudo(1), {"log": log, "histories": cache})
    assert removed == {"log": 3, "histories": 2}  # the cache kept only a window of 2
    assert pseudo(1).encode() not in log.path.read_bytes() and pseudo(1) not in cache
    assert sorted(log.read()["item_id"]) == [6, 8] and cache.history(pseudo(2)).tolist() == [6]
    with pytest.warns(UserWarning, match="nothing was deleted"):
        assert privacy.delete_user(pseudo(1), {"log": log, "histories": cache}) == {"log": 0, "histories": 0}


def test_attack_auc_by_hand_and_against_sklearn():
    # members 1, 2 vs non-members 1.5, 3: pairs (1<1.5, 1<3, 2>1.5, 2<3) -> 3 of 4
    assert privacy.attack_auc([1.0, 2.0], [1.5, 3.0]) == 0.75
    assert privacy.attack_auc([1.0], [1.0]) == 0.5
    rng = np.random.default_rng(0)
    m, n = rng.normal(0, 1, 50).round(1), rng.normal(0.5, 1, 70).round(1)
    labels = np.r_[np.ones(50), np.zeros(70)]
    assert privacy.attack_auc(m, n) == pytest.approx(roc_auc_score(labels, -np.r_[m, n]))


def test_auc_ci_is_delongs_by_hand():
    # members 1, 3 vs non-members 2, 4: wins (1<2, 1<4, 3>2, 3<4) -> AUC 3/4; each member's share
    # of non-members beaten (1, 1/2) and each non-member's share of members below it (1/2, 1):
    # var = var([1, .5]) / 2 + var([.5, 1]) / 2 = .125 / 2 + .125 / 2 = .125 (ddof 1)
    auc, low, high = privacy.auc_ci([1.0, 3.0], [2.0, 4.0])
    half = 1.959963984540054 * np.sqrt(0.125)
    assert auc == 0.75 and low == pytest.approx(0.75 - half) and high == 1.0  # clipped at 1
    # ties count 1/2 in the placements too: members 1, 2 vs 1, 2 -> AUC 1/2, v = (3/4, 1/4) both,
    # se = sqrt(.125) as above: .5 -+ .69 is clipped to [0, 1]
    assert privacy.auc_ci([1.0, 2.0], [1.0, 2.0]) == (0.5, 0.0, 1.0)
    with pytest.raises(ValueError):
        privacy.auc_ci([1.0], [2.0, 3.0])


def test_auc_ci_covers_a_known_auc_about_95_times_in_100():
    # scores N(0,1) vs N(1,1): the true AUC is Phi(1 / sqrt 2) = .7602
    rng = np.random.default_rng(0)
    covered = [low <= 0.7602 <= high for low, high in
               (privacy.auc_ci(rng.normal(0, 1, 60), rng.normal(1, 1, 80))[1:] for _ in range(200))]
    assert 0.9 <= np.mean(covered) <= 0.99


def test_calibrated_losses_subtract_the_reference_models_loss():
    seqs = [np.array([1, 2, 3, 4, 5, 6, 7, 8]), np.array([4, 5, 9])]
    model, other = _model(), _model()
    torch.manual_seed(1)
    other.item_emb.weight.data.normal_()
    expected = privacy.sequence_losses(model, seqs) - privacy.sequence_losses(other, seqs)
    assert np.allclose(privacy.calibrated_losses(model, other, seqs), expected) and not np.allclose(expected, 0)
    assert np.array_equal(privacy.calibrated_losses(model, model, seqs), np.zeros(2))


def test_calibration_removes_how_easy_a_user_is():
    """Members fitted a little better than outsiders, but users' difficulty varies far more: the
    plain loss hides membership, the loss minus a reference's (difficulty alone) shows it."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(5, 1, 400)  # (400,) what any model's loss on the user is
    member = np.arange(400) < 200
    target = difficulty - 0.2 * member + rng.normal(0, 0.05, 400)
    reference = difficulty + rng.normal(0, 0.05, 400)
    plain = privacy.attack_auc(target[member], target[~member])
    calibrated = privacy.attack_auc((target - reference)[member], (target - reference)[~member])
    assert plain < 0.6 and calibrated > 0.95


def test_default_delta_is_a_tenth_of_one_over_n():
    assert privacy.default_delta(50) == 1 / 500 and privacy.DPConfig().delta is None


def test_member_split_is_a_partition():
    members, others = privacy.member_split(11, 0.5, seed=3)
    assert len(members) == 6 and sorted(np.r_[members, others].tolist()) == list(range(11))


def test_sequence_losses_match_the_model_loss():
    model = _model().eval()
    seqs = [np.array([1, 2, 3, 4, 5, 6, 7, 8]), np.array([4, 5])]
    losses = privacy.sequence_losses(model, seqs)
    for s, value in zip(seqs, losses):
        tail = torch.as_tensor(s[-6:])[None]
        _, loss = model(tail[:, :-1], tail[:, 1:])
        assert value == pytest.approx(float(loss), rel=1e-5)


def test_per_sample_grads_match_one_example_at_a_time():
    model = _model(dropout=0.0)
    inputs = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]])
    labels = torch.tensor([[IGNORE, IGNORE, 2, 3, 9], [5, 6, 7, 8, 10]])
    grads, losses = privacy.per_sample_grads(model, inputs, labels)
    for b in range(2):
        model.zero_grad()
        _, loss = model(inputs[b:b + 1], labels[b:b + 1])
        loss.backward()
        assert float(losses[b]) == pytest.approx(float(loss), rel=1e-5)
        for name, p in model.named_parameters():
            assert torch.allclose(grads[name][b], p.grad, atol=1e-6), name


def test_dp_train_runs_and_spends_at_most_the_target_epsilon():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 13, int(rng.integers(3, 12))) for _ in range(40)]
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = privacy.dp_train(model, seqs, privacy.DPConfig(epochs=1, batch_size=8, target_epsilon=4.0))
    assert result.delta == 1 / 400 and result.steps == 5 and result.sample_rate == 0.2  # 1 / (10 n)
    assert result.noise_multiplier > 0 and 3.5 < result.epsilon <= 4.0 + 1e-6
    assert all(np.isfinite(result.losses)) and not model.training
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    plain = privacy.dp_train(_model(), seqs, privacy.DPConfig(epochs=1, batch_size=8, target_epsilon=None))
    assert plain.epsilon == float("inf") and plain.noise_multiplier == 0


def test_dp_clipping_bounds_each_users_influence():
    """With noise 0 the DP step moves parameters by at most lr per coordinate (Adam), and a
    user whose gradient is huge weighs no more than max_grad_norm: check the clip directly."""
    model = _model()
    inputs = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]])
    labels = torch.tensor([[IGNORE, IGNORE, 2, 3, 9], [5, 6, 7, 8, 10]])
    grads, _ = privacy.per_sample_grads(model, inputs, labels)
    from opacus.optimizers import DPOptimizer

    opt = DPOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=0.0, max_grad_norm=1e-3,
                      expected_batch_size=2)
    for name, p in model.named_parameters():
        p.grad_sample = grads[name] * 1e3
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt.step()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before).norm()) <= 1e-3 + 1e-7  # mean of two clipped gradients


def test_split_members_keeps_members_targets_only():
    from helpers.split import leave_one_out

    df = pd.DataFrame({"user_id": np.repeat(np.arange(1, 7), 4), "item_id": np.tile([1, 2, 3, 4], 6),
                       "timestamp": np.tile(np.arange(4), 6)})
    s = leave_one_out(df)
    member, others = privacy.split_members(s, 0.5, seed=0)
    assert len(member.train) == 3 and len(others) == 3
    assert set(member.test.users) == set(member.train_users) == set(member.valid.users)
