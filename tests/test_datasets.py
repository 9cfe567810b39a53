import hashlib
import http.server
import io
import os
import shutil
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest
import requests

from helpers import datasets
from helpers.datasets import (ChecksumError, DatasetError, DatasetSpec, DatasetUnavailable,
                              UnknownDataset, UnsafeArchive)

SHARED = Path(os.environ.get("COURSE_DATA_DIR") or datasets.REPO_ROOT.parent / "shared" / "data")
needs_shared = pytest.mark.shared_data  # files checked against the registry's sha256 (tests/conftest.py)

A, B = b"1\t10\t5\t100\n", b"hello\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


TOY_ZIP = make_zip({"toy/a.txt": A, "toy/b.txt": B, "toy/extra/readme": b"x"})


def toy_spec(archive_sha256: str | None = sha(TOY_ZIP), **files: str | None) -> DatasetSpec:
    return DatasetSpec("toy", "a toy data set", ("https://example.invalid/toy.zip",),
                       files or {"toy/a.txt": sha(A), "toy/b.txt": sha(B)}, kind="ml-100k",
                       archive="toy.zip", archive_sha256=archive_sha256)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets an empty cache and no local copy; the network is never used."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    return tmp_path / "cache"


class FakeDownload:
    """Stands in for ``download_file``: writes ``payload`` (or fails) and counts calls."""

    def __init__(self, payload: bytes = TOY_ZIP, fail: Exception | None = None):
        self.payload, self.fail, self.calls = payload, fail, []

    def __call__(self, url: str, dest: Path, known_hash: str | None) -> None:
        self.calls.append(url)
        dest.write_bytes(self.payload if self.fail is None else self.payload[: len(self.payload) // 2])
        if self.fail is not None:
            raise self.fail


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "toy", toy_spec())
    fake = FakeDownload()
    monkeypatch.setattr(datasets, "download_file", fake)
    return fake


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownDataset, match="known: .*beauty.*ml-100k.*ml-1m.*ml-latest-small"):
        datasets.fetch("ml-100m")


def test_download_verifies_extracts_then_cache_is_reused(toy, cache):
    root = datasets.fetch("toy")
    assert root == cache and len(toy.calls) == 1
    assert (root / "toy/a.txt").read_bytes() == A and (root / "toy/extra/readme").read_bytes() == b"x"
    assert files_under(cache) == [".toy.sha256", "toy/a.txt", "toy/b.txt", "toy/extra/readme"]
    assert datasets.fetch("toy") == cache and len(toy.calls) == 1  # no second download


def test_corrupt_cache_is_downloaded_again(toy, cache):
    datasets.fetch("toy")
    (cache / "toy/a.txt").write_bytes(A[:-1])
    with pytest.warns(UserWarning, match="corrupt"):
        datasets.fetch("toy")
    assert len(toy.calls) == 2 and (cache / "toy/a.txt").read_bytes() == A


def test_cache_reused_without_download_for_a_registered_dataset(cache, monkeypatch):
    monkeypatch.setattr(datasets, "download_file", FakeDownload(fail=RuntimeError("no network")))
    (cache / "amazon").mkdir(parents=True)
    text = b"1 1 2 3\n2 2 3\n"
    (cache / "amazon/Beauty.txt").write_bytes(text)
    spec = datasets.DATASETS["beauty"]
    monkeypatch.setitem(datasets.DATASETS, "beauty",
                        DatasetSpec(**{**spec.__dict__, "files": {"amazon/Beauty.txt": sha(text)}}))
    assert datasets.fetch("beauty") == cache


def test_local_folder_is_used_and_verified(toy, tmp_path, monkeypatch):
    local = tmp_path / "local"
    (local / "toy").mkdir(parents=True)
    (local / "toy/a.txt").write_bytes(A)
    (local / "toy/b.txt").write_bytes(B)
    assert datasets.fetch("toy", data_dir=local) == local
    monkeypatch.setenv("COURSE_DATA_DIR", str(local))
    assert datasets.fetch("toy") == local and toy.calls == []
    (local / "toy/b.txt").write_bytes(b"hellO\n")
    with pytest.raises(ChecksumError) as err:
        datasets.fetch("toy")
    message = str(err.value)
    assert "toy/b.txt" in message and sha(B) in message and sha(b"hellO\n") in message


@needs_shared
def test_reference_folder_is_used_as_is(monkeypatch):
    monkeypatch.setattr(datasets, "download_file", FakeDownload(fail=RuntimeError("no network")))
    for name in ("ml-100k", "ml-latest-small", "beauty"):
        assert datasets.fetch(name, data_dir=SHARED) == SHARED


