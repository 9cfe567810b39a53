"""Issue 12: training, checkpoints, evaluation, profiles and results fail early, naming the cause.

Data loading, splitting, the fetcher and the embedding cache have their issue-12 tests beside
their own tests (test_data, test_split, test_datasets, test_text, test_storage).
"""

import dataclasses
import json

import numpy as np
import pytest
import torch

from helpers import course, profile
from helpers import train as train_module
from helpers.evaluate import evaluate
from helpers.split import EvalSet, Split
from helpers.storage import CorruptFile
from helpers.train import TrainConfig, load_checkpoint, train
from test_train import successor_split, tiny_sasrec


def config(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 16, "max_len": 8, "checkpoint": tmp_path / "c.pt", **kw})


@pytest.fixture
def no_step(monkeypatch):
    """Any optimizer step fails: the error under test must come before training starts."""
    def step(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(train_module, "optimizer_step", step)


# ---------------------------------------------------------------- checkpoints
def test_item04_resume_refuses_a_changed_config_or_other_data(tmp_path):
    split = successor_split()
    train(tiny_sasrec(), split, config(tmp_path), progress=False)
    with pytest.raises(ValueError, match=r"lr: 0.001 in the checkpoint, 0.01 now.*delete .*c.pt.*resume=False"):
        train(tiny_sasrec(), split, config(tmp_path, lr=1e-2, resume=True, epochs=2), progress=False)
    with pytest.raises(ValueError, match="training data .* is not the same"):
        train(tiny_sasrec(), successor_split(seed=1), config(tmp_path, resume=True, epochs=2), progress=False)
    resumed = train(tiny_sasrec(), split, config(tmp_path, resume=True, epochs=2, eval_batch_size=7),
                    progress=False)  # more epochs, another evaluation batch: allowed
    assert resumed.history["epoch"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="epochs: 2 in the checkpoint, 3 now"):  # cosine depends on epochs
        train(tiny_sasrec(), split, config(tmp_path, cosine=True, epochs=2), progress=False)
        train(tiny_sasrec(), split, config(tmp_path, cosine=True, resume=True, epochs=3), progress=False)


def test_item05_flipped_byte_in_a_checkpoint_is_refused(tmp_path):
    train(tiny_sasrec(), successor_split(), config(tmp_path), progress=False)
    path = tmp_path / "c.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match=r"c.pt does not match its checksum"):
        load_checkpoint(tiny_sasrec(), path)
    with pytest.raises(CorruptFile, match=r"c.pt does not match its checksum"):
        train(tiny_sasrec(), successor_split(), config(tmp_path, resume=True), progress=False)


@pytest.mark.parametrize("keep", [0, 0.5])
def test_truncated_or_empty_checkpoint_names_the_file(tmp_path, keep):
    train(tiny_sasrec(), successor_split(), config(tmp_path), progress=False)
    path = tmp_path / "c.pt"
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    with pytest.raises(CorruptFile, match=rf"{path}.*(empty|checksum)"):
        load_checkpoint(tiny_sasrec(), path)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tiny_sasrec(), tmp_path / "nothing.pt")


def test_missing_checkpoint_folder_fails_before_training(tmp_path, no_step):
    with pytest.raises(FileNotFoundError, match=r"checkpoint folder .*missing does not exist"):
        train(tiny_sasrec(), successor_split(), config(tmp_path, checkpoint=tmp_path / "missing" / "c.pt"),
              progress=False)


# ---------------------------------------------------------------- the NaN guard
def test_item12_non_finite_loss_stops_at_once_and_is_never_checkpointed(tmp_path):
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, step 2 \(learning rate 1e\+08\)"):
        train(tiny_sasrec(), successor_split(), config(tmp_path, lr=1e8), progress=False)
    assert not (tmp_path / "c.pt").exists()


def test_item12_non_finite_weights_are_never_validated_or_checkpointed(tmp_path, monkeypatch):
    real_step = train_module.optimizer_step

    def poisoning_step(loss, optimizer, *args):
        real_step(loss, optimizer, *args)
        with torch.no_grad():
            optimizer.param_groups[0]["params"][0].fill_(float("inf"))  # the last step breaks a weight
    monkeypatch.setattr(train_module, "optimizer_step", poisoning_step)
    monkeypatch.setattr(train_module, "_validate", lambda *a: pytest.fail("validated non-finite weights"))
    one_batch = TrainConfig(epochs=1, batch_size=10_000, max_len=8, checkpoint=tmp_path / "c.pt")
    with pytest.raises(FloatingPointError, match="non-finite weights after epoch 1"):
        train(tiny_sasrec(), successor_split(), one_batch, progress=False)
    assert not (tmp_path / "c.pt").exists()


