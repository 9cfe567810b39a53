"""Where the course's data sets come from, and a fetcher that only hands out verified files.

``fetch(name)`` returns a folder ``root`` such that ``root / path`` exists for every
``path`` in ``DATASETS[name].files`` and has the expected sha256. It looks, in order:

1. in a local folder: the ``data_dir`` argument, else ``$COURSE_DATA_DIR``, laid out like
   the reference copy (``ml-100k/u.data``, ``amazon/Beauty.txt``, ...). A file there whose
   hash differs is an error, never silently replaced;
2. in the download cache: ``$COURSE_CACHE_DIR``, else ``data/`` at the repository root;
3. on the web, with ``pooch``: the download and the extraction happen in a temporary
   folder inside the cache, every file is checked, and only then moved into place
   (``os.replace``), so the cache never holds a partial or corrupt file.

MovieLens forbids redistribution, so the project never commits the files: each user
downloads them from GroupLens (or points ``COURSE_DATA_DIR`` at a copy).

In a dry run (``COURSE_DRY_RUN``, see :mod:`helpers.profile`) ``ml-1m`` is served by
``ml-1m-dryrun``: a small file in ML-1M's exact format, written by this module (no
download), pinned by sha256 and read by the real ML-1M loader.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import pooch
import requests

from helpers.profile import dry_run

DATA_ENV = "COURSE_DATA_DIR"
CACHE_ENV = "COURSE_CACHE_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]
_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
_MOVIELENS_LICENCE = ("GroupLens research licence: research use with citation (Harper & Konstan, "
                      "ACM TiiS 2015); no redistribution, no commercial use without permission")


class DatasetError(Exception):
    """Base class of every error raised while fetching a data set."""


class UnknownDataset(DatasetError, ValueError):
    """A name that is not in the registry."""


class ChecksumError(DatasetError, ValueError):
    """A file whose sha256 is not the expected one."""


class UnsafeArchive(DatasetError, ValueError):
    """A zip member that would land outside the extraction folder (zip-slip)."""


class DatasetUnavailable(DatasetError, RuntimeError):
    """No verified local copy, and the download failed."""


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to get one data set and check it."""

    name: str  # registry key, e.g. "ml-100k"
    description: str
    urls: tuple[str, ...]  # tried in order; the first is the official source
    files: dict[str, str | None]  # path relative to the data root -> sha256 (None: none published)
    kind: str  # file format the loaders in helpers.data dispatch on
    archive: str | None = None  # zip file name; None when the url is the file itself
    archive_sha256: str | None = None  # sha256 of the zip, checked before extracting
    licence: str = ""
    homepage: str = ""
    make: Callable[[Path], None] | None = None  # writes the files into a folder instead of a download

    def __post_init__(self) -> None:
        if not self.name or self.name.strip(".") == "" or any(c in self.name for c in "/\\:"):
            raise ValueError(f"dataset name {self.name!r} must be a plain name (no '/', '\\' or ':')")
        for rel in (*self.files, *([self.archive] if self.archive else [])):
            parts = PurePosixPath(rel).parts
            if not parts or PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).drive \
                    or ".." in parts or "\\" in rel:
                raise ValueError(f"dataset {self.name!r}: file path {rel!r} must be relative, with "
                                 "'/' separators and no '..', so it stays inside the data folder")

    @property
    def url(self) -> str:
        return self.urls[0]