@needs_shared
def test_truncated_local_file_is_an_error(tmp_path):
    (tmp_path / "amazon").mkdir()
    (tmp_path / "amazon/Beauty.txt").write_bytes((SHARED / "amazon/Beauty.txt").read_bytes()[:-100])
    with pytest.raises(ChecksumError, match=r"Beauty\.txt.*expected 226cce9c"):
        datasets.fetch("beauty", data_dir=tmp_path)


@needs_shared
@pytest.mark.skipif(not (SHARED / "SHA256SUMS").is_file(), reason=f"no {SHARED / 'SHA256SUMS'} to compare with")
def test_registry_hashes_match_the_reference_sums():
    sums = dict(reversed(line.split()) for line in (SHARED / "SHA256SUMS").read_text().splitlines())
    checked = 0
    for spec in datasets.DATASETS.values():
        for rel, digest in spec.files.items():
            if rel in sums:
                assert digest == sums[rel], rel
                checked += 1
    assert checked == 13  # 3 ml-100k, 3 ml-latest-small, Beauty, 6 multi-behaviour files (notebook 10)


def test_unverified_local_file_is_used_with_a_warning(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "toy", toy_spec(**{"toy/a.txt": None}))
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy/a.txt").write_bytes(b"anything")
    with pytest.warns(UserWarning, match="unverified"):
        assert datasets.fetch("toy", data_dir=tmp_path) == tmp_path


def test_unpinned_file_from_a_download_is_checked_by_the_manifest(toy, cache, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "toy", toy_spec(**{"toy/a.txt": None}))
    datasets.fetch("toy")
    assert datasets.fetch("toy") == cache and len(toy.calls) == 1
    (cache / "toy/a.txt").write_bytes(b"tampered")
    with pytest.warns(UserWarning, match="corrupt"):
        datasets.fetch("toy")
    assert len(toy.calls) == 2 and (cache / "toy/a.txt").read_bytes() == A


def test_wrong_archive_checksum_leaves_nothing(toy, cache, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "toy", toy_spec(archive_sha256="0" * 64))
    with pytest.raises(ChecksumError, match="toy.zip.*expected 0000"):
        datasets.fetch("toy")
    assert files_under(cache) == []


def test_wrong_member_checksum_leaves_nothing(toy, cache, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "toy", toy_spec(None, **{"toy/a.txt": sha(b"other")}))
    with pytest.raises(ChecksumError, match="a.txt"):
        datasets.fetch("toy")
    assert files_under(cache) == []


def test_missing_member_is_named(toy, cache, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "toy", toy_spec(None, **{"toy/c.txt": sha(A)}))
    with pytest.raises(DatasetError, match="lacks toy/c.txt"):
        datasets.fetch("toy")
    assert files_under(cache) == []


def test_truncated_download_leaves_nothing(toy, cache, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "toy", toy_spec(archive_sha256=None))
    toy.payload = TOY_ZIP[:-30]
    with pytest.raises(DatasetError, match="not a valid zip"):
        datasets.fetch("toy")
    assert files_under(cache) == []


@pytest.mark.parametrize("member", ["../evil.txt", "toy/../../evil.txt"])
def test_zip_member_escaping_the_folder_is_refused(toy, cache, tmp_path, monkeypatch, member):
    toy.payload = make_zip({"toy/a.txt": A, "toy/b.txt": B, member: b"owned"})
    monkeypatch.setitem(datasets.DATASETS, "toy", toy_spec(archive_sha256=sha(toy.payload)))
    with pytest.raises(UnsafeArchive, match=member.replace(".", r"\.")):
        datasets.fetch("toy")
    assert files_under(cache) == [] and not list(tmp_path.rglob("evil.txt"))


def test_failed_download_leaves_no_partial_file(toy, cache):
    toy.fail = requests.ConnectionError("connection reset")
    with pytest.raises(DatasetUnavailable):
        datasets.fetch("toy")
    assert len(toy.calls) == 1 and files_under(cache) == []


def test_no_network_and_no_local_copy_is_one_clear_error(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "download_file", FakeDownload(fail=requests.ConnectionError("offline")))
    with pytest.raises(DatasetUnavailable) as err:
        datasets.fetch("beauty", data_dir=tmp_path)
    message = str(err.value)
    spec = datasets.DATASETS["beauty"]
    assert "'beauty'" in message and spec.url in message and "COURSE_DATA_DIR" in message
    assert str(tmp_path) in message and files_under(cache) == []


