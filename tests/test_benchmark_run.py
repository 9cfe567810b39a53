"""benchmarks/run.py: the results table through the registry, on a user's own sequence file."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import registry, results_table, split
from helpers.profile import get_profile

spec = importlib.util.spec_from_file_location("benchmark_run", Path(__file__).resolve().parents[1] / "benchmarks" / "run.py")
benchmark_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark_run)


def write_log(path: Path, bad_line: str | None = None, repeat: bool = False) -> Path:
    """40 users, 8 items each from 12, S3-Rec format; optionally one bad line third, or every
    user's last item a repeat of their first."""
    rng = np.random.default_rng(0)
    seqs = [[u, *rng.choice(np.arange(1, 13), 8, replace=False)] for u in range(1, 41)]
    lines = [" ".join(map(str, seq + [seq[1]] * repeat)) for seq in seqs]
    if bad_line is not None:
        lines.insert(2, bad_line)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sequence_file_runs_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_MODEL_CACHE", str(tmp_path / "models"))
    log = write_log(tmp_path / "my_log.txt")
    benchmark_run.main(["--sequence-file", str(log), "--name", "mine", "--models", "pop", "markov",
                        "--profile", "ci", "--json", str(tmp_path / "table.json")])
    out = capsys.readouterr().out
    assert "| mine " in out and "| pop " in out and "| markov " in out
    profile = get_profile("ci")
    version = results_table.data_version(registry.load_split("mine", profile, data_dir=tmp_path,
                                                             max_malformed=0.0))
    table = results_table.read_table(tmp_path / "table.json", "ci", {"mine": version})
    assert sorted(table["model"]) == ["markov", "pop"] and table["seen excluded"].all()
    with pytest.raises(results_table.StaleResults):
        results_table.read_table(tmp_path / "table.json", "ci", {"mine": "0" * 16})
    with pytest.raises(results_table.StaleResults):
        results_table.read_table(tmp_path / "table.json", "cpu", {"mine": version})


def test_repeated_targets_keep_seen_items(tmp_path, monkeypatch, capsys):
    """Every test target is in its user's history: excluding seen items would flatter the models."""
    monkeypatch.setenv("COURSE_MODEL_CACHE", str(tmp_path / "models"))
    log = write_log(tmp_path / "again.txt", repeat=True)
    benchmark_run.main(["--sequence-file", str(log), "--name", "again", "--models", "pop",
                        "--profile", "ci", "--json", str(tmp_path / "table.json")])
    assert "kept on again" in capsys.readouterr().out
    stored = json.loads((tmp_path / "table.json").read_text())
    assert [row["seen excluded"] for row in stored["rows"]] == [False]


def test_a_malformed_line_is_named(tmp_path, capsys):
    log = write_log(tmp_path / "broken.txt", bad_line="41 5 x 7")
    with pytest.raises(SystemExit):
        benchmark_run.main(["--sequence-file", str(log), "--models", "pop", "--profile", "ci"])
    assert "line 3" in capsys.readouterr().err


def test_a_course_data_set_name_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark_run.main(["--sequence-file", str(write_log(tmp_path / "x.txt")), "--name", "beauty"])
    assert "choose another name" in capsys.readouterr().err


def test_the_seed_reaches_training_and_not_the_split(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_MODEL_CACHE", str(tmp_path / "models"))
    log = write_log(tmp_path / "seeded.txt")
    fitted = []
    real_fit = registry.fit

    def spy(name, s, profile, **kw):
        fitted.append((kw.get("seed"), split.fingerprint(s)))
        return real_fit(name, s, profile, **kw)

    monkeypatch.setattr(registry, "fit", spy)
    for seed in (0, 3):
        benchmark_run.main(["--sequence-file", str(log), "--name", f"seeded{seed}", "--models", "pop",
                            "--profile", "ci", "--seed", str(seed)])
    assert "seed 3;" in capsys.readouterr().out
    assert [seed for seed, _ in fitted] == [0, 3] and fitted[0][1] == fitted[1][1]  # same split, two seeds


def test_seeds_report_the_spread_of_each_model_across_training_seeds(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_MODEL_CACHE", str(tmp_path / "models"))
    log = write_log(tmp_path / "seeded.txt")
    benchmark_run.main(["--sequence-file", str(log), "--name", "seeded", "--models", "pop", "bigram",
                        "--profile", "ci", "--seeds", "0", "1"])
    out = capsys.readouterr().out
    assert out.count("| seeded ") == 4 and "across seeds [0, 1]" in out  # two rows per seed, then the spread
    spread = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| seeded/")}
    assert set(spread) == {"seeded/pop", "seeded/bigram"}
    pop_range = float(spread["seeded/pop"].split("|")[7])
    assert pop_range == 0.0  # a count model does not depend on the seed; bigram's weights do