# ---------------------------------------------------------------- bad training input fails before step 1
def _with(split: Split, **changes) -> Split:
    return dataclasses.replace(split, **changes)


def test_every_user_under_three_events_fails_before_training(tmp_path, no_step):
    split = successor_split()
    empty = EvalSet(np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="split.valid is empty.*3 interactions"):
        train(tiny_sasrec(), _with(split, valid=empty), config(tmp_path), progress=False)


def test_length_one_sequences_or_no_sequences_fail_before_training(tmp_path, no_step):
    split = successor_split()
    with pytest.raises(ValueError, match="no training sequence has 2 items"):
        train(tiny_sasrec(), _with(split, train=[s[:1] for s in split.train]), config(tmp_path), progress=False)
    with pytest.raises(ValueError, match="split.train is empty"):
        train(tiny_sasrec(), _with(split, train=[]), config(tmp_path), progress=False)


def test_training_ids_out_of_range_and_bad_config_fail_before_training(tmp_path, no_step):
    split = successor_split()
    with pytest.raises(ValueError, match=r"item ids 1..21, outside 1..n_items=20"):
        train(tiny_sasrec(), _with(split, train=[*split.train[:-1], np.array([1, 21])]), config(tmp_path),
              progress=False)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        train(tiny_sasrec(), split, config(tmp_path, lr=float("nan")), progress=False)
    with pytest.raises(ValueError, match="resume=True needs TrainConfig.checkpoint"):
        train(tiny_sasrec(), split, config(tmp_path, checkpoint=None, resume=True), progress=False)


# ---------------------------------------------------------------- evaluation
class Scorer:
    max_len = 4

    def __init__(self, kind: str):
        self.kind = kind

    def score(self, input_ids):
        out = torch.arange(21.0).repeat(len(input_ids), 1)  # (B, V)
        return out.numpy() if self.kind == "numpy" else out.tolist() if self.kind == "list" else out


def test_item08_evaluate_refuses_mismatched_eval_sets():
    with pytest.raises(ValueError, match="3 histories, 2 targets"):
        EvalSet(np.arange(3), [np.array([1])] * 3, np.array([2, 3]))


def test_history_ids_out_of_range_are_named_before_the_model_sees_them():
    data = EvalSet(np.array([7, 8]), [np.array([1, 2]), np.array([3, 25])], np.array([4, 5]))
    with pytest.raises(ValueError, match=r"history of user 8 \(row 1\) holds item id 25, outside 1..n_items=20"):
        evaluate(Scorer("tensor"), data, 20)


@pytest.mark.parametrize("kind", ["numpy", "list"])
def test_score_returning_numpy_or_a_list_is_named(kind):
    data = EvalSet(np.array([7]), [np.array([1, 2])], np.array([4]))
    with pytest.raises(TypeError, match=rf"Scorer.score\(\) must return a torch.Tensor .*got {kind}"):
        evaluate(Scorer(kind), data, 20)
    assert evaluate(Scorer("tensor"), data, 20).summary()["hr@10"] == 0.0


# ---------------------------------------------------------------- profiles and results
def test_unknown_profile_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no profile named 'bogus'; choose one of \['ci', 'cpu', 'gpu'\]"):
        profile.get_profile("bogus")
    with pytest.raises(TypeError, match=r"no field\(s\) \['epochz'\]"):
        profile.get_profile("ci", epochz=3)


def test_truncated_results_json_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(course.RESULTS_ENV, str(tmp_path))
    course.record("x", 1.0, notebook="99_probe")
    path = course.results_path("99_probe")
    assert json.loads(path.read_text())["values"] == {"x": 1.0}
    path.write_text(path.read_text()[:10])
    with pytest.raises(ValueError, match=rf"{path} is not valid JSON.*delete it"):
        course.load_results("99_probe")
    with pytest.raises(ValueError, match=rf"{path} is not valid JSON"):
        course.record("x", 2.0, notebook="99_probe")