def sequence_dataset(name: str, url: str, sha256: str | None, *, path: str | None = None,
                     description: str = "", licence: str = "", homepage: str = "") -> DatasetSpec:
    """A spec for one S3-Rec-format file (``user item item ...`` per line, oldest first).

    ``path`` is where the file lives under the data root (default ``<name>/<file name>``).
    Register the result with :func:`register` to make ``fetch`` and ``helpers.data`` know it.
    """
    path = path or f"{name}/{url.rsplit('/', 1)[-1]}"
    return DatasetSpec(name, description or f"sequences from {url}", (url,), {path: sha256},
                       kind="sequence", licence=licence, homepage=homepage)


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry (replacing one of the same name) and return it."""
    DATASETS[spec.name] = spec
    return spec


register(DatasetSpec(
    "ml-100k", "MovieLens 100K: 100,000 ratings (1-5) by 943 users on 1,682 movies, 1997-98",
    (f"{_GROUPLENS}/ml-100k.zip",),
    {"ml-100k/u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
     "ml-100k/u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
     "ml-100k/u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"},
    kind="ml-100k", archive="ml-100k.zip",
    # GroupLens publishes the md5 0e33842e24a9c977be4e0107933c0723 (ml-100k.zip.md5).
    archive_sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    licence=_MOVIELENS_LICENCE, homepage="https://grouplens.org/datasets/movielens/100k/"))

register(DatasetSpec(
    "ml-latest-small",
    "MovieLens latest-small (2018 release): 100,836 ratings (0.5-5) and 3,683 tags "
    "by 610 users on 9,742 movies",
    (f"{_GROUPLENS}/ml-latest-small.zip",),
    {"ml-latest-small/ratings.csv": "80da8b3393dae325bbba5a31f291a6ba55d8d4f4396de3c456f2c1635b1b70e8",
     "ml-latest-small/movies.csv": "c47b783f23eb304413307e1bb05335e427737da20ec8d3c0e96335567dd5f3dc",
     "ml-latest-small/tags.csv": "68eec00a0820c2faa8863a6df7032f13d5899a4462bce9a97213905297ff3d34"},
    kind="ml-latest", archive="ml-latest-small.zip",
    # the zip's sha256 as listed by TensorFlow Datasets (url_checksums/movielens.txt)
    archive_sha256="696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
    licence=_MOVIELENS_LICENCE, homepage="https://grouplens.org/datasets/movielens/latest/"))

register(DatasetSpec(
    "ml-1m", "MovieLens 1M: 1,000,209 ratings (1-5) by 6,040 users on 3,706 movies, 2000-03",
    (f"{_GROUPLENS}/ml-1m.zip",),
    # No copy in the reference folder, so these hashes are published ones, not re-computed here.
    # ratings.dat: the same sha256 in several independent projects (24,594,131 bytes).
    # movies.dat: the published sha256s disagree, so it is pinned only through the zip: a
    # download is fully verified; a local copy of movies.dat is used with a warning.
    {"ml-1m/ratings.dat": "506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f",
     "ml-1m/movies.dat": None},
    kind="ml-1m", archive="ml-1m.zip",
    # GroupLens publishes the md5 c4d9eecfca2ab87c1945afe126590906 (ml-1m.zip.md5); this sha256
    # is the one pinned by TensorFlow Model Garden and Keras-RS for the same zip.
    archive_sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    licence=_MOVIELENS_LICENCE, homepage="https://grouplens.org/datasets/movielens/1m/"))


def write_ml1m_sample(folder: Path, n_users: int = 60, n_movies: int = 600) -> None:
    """Write ``ml-1m-dryrun/ratings.dat`` and ``movies.dat`` into ``folder``: ML-1M's format
    (``::``-separated, latin-1 titles with a year, ``|``-joined genres, unix seconds, at least 20
    distinct movies per user) at toy size. Some users pass 200 ratings, so a 200-item window is
    cut as on the real file. Every value comes from sha256 of its position, so the bytes (and
    the pinned hashes) never depend on a library's random generator."""
    def draw(*key) -> float:  # uniform in [0, 1), the same on every machine and version
        return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big") / 2**64

    root = Path(folder) / "ml-1m-dryrun"
    root.mkdir(parents=True, exist_ok=True)
    genres = ("Action", "Animation", "Children's", "Comedy", "Drama", "Film-Noir", "Sci-Fi", "Thriller")
    with open(root / "movies.dat", "w", encoding="latin-1", newline="\n") as f:
        for m in range(1, n_movies + 1):
            name = "Am\xe9lie" if m == 7 else f"Movie {m}"  # one title outside ASCII, as in ML-1M
            kinds = sorted({genres[int(draw("g", m, j) * len(genres))] for j in range(1 + m % 3)})
            f.write(f"{m * 3}::{name} ({1930 + m % 70})::{'|'.join(kinds)}\n")  # ids with gaps
    with open(root / "ratings.dat", "w", encoding="latin-1", newline="\n") as f:
        for u in range(1, n_users + 1):
            seen, t = set(), 956_703_932 + u * 86_400  # ML-1M starts in April 2000
            for k in range(30 + (u * 37) % 400):
                movie = 1 + int(n_movies * draw("m", u, k) ** 1.5)  # a long tail of rare movies
                if movie in seen:
                    continue
                seen.add(movie)
                t += int(draw("t", u, k) * 600) if k % 5 else 0  # some ratings share a second
                f.write(f"{u}::{movie * 3}::{1 + int(draw('r', u, k) * 5)}::{t}\n")


