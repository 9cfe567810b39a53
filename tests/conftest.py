import functools
import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors gain nothing from threads, and spinning threads crawl on a busy CI box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Tests marked `shared_data` read the reference data sets from $COURSE_DATA_DIR (else ../shared/data
# beside the repository). They run only when every file is there with the sha256 that the registry
# (helpers.datasets) expects; otherwise they are skipped with the reason, and the run ends with a
# banner saying how many were skipped and why, so a missing or wrong folder is never silent.
SHARED_DATA_SETS = ("ml-100k", "ml-latest-small", "beauty")
SKIP_PREFIX = "reference data unusable"


def shared_data_dir() -> Path:
    from helpers import datasets

    return Path(os.environ.get("COURSE_DATA_DIR") or datasets.REPO_ROOT.parent / "shared" / "data")


def shared_data_problem(root: Path, names: tuple[str, ...] = SHARED_DATA_SETS) -> str | None:
    """Why ``root`` cannot serve as the reference data (first problem found), or None."""
    from helpers import datasets

    if not root.is_dir():
        return (f"{root} does not exist: set COURSE_DATA_DIR to a folder laid out like "
                "ml-100k/u.data, ml-latest-small/ratings.csv, amazon/Beauty.txt")
    for name in names:
        for rel, expected in datasets.get_spec(name).files.items():
            path = root / rel
            if not path.is_file():
                return f"{path} is missing ({name})"
            if expected is not None and (actual := datasets.file_sha256(path)) != expected:
                return f"{path} has sha256 {actual[:12]}..., the registry expects {expected[:12]}..."
    return None


@functools.cache
def _shared_problem() -> str | None:
    return shared_data_problem(shared_data_dir())


def pytest_configure(config):
    config.addinivalue_line("markers", "shared_data: reads the reference data sets (COURSE_DATA_DIR), "
                                       "verified against the registry's sha256")


def pytest_runtest_setup(item):
    if item.get_closest_marker("shared_data") is not None and (problem := _shared_problem()):
        pytest.skip(f"{SKIP_PREFIX}: {problem}")


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if SKIP_PREFIX in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} data tests SKIPPED: {_shared_problem()}", red=True, bold=True)
