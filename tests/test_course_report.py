"""tools/course_report.py: timings, executed copies, HTML pages and a landing page with results."""

import importlib.util
import json
from pathlib import Path

import nbformat

spec = importlib.util.spec_from_file_location(
    "course_report", Path(__file__).resolve().parents[1] / "tools" / "course_report.py")
course_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(course_report)


def write_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_times_every_notebook_and_links_pages_and_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COURSE_PROFILE", "ci")
    good = write_notebook(tmp_path / "01_good.ipynb", "from helpers import course\n"
                          "course.setup('01_good')\ncourse.record('answer/ndcg@10', 0.25)")
    bad = write_notebook(tmp_path / "02_bad.ipynb", "raise ValueError('on purpose')")
    status = course_report.main([str(good), str(bad), "--build", str(tmp_path / "build"), "--timeout", "60"])
    assert status == 1  # one notebook failed; the other still ran
    out = capsys.readouterr().out
    assert "01_good: " in out and "02_bad: " in out and "FAILED" in out
    timings = json.loads((tmp_path / "build" / "timings.json").read_text())
    assert timings["profile"] == "ci"
    assert timings["notebooks"]["01_good"]["ok"] and not timings["notebooks"]["02_bad"]["ok"]
    assert timings["notebooks"]["01_good"]["seconds"] > 0
    assert (tmp_path / "build" / "notebooks" / "01_good.ipynb").is_file()
    index = (tmp_path / "build" / "html" / "index.html").read_text()
    assert "href='01_good.html'" in index and "href='02_bad.html'" in index
    assert "answer/ndcg@10" in index and "0.25" in index and "on purpose" in index
    assert (tmp_path / "build" / "html" / "01_good.html").is_file()


def test_figures_reach_the_pages_even_when_the_caller_set_a_headless_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "agg")  # as a CI job or a script often exports
    nb = write_notebook(tmp_path / "01_plot.ipynb", "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
    (tmp_path / "out").mkdir()
    seconds, error = course_report.execute(nb, tmp_path / "out", timeout=60)
    assert not error
    outputs = nbformat.read(tmp_path / "out" / "01_plot.ipynb", as_version=4).cells[0].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_reference_run_is_stored_per_profile_and_printed_by_setup(tmp_path, monkeypatch, capsys):
    from helpers import course

    reference = tmp_path / "reference_times.json"
    reference.write_text(json.dumps({"runs": {"cpu": {"01_good": {"seconds": 300, "commit": "abc", "machine": "m"},
                                                      "09_other": {"seconds": 60, "commit": "abc", "machine": "m"}}}}))
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COURSE_PROFILE", "ci")
    good = write_notebook(tmp_path / "01_good.ipynb", "print('hello')")
    assert course_report.main([str(good), "--build", str(tmp_path / "build"), "--reference", str(reference),
                               "--machine", "a quiet test machine"]) == 0
    runs = json.loads(reference.read_text())["runs"]
    assert runs["cpu"]["01_good"]["seconds"] == 300  # the other profile's run is kept
    assert runs["ci"]["01_good"]["machine"] == "a quiet test machine" and runs["ci"]["01_good"]["seconds"] > 0
    monkeypatch.setattr(course, "REFERENCE_TIMES", reference)
    assert set(course.reference_minutes("01_good")) == {"ci", "cpu"}
    capsys.readouterr()
    course.setup("01_good", profile="cpu")
    out = capsys.readouterr().out
    assert "about 5.0 min (reference run: m, commit abc); other profiles, min: ci " in out
    course.setup("03_never_run", profile="cpu")
    assert course.ROUGH_TIME["cpu"] in capsys.readouterr().out


def test_the_shipped_reference_times_cover_every_notebook_on_cpu():
    from helpers import course

    notebooks = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [nb for nb in notebooks if "cpu" not in course.reference_minutes(nb)]
    assert not missing, f"no cpu reference time for {missing}: run make course with --reference"
