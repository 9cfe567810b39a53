import importlib.util
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import course, datasets

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

spec = importlib.util.spec_from_file_location("clean_notebooks", ROOT / "tools" / "clean_notebooks.py")
clean_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(clean_notebooks)


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def regular_install(tmp_path, monkeypatch):
    """``helpers`` as a regular pip install sees it: no checkout around it, no env overrides."""
    monkeypatch.setattr(datasets, "REPO_ROOT", tmp_path / "site-packages")
    for var in ("COURSE_RESULTS_DIR", "COURSE_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "content"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_setup_seeds_and_reports(results, capsys):
    s = course.setup("00_test", seed=3, profile="ci")
    a = (torch.rand(2), np.random.rand())
    course.setup("00_test", seed=3, profile="ci")
    b = (torch.rand(2), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert s.profile.name == "ci" and s.device.type in {"cpu", "cuda"}
    assert "profile ci" in capsys.readouterr().out


def test_setup_says_what_the_profile_trains_how_long_and_how_to_change_it(results, capsys, monkeypatch):
    monkeypatch.setattr(course, "check_device", lambda profile, device: None)  # gpu's summary, on a CPU
    monkeypatch.setattr(course.budget, "measure_flops", lambda profile, device: 15e12)
    course.setup("04_bert4rec", profile="gpu")
    out = capsys.readouterr().out
    assert "ml-1m" in out and "200 epochs" in out and "window 200" in out and "3000 steps" in out
    assert "min for profile gpu on this CPU, estimated" in out  # no reference run of gpu: FLOPs
    assert "%env COURSE_PROFILE=cpu" in out and "%env COURSE_PROFILE=ci" in out
    assert "%env COURSE_PROFILE=gpu" not in out


def test_setup_reports_the_last_measured_run_time(results, capsys):
    session = course.setup("00_test", profile="ci")
    session.started -= 90  # as if the notebook had run for a minute and a half
    course.record("a", 1.0)
    course.setup("00_test", profile="ci")
    assert "the last ci run of this notebook here took 1.5 min" in capsys.readouterr().out
    course.setup("00_test", profile="cpu")
    assert course.ROUGH_TIME["cpu"] in capsys.readouterr().out  # cpu has not run yet


def test_setup_sets_no_global_grid(results):
    import matplotlib.pyplot as plt

    with plt.rc_context():
        plt.rcParams["axes.grid"] = False
        course.setup("00_test", profile="ci")
        assert plt.rcParams["axes.grid"] is False  # a global grid crosses confusion matrices


def test_record_writes_json_per_profile_and_notebook(results):
    course.setup("00_test", profile="ci")
    assert course.record("pop/ndcg@10", 0.25) == 0.25
    course.record("pop/hr@10", np.float32(0.5))
    stored = json.loads((results / "ci" / "00_test.json").read_text())
    assert stored["profile"] == "ci" and stored["values"] == {"pop/hr@10": 0.5, "pop/ndcg@10": 0.25}
    assert stored["seconds"] >= 0
    assert course.load_results("00_test") == stored
    assert course.load_results("00_test", profile="ci") == stored
    assert not list(results.rglob("*.tmp"))


def test_each_profile_keeps_its_results(results):
    course.setup("00_test", profile="cpu")
    course.record("a", 1.0)
    course.setup("00_test", profile="ci")  # a quick test run must not replace the cpu numbers
    course.record("a", 2.0)
    assert course.load_results("00_test")["values"] == {"a": 2.0}
    assert course.load_results("00_test", profile="cpu")["values"] == {"a": 1.0}
    assert sorted(p.relative_to(results).as_posix() for p in results.rglob("*.json")) == [
        "ci/00_test.json", "cpu/00_test.json"]


def test_missing_results_say_which_notebook_and_profile_to_run(results):
    course.setup("00_test", profile="cpu")
    course.record("a", 1.0)
    with pytest.raises(FileNotFoundError, match=r"notebooks/00_test\.ipynb with COURSE_PROFILE=gpu.*for: cpu"):
        course.load_results("00_test", profile="gpu")


def test_truncated_results_name_the_file(results):
    (results / "ci").mkdir()
    (results / "ci" / "00_test.json").write_text('{"profile": "ci", "val')
    with pytest.raises(ValueError, match=r"00_test\.json is not valid JSON"):
        course.load_results("00_test", profile="ci")


def test_files_stay_in_the_checkout_when_run_from_it(monkeypatch):
    for var in ("COURSE_RESULTS_DIR", "COURSE_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert datasets.checkout_root() == ROOT
    assert course.results_dir() == ROOT / "results" and datasets.cache_dir() == ROOT / "data"


def test_a_regular_install_writes_to_the_working_dir_and_user_cache(regular_install, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(regular_install / "cache"))
    assert datasets.checkout_root() is None
    assert course.results_dir() == regular_install / "results"
    assert course.logs_dir() == regular_install / "runs"
    assert datasets.cache_dir() == regular_install / "cache" / "next-item-course"
    assert "site-packages" not in str(course.results_path("01_data_cleaning", "ci"))
    monkeypatch.setenv("COURSE_CACHE_DIR", str(regular_install / "mine"))
    assert datasets.cache_dir() == regular_install / "mine"


def test_tensorboard_hook_logs_each_epoch(results, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    course.setup("00_test", profile="ci")
    hook = course.tensorboard("sasrec", log_dir=tmp_path / "runs")
    for epoch, loss in [(1, 2.0), (2, 1.5)]:
        hook(torch.nn.Linear(1, 1), {"epoch": epoch, "loss": loss, "valid_ndcg@10": 0.1 * epoch})
    events = EventAccumulator(hook.log_dir)
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 2.0), (2, 1.5)]
    assert "valid_ndcg@10" in events.Tags()["scalars"]


# The Colab cell: the first code cell of every notebook, written from pyproject.toml.

def test_the_install_source_is_pinned_in_pyproject():
    source = clean_notebooks.install_source()
    assert re.fullmatch(r"git\+https://github\.com/[\w.-]+/[\w.-]+@[\w./-]+", source)
    assert not source.endswith(("@main", "@master")), "pin a tag or a commit"
    ref = source.rsplit("@", 1)[1]
    version = clean_notebooks.tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert re.fullmatch(r"[0-9a-f]{7,40}", ref) or ref == f"v{version}", \
        f"the Colab cell installs {ref} but this is version {version}: pin v{version} (or a commit)"
    assert clean_notebooks.colab_url("01_data_cleaning", "git+https://github.com/me/fork@abc123") == (
        "https://colab.research.google.com/github/me/fork/blob/abc123/notebooks/01_data_cleaning.ipynb")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_the_setup_cell_and_has_a_colab_badge(path):
    nb = json.loads(path.read_text())
    first = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert first == clean_notebooks.setup_cell(path.stem), "run tools/clean_notebooks.py on it"
    assert clean_notebooks.colab_url(path.stem) in (ROOT / "README.md").read_text(), \
        "add its 'Open in Colab' badge to the README"


def run_setup_cell(monkeypatch, returncode: int, notebook: str = "01_data_cleaning") -> list[list[str]]:
    """Execute the setup cell with ``google.colab`` faked and pip replaced; return pip's commands."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: Repository not found.")

    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    exec(compile(clean_notebooks.setup_cell(notebook), "setup cell", "exec"), {})
    return calls


def test_setup_cell_on_colab_installs_the_pinned_version_and_writes_to_the_working_dir(
        regular_install, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PROFILE", "ci")
    calls = run_setup_cell(monkeypatch, returncode=0)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", clean_notebooks.install_source()]]
    out = capsys.readouterr().out
    assert "notebook 01_data_cleaning | profile ci" in out and "another profile" in out
    course.record("x", 1.0)
    assert (regular_install / "results" / "ci" / "01_data_cleaning.json").is_file()


def test_setup_cell_stops_with_a_clear_message_when_the_install_fails(monkeypatch):
    with pytest.raises(RuntimeError, match=r"(?s)could not install the course from git\+https://.*"
                                           r"Repository not found.*pyproject\.toml.*rerun this cell"):
        run_setup_cell(monkeypatch, returncode=1)


def test_setup_cell_installs_nothing_outside_colab(monkeypatch, results):
    monkeypatch.setenv("COURSE_PROFILE", "ci")
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran outside Colab"))
    exec(compile(clean_notebooks.setup_cell("01_data_cleaning"), "setup cell", "exec"), {})


def test_setup_cell_is_plain_python():
    cell = clean_notebooks.setup_cell("01_data_cleaning")
    assert not re.search(r"^\s*[%!]", cell, re.M), "no IPython magics: the tests execute the cell"
    compile(cell, "setup cell", "exec")


# Offline formulas in the HTML pages (tools/offline_mathjax.py, used by `make course`).

spec = importlib.util.spec_from_file_location("offline_mathjax", ROOT / "tools" / "offline_mathjax.py")
offline_mathjax = importlib.util.module_from_spec(spec)
spec.loader.exec_module(offline_mathjax)


def test_mathjax_url_is_local_when_the_files_are_there(tmp_path, capsys):
    (tmp_path / "mathjax").mkdir()
    (tmp_path / "mathjax" / "MathJax.js").write_text("")
    offline_mathjax.main([str(tmp_path / "mathjax")])
    assert capsys.readouterr().out.strip() == "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"


def test_mathjax_falls_back_to_the_cdn_loudly_when_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(offline_mathjax, "from_installed", lambda dest: False)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(cmd, 1, "", "no network"))
    offline_mathjax.main([str(tmp_path / "mathjax")])
    out, err = capsys.readouterr()
    assert out.strip() == offline_mathjax.CDN and "CDN" in err and "no network" in err


def test_mathjax_wheel_is_checked_before_use(tmp_path):
    import zipfile

    wheel = tmp_path / "jupyter_server_mathjax-0.2.6-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("jupyter_server_mathjax/static/MathJax.js", "tampered")
    with pytest.raises(ValueError, match="sha256"):
        offline_mathjax.extract_static(wheel, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# Progress bars: on by default in notebooks, off under TQDM_DISABLE (make test, CI).

def test_training_loops_show_progress_by_default():
    import inspect

    from helpers import finetune, gan, train

    for fn in (train.train, finetune.fit, gan.adversarial_train):
        assert inspect.signature(fn).parameters["progress"].default is True, fn.__qualname__


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_leave_progress_bars_on(path):
    cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert not [c for c in cells if "progress=False" in c], "TQDM_DISABLE turns bars off in CI; keep them on here"


# Data tests run against the registry's own sha256 (tests/conftest.py), never silently skipped.

def test_reference_data_is_checked_against_the_registry(tmp_path):
    import conftest

    assert "set COURSE_DATA_DIR" in conftest.shared_data_problem(tmp_path / "nowhere")
    (tmp_path / "ml-100k").mkdir()
    for name in ("u.data", "u.item", "u.genre"):
        (tmp_path / "ml-100k" / name).write_bytes(b"not movielens\n")
    assert conftest.shared_data_problem(tmp_path / "ml-100k", ("ml-100k",)).endswith("is missing (ml-100k)")
    problem = conftest.shared_data_problem(tmp_path, ("ml-100k",))
    assert "u.data has sha256" in problem and "the registry expects 06416e597f82" in problem


def test_the_reference_data_in_use_passes_the_check():
    import conftest

    root = conftest.shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"{conftest.SKIP_PREFIX}: {root} does not exist (set COURSE_DATA_DIR)")
    assert conftest.shared_data_problem(root) is None


# The environment: make targets (dry runs) and the constraints file CI installs with.

def make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed: the Makefile's recipes cannot be checked")
    return subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def test_make_lab_allows_root_only_as_root():
    assert "jupyter lab --allow-root notebooks" in make_dry_run("lab", "USER_ID=0")
    assert re.search(r"jupyter lab\s+notebooks", make_dry_run("lab", "USER_ID=1000"))


def test_make_setup_installs_with_the_constraints_and_an_optional_torch_index(tmp_path):
    recipe = make_dry_run("setup", f"VENV={tmp_path / 'venv'}", "TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert '"torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu' in recipe
    assert '-m pip install --quiet -c constraints.txt -e ".[test]"' in recipe
    assert "--index-url" not in make_dry_run("setup", f"VENV={tmp_path / 'venv'}")


def test_constraints_pin_every_dependency_within_the_ranges_of_pyproject():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert "+" not in version, f"{line}: a local label would refuse the other builds"
            pins[canonicalize_name(name)] = version
    assert "next-item-course" not in pins
    project = clean_notebooks.tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    for requirement in map(Requirement, requirements):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in constraints.txt: run `make freeze`"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"


def test_make_colab_check_uses_no_constraints_keeps_torch_and_installs_like_colab(tmp_path):
    recipe = make_dry_run("colab-check", f"COLAB_VENV={tmp_path / 'venv'}")
    install = [line for line in recipe.splitlines() if "--upgrade-strategy eager" in line]
    assert install and "constraints" not in recipe and " -e " not in install[0]  # as Colab's cell: no -c, not editable
    assert '".[test]" "torch==2.13.0"' in install[0]  # a newer torch would be a multi-GB CUDA build
    assert "COURSE_PROFILE=ci" in recipe and "01_data_cleaning.ipynb" in recipe and "04_bert4rec" not in recipe


def test_make_test_runs_both_editions_the_ci_profile_and_the_gpu_dry_run():
    recipe = make_dry_run("test", "STAMP=Makefile")  # the stamp exists: no setup in the recipe
    assert "COURSE_PROFILE=ci" in recipe and "--nbval-lax notebooks" in recipe  # the solutions
    assert "-m pytest -q tests" in recipe  # the unit tests, before the ci notebooks, beside the dry run
    assert "make_student.py --out build/student" in recipe  # the learner's edition, then its dry run
    assert "COURSE_PROFILE=gpu COURSE_DRY_RUN=1" in recipe and "--nbval-lax build/student" in recipe