register(DatasetSpec(
    "ml-1m-dryrun", "a toy file in ML-1M's format that a dry run (COURSE_DRY_RUN) reads as ml-1m",
    (), {"ml-1m-dryrun/ratings.dat": "5fa37382de05d6c42d597c6057f508fb5a2a7b42553163c85b0659a7fe084466",
         "ml-1m-dryrun/movies.dat": "21651ca72c1f8cbebf97450d7f0d98abaa80f404092faf34c56893f1a0679a23"},
    kind="ml-1m", make=write_ml1m_sample, licence="synthetic, written by helpers.datasets"))
DRY_RUN_STANDINS = {"ml-1m": "ml-1m-dryrun"}  # what a dry run reads instead of a large download

register(sequence_dataset(
    "beauty", "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/Beauty.txt",
    "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8", path="amazon/Beauty.txt",
    description="Amazon Beauty 5-core as preprocessed by S3-Rec: 22,363 users, 12,101 items, "
                "198,502 interactions in time order, no ratings, no item text",
    licence="Amazon review data (McAuley et al., SIGIR 2015; He & McAuley, WWW 2016), research use; "
            "preprocessed file from RUCAIBox/CIKM2020-S3Rec",
    homepage="https://github.com/RUCAIBox/CIKM2020-S3Rec"))

# Multi-behaviour logs (notebook 10), one spec per file, each pinned to a commit of the repository
# that ships it (the reference folder's SOURCE.txt files say where each came from).
_MBHT = "https://raw.githubusercontent.com/tripiggyo1/MB-IMN/b9921e0cc3c7090f62c57c053bd9d28db7c84bfc/dataset/retail_beh"
_DYHATR = "https://raw.githubusercontent.com/xuehansheng/DyHATR/6a5ea141bd40065c8900642af7f7758d90ebed9b/dataset/ecomm"
_HUP = ("https://raw.githubusercontent.com/guyulongcs/WSDM2020_HUP/421aff791e12e7a21d2a5a5d0dcd2dc5ca0fbd32/"
        "JD_Micro_Behaviors_Datasets_sample")
for _name, _url, _path, _sha, _what, _licence, _home in (
        ("mbht-retail-train", f"{_MBHT}/retail_beh.train.inter", "mbht_retail/retail_beh.train.inter",
         "783198a969e4b2b2286bd71e3fbcac3b425e003ddcd81b0799ee49e378fdd307",
         "RetailRocket view/cart/buy histories as preprocessed for MBHT (KDD 2022), training rows",
         "RetailRocket (Kaggle) terms, research and teaching use; cite RetailRocket and MBHT",
         "https://github.com/yuh-yang/MBHT-KDD22"),
        ("mbht-retail-test", f"{_MBHT}/retail_beh.test.inter", "mbht_retail/retail_beh.test.inter",
         "e92878cdf42394e647d30cf14a50d68158a04309e46d697d1d14ae184e2432aa",
         "the published test rows of MBHT's RetailRocket file (history, next purchase)",
         "RetailRocket (Kaggle) terms, research and teaching use; cite RetailRocket and MBHT",
         "https://github.com/yuh-yang/MBHT-KDD22"),
        ("dyhatr-ecomm", f"{_DYHATR}/ecomm_edge_train.txt", "dyhatr_ecomm/ecomm_edge_train.txt",
         "479af25632faa3299328758509bbb297bef3b1f2f1c09666b1a0ff60c63b8055",
         "Tianchi e-commerce sample (DyHATR): click/favourite/cart/buy events of 1,476 users over 10 days",
         "Tianchi terms (research use); cite DyHATR and Tianchi", "https://github.com/xuehansheng/DyHATR"),
        ("dyhatr-ecomm-items", f"{_DYHATR}/ecomm_item_feature.txt", "dyhatr_ecomm/ecomm_item_feature.txt",
         "7c63b4fa1d60c5ad26c5eb558a1c4a6024b2969b4d82842f3d931550648aa70b",
         "item category, brand and price of the Tianchi sample",
         "Tianchi terms (research use); cite DyHATR and Tianchi", "https://github.com/xuehansheng/DyHATR"),
        ("jd-micro-computers", f"{_HUP}/JD_Computers_sample", "jd_micro_behaviors_sample/JD_Computers_sample",
         "caad2046032bdb650f675ba7120c9ace1df286dca342031eb9c16acaf164e388",
         "1,000 JD computer sessions with 10 micro-behaviours (HUP, WSDM 2020)",
         "research use only (HUP README)", "https://github.com/guyulongcs/WSDM2020_HUP"),
        ("jd-micro-appliances", f"{_HUP}/JD_Applicances_sample", "jd_micro_behaviors_sample/JD_Applicances_sample",
         "699d8313d2ad4919ec8e39cb73d96d04cab5dcac654568a61343b797c8c7c99c",
         "1,000 JD appliance sessions with 10 micro-behaviours (HUP, WSDM 2020)",
         "research use only (HUP README)", "https://github.com/guyulongcs/WSDM2020_HUP")):
    register(DatasetSpec(_name, _what, (_url,), {f"multibehaviour/{_path}": _sha}, kind="multibehaviour",
                         licence=_licence, homepage=_home))


