import json

import numpy as np
import pytest
import torch

from helpers import course


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    return tmp_path


def test_setup_seeds_and_reports(results, capsys):
    s = course.setup("00_test", seed=3, profile="ci")
    a = (torch.rand(2), np.random.rand())
    course.setup("00_test", seed=3, profile="ci")
    b = (torch.rand(2), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert s.profile.name == "ci" and s.device.type in {"cpu", "cuda"}
    assert "profile ci" in capsys.readouterr().out


def test_record_writes_json_per_notebook(results):
    course.setup("00_test", profile="ci")
    assert course.record("pop/ndcg@10", 0.25) == 0.25
    course.record("pop/hr@10", np.float32(0.5))
    stored = json.loads((results / "00_test.json").read_text())
    assert stored == {"profile": "ci", "values": {"pop/hr@10": 0.5, "pop/ndcg@10": 0.25}}
    assert course.load_results("00_test") == stored
    assert not list(results.glob("*.tmp"))


def test_record_starts_afresh_when_profile_changes(results):
    course.setup("00_test", profile="ci")
    course.record("a", 1.0)
    course.setup("00_test", profile="cpu")
    course.record("b", 2.0)
    assert course.load_results("00_test") == {"profile": "cpu", "values": {"b": 2.0}}
