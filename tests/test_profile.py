import dataclasses

import pytest

from helpers import profile
from helpers.profile import PROFILES, get_profile


def test_env_var_selects_profile(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "ci")
    assert get_profile().name == "ci"
    monkeypatch.setenv("COURSE_PROFILE", "GPU ")
    assert get_profile().name == "gpu"


def test_default_is_cpu_without_cuda_and_gpu_with_it(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setattr(profile, "_cuda_available", lambda: False)
    assert get_profile().name == "cpu"
    monkeypatch.setattr(profile, "_cuda_available", lambda: True)
    assert get_profile().name == "gpu"


def test_explicit_env_var_overrides_cuda(monkeypatch):
    monkeypatch.setattr(profile, "_cuda_available", lambda: True)
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    assert get_profile().name == "cpu"


def test_unknown_profile_lists_known_ones(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "laptop")
    with pytest.raises(ValueError, match=r"'ci', 'cpu', 'gpu'"):
        get_profile()


def test_overrides_return_a_copy():
    p = get_profile("ci", epochs=7)
    assert p.epochs == 7 and PROFILES["ci"].epochs != 7


def test_profiles_grow_from_ci_to_gpu():
    ci, cpu, gpu = (PROFILES[n] for n in ("ci", "cpu", "gpu"))
    for field in ("max_len", "epochs", "hidden", "finetune_steps", "finetune_batch_size", "rerank_k"):
        assert getattr(ci, field) < getattr(cpu, field) <= getattr(gpu, field), field
    assert ci.text_max_tokens <= cpu.text_max_tokens < gpu.text_max_tokens  # a BERT pass costs ~ tokens
    assert cpu.valid_users is not None and ci.valid_users is None and gpu.valid_users is None
    assert ci.max_users is not None and cpu.max_users is None
    assert {f.name for f in dataclasses.fields(ci)} >= {"max_len", "epochs", "batch_size", "hidden"}


def test_notebook_09_privacy_table_covers_epsilon_1_4_and_8():
    # issue 23: NDCG@10 and attack AUC at epsilon 1, 4 and 8 in the runs whose numbers 09's text reads
    for name in ("cpu", "gpu"):
        assert {1.0, 4.0, 8.0} <= set(PROFILES[name].dp_epsilons), name
    assert all(0 < eps <= 8 for p in PROFILES.values() for eps in p.dp_epsilons)