def get_spec(name: str) -> DatasetSpec:
    """The registered spec for ``name`` (in a dry run, its stand-in in :data:`DRY_RUN_STANDINS`);
    an :class:`UnknownDataset` error lists the known names."""
    if dry_run():
        name = DRY_RUN_STANDINS.get(name, name)
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDataset(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, expected: str | None) -> str:
    """Hash ``path``; raise :class:`ChecksumError` (file, expected, actual) if it differs."""
    actual = file_sha256(path)
    if expected is not None and actual != expected:
        raise ChecksumError(f"{path}: sha256 mismatch (expected {expected}, got {actual}); "
                            "the file is truncated, modified or a different release")
    return actual


def checkout_root() -> Path | None:
    """The course's source folder when ``helpers`` is imported from it (a clone or an editable
    install), else ``None``: a regular ``pip install`` (the Colab cell's) puts ``helpers`` in
    site-packages, where nothing of the course's may be written."""
    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.is_file() and 'name = "next-item-course"' in pyproject.read_text(encoding="utf-8"):
        return REPO_ROOT
    return None


def cache_dir() -> Path:
    """``$COURSE_CACHE_DIR``; else ``data/`` in the checkout; else the user cache folder.

    The user cache is ``pooch.os_cache`` (``~/.cache/next-item-course`` on Linux, which honours
    ``$XDG_CACHE_HOME``): downloads survive a change of working directory, never go to site-packages.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    root = checkout_root()
    return root / "data" if root is not None else Path(pooch.os_cache("next-item-course"))


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """A folder holding ``name``'s files, each verified by sha256 (see the module docstring)."""
    spec = get_spec(name)
    local = [Path(d) for d in (data_dir, os.environ.get(DATA_ENV)) if d]
    for root in local:
        if all((root / rel).is_file() for rel in spec.files):
            for rel, expected in spec.files.items():
                check_file(root / rel, expected)
                if expected is None:
                    warnings.warn(f"{root / rel} is used unverified: no published sha256", stacklevel=2)
            return root
        if not root.is_dir() or any((root / rel).is_file() for rel in spec.files):
            warnings.warn(f"{_what_is_missing(spec, root)}; looking in the cache instead", stacklevel=2)
    cache = cache_dir()
    _remove_stale_partials(cache)
    if _cache_is_valid(spec, cache):
        return cache
    return _download(spec, cache, local)


def _what_is_missing(spec: DatasetSpec, root: Path) -> str:
    """Why ``root`` cannot serve ``spec``: it does not exist, or which files it lacks."""
    if not root.is_dir():
        where = f" ({DATA_ENV})" if str(root) == os.environ.get(DATA_ENV) else ""
        return f"the data folder {root}{where} does not exist"
    missing = [rel for rel in spec.files if not (root / rel).is_file()]
    return f"{root} lacks {', '.join(missing)} of {spec.name!r}"


_PARTIAL = ".partial-"  # prefix of a download's temporary folder: .partial-<pid>-<name>-<random>
STALE_PARTIAL_SECONDS = 24 * 3600  # a partial folder this old is removed whoever made it