def test_real_downloader_reports_a_refused_connection(cache, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    url = "http://127.0.0.1:9/toy.zip"  # the discard port: nothing listens there
    monkeypatch.setitem(datasets.DATASETS, "toy", DatasetSpec(**{**toy_spec().__dict__, "urls": (url,)}))
    with pytest.raises(DatasetUnavailable, match=rf"'toy'.*{url}.*COURSE_DATA_DIR"):
        datasets.fetch("toy")
    assert files_under(cache) == []


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """A loopback HTTP server for the real pooch download path."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    (served / "toy.zip").write_bytes(TOY_ZIP)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("archive_ok", [True, False])
def test_real_pooch_download_from_loopback(http_server, cache, monkeypatch, archive_ok):
    spec = toy_spec(sha(TOY_ZIP) if archive_ok else sha(b"not it"))
    monkeypatch.setitem(datasets.DATASETS, "toy",
                        DatasetSpec(**{**spec.__dict__, "urls": (f"{http_server}/toy.zip",)}))
    if archive_ok:
        assert (datasets.fetch("toy") / "toy/b.txt").read_bytes() == B
    else:
        with pytest.raises(ChecksumError):
            datasets.fetch("toy")
        assert files_under(cache) == []


def test_sequence_dataset_is_generic(monkeypatch, tmp_path):
    spec = datasets.sequence_dataset("sports", "https://example.org/data/Sports_and_Outdoors.txt", sha(B))
    assert spec.kind == "sequence" and spec.archive is None
    assert spec.files == {"sports/Sports_and_Outdoors.txt": sha(B)}
    monkeypatch.setitem(datasets.DATASETS, spec.name, spec)
    fake = FakeDownload(payload=B)
    monkeypatch.setattr(datasets, "download_file", fake)
    root = datasets.fetch("sports")
    assert (root / "sports/Sports_and_Outdoors.txt").read_bytes() == B and fake.calls == [spec.url]


def test_no_temporary_folder_is_left_behind(toy, cache):
    datasets.fetch("toy")
    assert not [p for p in cache.iterdir() if p.name.startswith(".partial")]
    shutil.rmtree(cache / "toy")
    toy.fail = requests.Timeout("slow")
    with pytest.raises(DatasetUnavailable):
        datasets.fetch("toy")
    assert not [p for p in cache.iterdir() if p.name.startswith(".partial")]


# --- issue 12: paths, partial downloads, errors that name the cause -----------------------------

@pytest.mark.parametrize("path", ["../evil.txt", "toys/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt",
                                  "toys\\..\\evil.txt"])
def test_item09_a_path_outside_the_data_folder_is_refused(path, cache):
    with pytest.raises(ValueError, match="must be relative.*no '..'"):
        datasets.sequence_dataset("toys", "https://example.org/Toys.txt", sha(B), path=path)
    with pytest.raises(ValueError, match="plain name"):
        datasets.sequence_dataset("../toys", "https://example.org/Toys.txt", sha(B))
    assert not cache.exists()


def test_item13_partial_folders_of_killed_downloads_are_removed(toy, cache):
    import signal
    import subprocess
    import sys
    import time

    script = ("import time; from helpers import datasets\n"
              "datasets.register(datasets.DatasetSpec('toy', 'toy', ('https://example.invalid/toy.zip',),"
              " {'toy/a.txt': None}, kind='ml-100k', archive='toy.zip'))\n"
              "datasets.download_file = lambda url, dest, known_hash: time.sleep(60)\n"
              "datasets.fetch('toy')\n")
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "COURSE_CACHE_DIR": str(cache)},
                             cwd=datasets.REPO_ROOT)
    deadline = time.monotonic() + 60
    while not list(cache.glob(".partial-*")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert [p.name.split("-")[1] for p in cache.glob(".partial-*")] == [str(child.pid)]
    old = cache / ".partial-toy-abc"  # the old naming (no pid), a day old
    old.mkdir()
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    alive = cache / f".partial-{os.getppid()}-toy-xyz"  # a running fetcher's folder is kept
    alive.mkdir()
    datasets.fetch("toy")
    assert [p.name for p in cache.glob(".partial-*")] == [alive.name]


def test_missing_local_file_and_missing_data_dir_are_named(toy, tmp_path, monkeypatch):
    toy.fail = requests.ConnectionError("offline")
    local = tmp_path / "local"
    (local / "toy").mkdir(parents=True)
    (local / "toy/a.txt").write_bytes(A)
    with pytest.warns(UserWarning, match=r"local lacks toy/b.txt of 'toy'"):
        with pytest.raises(DatasetUnavailable, match=r"local lacks toy/b.txt"):
            datasets.fetch("toy", data_dir=local)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.warns(UserWarning, match=r"nowhere \(COURSE_DATA_DIR\) does not exist"):
        with pytest.raises(DatasetUnavailable, match=r"nowhere \(COURSE_DATA_DIR\) does not exist"):
            datasets.fetch("toy")
