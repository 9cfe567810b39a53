"""Tensor files: atomic writes, a sha256 sidecar, and refusal of anything unverified."""

import hashlib
import os
import pickle

import pytest
import torch

from helpers.storage import CorruptFile, checksum_path, load_tensors, remove, save_tensors


def test_round_trip_and_sidecar_format(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "step": 7, "name": "x", "rows": [1, 2]}
    path = tmp_path / "state.pt"
    save_tensors(obj, path)
    back = load_tensors(path)
    assert torch.equal(back["w"], obj["w"]) and back["step"] == 7 and back["rows"] == [1, 2]
    digest, name = checksum_path(path).read_text().split()
    assert name == "state.pt"
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt", "state.pt.sha256"]  # no temp left


def test_one_flipped_byte_is_refused(tmp_path):
    path = tmp_path / "state.pt"
    save_tensors({"w": torch.ones(100)}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match=r"state\.pt does not match its checksum.*delete"):
        load_tensors(path)


@pytest.mark.parametrize("keep", [0, 0.5])
def test_empty_or_truncated_file_is_refused(tmp_path, keep):
    path = tmp_path / "state.pt"
    save_tensors({"w": torch.ones(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CorruptFile, match=str(path).replace("\\", "\\\\")):
        load_tensors(path)


def test_missing_sidecar_is_refused_and_missing_file_named(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.ones(2)}, path)  # written without save_tensors
    with pytest.raises(CorruptFile, match="no checksum file state.pt.sha256"):
        load_tensors(path)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_tensors(tmp_path / "nothing.pt")


def test_pickle_payload_is_refused_even_with_a_matching_sidecar(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"f": os.getcwd}, path)  # a function: weights_only refuses it
    checksum_path(path).write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  evil.pt\n")
    with pytest.raises(CorruptFile, match="cannot be loaded as tensors") as info:
        load_tensors(path)
    assert isinstance(info.value.__cause__, (pickle.UnpicklingError, RuntimeError))


def test_save_into_a_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_tensors({"w": torch.ones(1)}, tmp_path / "no" / "state.pt")


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    save_tensors({"w": torch.zeros(3)}, path)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_tensors({"w": torch.ones(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_tensors(path)["w"], torch.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt", "state.pt.sha256"]
    remove(path)
    assert list(tmp_path.iterdir()) == []