def _remove_stale_partials(cache: Path) -> None:
    """Delete download folders left by a process that was killed (its pid is gone on this
    machine) or that are older than :data:`STALE_PARTIAL_SECONDS`."""
    if not cache.is_dir():
        return
    for folder in cache.glob(f"{_PARTIAL}*"):
        pid = folder.name[len(_PARTIAL):].split("-", 1)[0]
        try:
            stale = time.time() - folder.stat().st_mtime > STALE_PARTIAL_SECONDS
        except FileNotFoundError:  # its owner finished meanwhile
            continue
        if not stale and pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                stale = True
            except PermissionError:  # alive, another user's
                pass
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


def _manifest(spec: DatasetSpec, cache: Path) -> Path:
    """Where a download records the sha256 of every file it put into the cache."""
    return cache / f".{spec.name}.sha256"


def _cache_is_valid(spec: DatasetSpec, cache: Path) -> bool:
    if not all((cache / rel).is_file() for rel in spec.files):
        return False
    recorded = {}
    if _manifest(spec, cache).is_file():
        for line in _manifest(spec, cache).read_text().splitlines():
            digest, _, rel = line.partition("  ")
            recorded[rel] = digest
    for rel, expected in spec.files.items():
        expected = expected or recorded.get(rel)
        if expected is None or file_sha256(cache / rel) != expected:
            warnings.warn(f"cached {cache / rel} is unverified or corrupt: downloading again",
                          stacklevel=3)
            return False
    return True


def download_file(url: str, dest: Path, known_hash: str | None) -> None:
    """Download ``url`` to ``dest`` with pooch, which checks ``known_hash`` (sha256) when given."""
    pooch.retrieve(url, known_hash=f"sha256:{known_hash}" if known_hash else None,
                   fname=dest.name, path=dest.parent, progressbar=True)


def _download(spec: DatasetSpec, cache: Path, local: list[Path]) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL}{os.getpid()}-{spec.name}-", dir=cache))
    try:
        extracted = _download_and_extract(spec, tmp, local)
        missing = [rel for rel in spec.files if not (extracted / rel).is_file()]
        if missing:
            raise DatasetError(f"the download of {spec.name!r} lacks {', '.join(missing)}")
        digests = {rel: check_file(extracted / rel, expected) for rel, expected in spec.files.items()}
        for src in sorted(p for p in extracted.rglob("*") if p.is_file()):
            dst = cache / src.relative_to(extracted)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        manifest = tmp / "manifest"
        manifest.write_text("".join(f"{digest}  {rel}\n" for rel, digest in digests.items()))
        os.replace(manifest, _manifest(spec, cache))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def _download_and_extract(spec: DatasetSpec, tmp: Path, local: list[Path]) -> Path:
    """Download into ``tmp``; return the folder that holds the files under their relative paths."""
    if spec.make is not None:  # written here, then checked and moved like a download
        spec.make(tmp / "files")
        return tmp / "files"
    if spec.archive is None:
        (rel,) = spec.files
        target, known_hash = tmp / "files" / rel, spec.files[rel]
    else:
        target, known_hash = tmp / spec.archive, spec.archive_sha256
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in spec.urls:
        try:
            download_file(url, target, known_hash)
            break
        except (requests.RequestException, OSError) as e:
            errors.append(f"{url}: {type(e).__name__}: {e}")
            target.unlink(missing_ok=True)
        except ValueError as e:
            if "hash" not in str(e):
                raise
            raise ChecksumError(f"download of {spec.name} from {url} failed its checksum: {e}") from e
    else:
        looked = f" ({'; '.join(_what_is_missing(spec, root) for root in local)})" if local else ""
        raise DatasetUnavailable(
            f"dataset {spec.name!r} is not available offline{looked} and could not be downloaded "
            f"from {spec.url}. Download it by hand and set {DATA_ENV} to the folder holding "
            f"{', '.join(spec.files)}. Errors: {'; '.join(errors)}")
    check_file(target, known_hash)
    if spec.archive is None:
        return tmp / "files"
    return _safe_extract(target, tmp / "files")


def _safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a zip into ``dest``, refusing the whole archive if any member escapes ``dest``."""
    dest = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                if not (dest / member).resolve().is_relative_to(dest):
                    raise UnsafeArchive(f"{archive.name}: member {member!r} would be written "
                                        f"outside {dest}; refusing to extract")
            z.extractall(dest)
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{archive.name} is not a valid zip file ({e})") from e
    return dest
