"""The checked exercises, both ways: every notebook's solution passes its check, and plausible
wrong answers fail with the hint meant for them. Then the two editions: the learner's edition
(tools/make_student.py) has no solution left, and its exercise cells run to the end, each check
reporting "not done yet".

The exercise cells of a notebook (tagged ``exercise``) import what they need, so they are run
here on their own, in-process: the rest of each notebook is the same in both editions and is
executed by nbval.
"""

import ast
import contextlib
import importlib.util
import io
import json
import re
from pathlib import Path

import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import exercises

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHECKED = [p for p in NOTEBOOKS if p.name[:2] in exercises.NOTEBOOKS]  # the notebooks with checked exercises
CHECK = re.compile(r'exercises\.check\("([^"]+)", (\w+)\)')

spec = importlib.util.spec_from_file_location("make_student", ROOT / "tools" / "make_student.py")
make_student = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_student)


def exercise_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"]
            if c["cell_type"] == "code" and "exercise" in c["metadata"].get("tags", [])]


def run_cells(sources: list[str]) -> tuple[dict, str]:
    """Execute code cells in one fresh namespace; returns it and what they printed."""
    namespace, out = {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        for source in sources:
            exec(compile(source, "<exercise cell>", "exec"), namespace)
    return namespace, out.getvalue()


def solutions() -> dict:
    """{key: the notebook's solution function}, from every notebook's exercise cells (no checks run)."""
    found = {}
    for path in CHECKED:
        cells = exercise_cells(json.loads(path.read_text()))
        namespace, _ = run_cells([c for c in cells if "exercises.check(" not in c and "exercises.progress(" not in c])
        for cell in cells:
            for key, name in CHECK.findall(cell):
                found[key] = namespace[name]
    return found


SOLUTIONS = solutions()
KEYS = [e.key for nb in exercises.NOTEBOOKS for e in exercises.exercises_of(nb)]


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.name)
def test_every_notebook_checks_at_least_three_exercises_and_only_registered_ones(path):
    keys = [k for c in exercise_cells(json.loads(path.read_text())) for k, _ in CHECK.findall(c)]
    assert len(keys) >= 3 and len(set(keys)) == len(keys)
    assert keys == [e.key for e in exercises.exercises_of(path.name[:2])]


def test_there_are_27_or_more_exercises_each_with_a_solution():
    assert len(KEYS) >= 27 and set(KEYS) == set(SOLUTIONS)


@pytest.mark.parametrize("key", KEYS)
def test_the_notebooks_solution_passes_in_well_under_a_second(key):
    exercises.verdict(key, SOLUTIONS[key])  # a first call may import modules
    v = exercises.verdict(key, SOLUTIONS[key])
    assert v.status == exercises.PASSED, v.message
    assert v.seconds < 0.5


# ---------------------------------------------------------------- wrong answers, each with the hint it must get
def _stable_by(log, *columns):
    return {int(u): g.item_id.tolist() for u, g in log.sort_values(list(columns), kind="stable").groupby("user_id")}


def _one_pass_core(log, k):
    u = log.groupby("user_id")["user_id"].transform("size")
    i = log.groupby("item_id")["item_id"].transform("size")
    return log[(u >= k) & (i >= k)]


def _ndcg_first_among_ties(scores, target):
    rank = 1 + (scores > scores[target]).sum()
    return 1 / np.log2(rank + 1) if rank <= 10 else 0.0


def _gru(x, h, cell, swap_z=False, reset_before=False):
    gi, gh = x @ cell.weight_ih.T + cell.bias_ih, h @ cell.weight_hh.T + cell.bias_hh
    (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3, 1), gh.chunk(3, 1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    W_hn, b_hn = cell.weight_hh.chunk(3, 0)[2], cell.bias_hh.chunk(3, 0)[2]
    n = torch.tanh(i_n + ((r * h) @ W_hn.T + b_hn if reset_before else r * h_n))
    return z * n + (1 - z) * h if swap_z else (1 - z) * n + z * h


def _attention(x, wq, wk, wv, scale=True, causal=True):
    q, k, v = x @ wq, x @ wk, x @ wv
    s = q @ k.transpose(1, 2) / (q.shape[-1] ** 0.5 if scale else 1)
    if causal:
        s = s.masked_fill(~torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril(), -torch.inf)
    return s.softmax(-1) @ v


def _all_masked(items, chosen, n_items, g):
    return torch.where(chosen, torch.full_like(items, n_items + 1), items)


def _random_any_id(items, chosen, n_items, g):
    u = torch.rand(items.shape, generator=g)
    random_ids = torch.randint(0, n_items + 2, items.shape, generator=g)  # PAD and MASK included
    out = torch.where(chosen & (u < 0.8), torch.full_like(items, n_items + 1), items)
    return torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, out)


def _mask_everywhere(items, chosen, n_items, g):  # PAD positions too
    return _all_masked(items, torch.ones_like(chosen), n_items, g)


def _boot(a, b, n_resamples=2000, seed=0, paired=True, level=95):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(a), (n_resamples, len(a)))
    other = rows if paired else rng.integers(0, len(a), (n_resamples, len(a)))
    means = a[rows].mean(1) - b[other].mean(1)
    return tuple(np.percentile(means, [50 - level / 2, 50 + level / 2]))


def _holm_no_max(p):
    p = np.asarray(p, dtype=float)
    order, out = np.argsort(p), np.empty(len(p))
    out[order] = np.minimum(p[order] * (len(p) - np.arange(len(p))), 1)
    return out


def _tau_share(x, y):
    i, j = np.triu_indices(len(x), 1)
    return float(((x[i] - x[j]) * (y[i] - y[j]) > 0).mean())


def _occlusion(log_probs, history, item, sign=1, pad=False):
    full = log_probs(np.asarray(history))[item]
    out = []
    for t in range(len(history)):
        variant = np.where(np.arange(len(history)) == t, 0, history) if pad else np.delete(history, t)
        out.append(sign * (full - log_probs(variant)[item]))
    return np.array(out)


def _quantize(W, per_tensor=False, truncate=False, levels=127):
    m = W.abs().amax() if per_tensor else W.abs().amax(dim=1, keepdim=True)
    scale = m.clamp_min(1e-12) / levels
    q = W / scale
    return (q.to(torch.int8) if truncate else torch.round(q).to(torch.int8)), scale


def _top(scores, history, k, exclude_seen=True, pad=True):
    s = np.asarray(scores, dtype=float).copy()
    s[0] = -np.inf if pad else s[0]
    if exclude_seen:
        s[list(history)] = -np.inf
    return np.argsort(-s, kind="stable")[:k]


def _dp(per_sample, C, sigma, g, clip_mean=False, normalise=False, noise_c=True):
    B = len(per_sample)
    if clip_mean:
        mean = per_sample.mean(0)
        total = mean * min(1.0, C / mean.norm().item()) * B
    else:
        norms = per_sample.norm(dim=1, keepdim=True).clamp_min(1e-12)
        factor = C / norms if normalise else (C / norms).clamp(max=1)
        total = (per_sample * factor).sum(0)
    return (total + torch.randn(per_sample.shape[1], generator=g) * sigma * (C if noise_c else 1)) / B


def _cos(table, item):
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    return unit @ unit[item]


def _auc(m, n, tie=0.5, member_lower=True):
    M, N = m[:, None], n[None, :]
    wins = (M < N) if member_lower else (M > N)
    return float((wins.sum() + tie * (M == N).sum()) / (M.size * N.size))


WRONG = {
    "01.user_sequences": [(lambda log: _stable_by(log, "timestamp", "item_id"), "never the item id"),
                          (lambda log: {u: s[::-1] for u, s in _stable_by(log, "timestamp").items()}, "oldest first")],
    "01.leave_one_out": [(lambda s: (s[:-2], (s[:-2], s[-2]), (s[:-2], s[-1])) if len(s) > 2 else (s, None, None),
                          "includes the validation item"),
                         (lambda s: (s[:-1], (s[:-2], s[-2]), (s[:-1], s[-1])) if len(s) > 2 else (s, None, None),
                          "training stops before the validation target"),
                         (lambda s: (s[:-2], (s[:-2], s[-2]), (s[:-1], s[-1])), "fewer than 3 items")],
    "01.k_core": [(_one_pass_core, "repeat until a pass removes nothing"),
                  (lambda log, k: log[(log.groupby("user_id")["user_id"].transform("size") > k)], ">= k")],
    "02.ndcg": [(_ndcg_first_among_ties, "FIRST among its ties"),
                (lambda s, t: 1 / np.log2(1 + (s > s[t]).sum()), "gains 1"),
                (lambda s, t: 1 / np.log(2 + (s > s[t]).sum()), "the first rank gains 1"),
                (lambda s, t: 1 / np.log2(2 + (s > s[t]).sum()) if (s > s[t]).sum() < 10 else 0.0, "FIRST among its ties")],
    "02.cross_entropy": [(lambda x, y: -torch.log(torch.softmax(x, 1)[torch.arange(len(y)), y]).sum(), "do not sum"),
                         (lambda x, y: -torch.log(torch.softmax(x, 0)[torch.arange(len(y)), y]).mean(), "not over the batch"),
                         (lambda x, y: -torch.log(x.exp()[torch.arange(len(y)), y] / x.exp().sum(1)).mean(), "overflows")],
    "02.perplexity": [(lambda lp: float(np.exp(-np.sum(lp))), "MEAN"),
                      (lambda lp: float(np.exp(np.mean(lp))), "exp of minus"),
                      (lambda lp: float(2 ** -np.mean(lp)), "use exp, not 2 **")],
    "03.causal_mask": [(lambda T: torch.ones(T, T, dtype=torch.bool).triu(), "transposed"),
                       (lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1), "keep the diagonal"),
                       (lambda T: torch.ones(T, T).tril(), "torch.bool")],
    "03.gru_step": [(lambda x, h, c: _gru(x, h, c, swap_z=True), "z keeps the OLD state"),
                    (lambda x, h, c: _gru(x, h, c, reset_before=True), "applies r after the matrix product")],
    "03.attention_head": [(lambda *a: _attention(*a, scale=False), "1 / sqrt(d)"),
                          (lambda *a: _attention(*a, causal=False), "mask the future")],
    "04.rule_80_10_10": [(_all_masked, "80% of the chosen positions become MASK"),
                         (_random_any_id, "never PAD (0) or MASK"),
                         (_mask_everywhere, "only the chosen positions change")],
    "04.inference_input": [(lambda h, L, n: torch.tensor(([0] * L + h[:L - 1] + [n + 1])[-L:]), "MOST RECENT"),
                           (lambda h, L, n: torch.tensor((h + [n + 1])[-L:] + [0] * (L - len((h + [n + 1])[-L:]))), "on the LEFT"),
                           (lambda h, L, n: torch.tensor(([0] * L + h)[-L:]), "append MASK")],
    "04.masked_loss": [(lambda x, y: (F.cross_entropy(x.flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum")
                                      / y.numel()), "labelled positions only"),
                       (lambda x, y: torch.stack([F.cross_entropy(xr, yr, ignore_index=-100) for xr, yr in zip(x, y)]).mean(),
                        "not per row then over rows")],
    "05.mean_pool": [(lambda h, m: h.mean(1), "must not enter the mean"),
                     (lambda h, m: (h * m[..., None]).sum(1) / h.shape[1], "not by T")],
    "05.lora": [(lambda x, layer, A, B, alpha: layer(x) + x @ A.T @ B.T, "scale the update by alpha / r"),
                (lambda x, layer, A, B, alpha: layer(x) + A.shape[0] / alpha * (x @ A.T @ B.T), "not r / alpha")],
    "05.most_similar": [(lambda item, t, k: np.argsort(-np.where(np.arange(len(t)) == 0, -np.inf, _cos(t, item)),
                                                       kind="stable")[:k], "leave the item itself out"),
                        (lambda item, t, k: np.argsort(-np.where(np.isin(np.arange(len(t)), [0, item]), -np.inf, t @ t[item]),
                                                       kind="stable")[:k], "normalise the rows first")],
    "06.discriminator_loss": [(lambda r, f: -F.logsigmoid(f).mean() - F.logsigmoid(-r).mean(), "labelled 1"),
                              (lambda r, f: torch.cat([-F.logsigmoid(r), -F.logsigmoid(-f)]).mean(), "two means"),
                              (lambda r, f: -torch.log(torch.sigmoid(r)).mean() - torch.log(1 - torch.sigmoid(f)).mean(),
                               "underflows")],
    "06.reinforce_loss": [(lambda lp, r: -(r * lp).mean(), "baseline"),
                          (lambda lp, r: ((r - r.mean()).detach() * lp).mean(), "NEGATIVE"),
                          (lambda lp, r: -((r - r.mean()) * lp).mean(), "constant to the generator")],
    "06.distinct_n": [(lambda seqs, n: float(np.mean([len({tuple(s[i:i + n]) for i in range(len(s) - n + 1)})
                                                      / (len(s) - n + 1) for s in seqs if len(s) >= n])), "not per sequence"),
                      (lambda seqs, n: len({tuple(s[i:i + 2]) for s in seqs for i in range(len(s) - 1)})
                       / max(1, sum(len(s) - 1 for s in seqs if len(s) > 1)), "trigrams")],
    "07.holm": [(lambda p: np.minimum(np.asarray(p) * len(p), 1), "Bonferroni"),
                (_holm_no_max, "running maximum")],
    "07.paired_bootstrap": [(lambda a, b, n_resamples, seed: _boot(a, b, n_resamples, seed, paired=False), "independently"),
                            (lambda a, b, n_resamples, seed: _boot(a, b, n_resamples, seed, level=90), "2.5th and 97.5th")],
    "07.kendall_tau": [(_tau_share, "share of concordant pairs"),
                       (lambda x, y: float((np.sign(np.subtract.outer(x, x)) * np.sign(np.subtract.outer(y, y))).sum() / 2),
                        "divide by the number of pairs")],
    "08.occlusion": [(lambda f, h, i: _occlusion(f, h, i, sign=-1), "the sign"),
                     (lambda f, h, i: _occlusion(f, h, i, pad=True), "do not replace it by PAD")],
    "08.quantize_int8": [(lambda W: _quantize(W, per_tensor=True), "not one for the whole matrix"),
                         (lambda W: _quantize(W, truncate=True), "truncates"),
                         (lambda W: _quantize(W, levels=255), "not 255")],
    "08.top_k": [(lambda s, h, k: _top(s, h, k, exclude_seen=False), "already seen"),
                 (lambda s, h, k: _top(s, h, k, pad=False), "never PAD")],
    "09.pseudonym": [(lambda u, key: hashlib.sha256(key + str(u).encode()).hexdigest(), "not an HMAC"),
                     (lambda u, key: hmac.new(str(u).encode(), key, hashlib.sha256).hexdigest(), "KEY first"),
                     (lambda u, key: hmac.new(key, str(u).encode(), hashlib.md5).hexdigest(), "hashlib.sha256")],
    "09.dp_gradient": [(lambda *a: _dp(*a, clip_mean=True), "not the batch's mean"),
                       (lambda *a: _dp(*a, normalise=True), "AT MOST C"),
                       (lambda *a: _dp(*a, noise_c=False), "N(0, (sigma * C)^2)")],
    "09.attack_auc": [(lambda m, n: _auc(m, n, member_lower=False), "lower loss = member"),
                      (lambda m, n: _auc(m, n, tie=0.0), "not 0")],
}

WRONG_CASES = [(key, i) for key in KEYS for i in range(len(WRONG.get(key, [])))]


def test_every_exercise_has_two_or_more_wrong_answers():
    assert set(WRONG) == set(KEYS) and all(len(w) >= 2 for w in WRONG.values())


@pytest.mark.filterwarnings("ignore:divide by zero")  # a wrong NDCG divides by log2(1)
@pytest.mark.parametrize("key, i", WRONG_CASES, ids=[f"{k}-{i}" for k, i in WRONG_CASES])
def test_a_wrong_answer_fails_with_its_hint(key, i):
    fn, hint = WRONG[key][i]
    v = exercises.verdict(key, fn)
    assert v.status == exercises.FAILED
    assert hint in v.message, v.message
    assert "for " in v.message and "Hint:" in v.message  # the case, then the hint


# ---------------------------------------------------------------- check() itself
def test_check_prints_one_verdict_and_never_raises(capsys):
    def unwritten(*args):
        raise NotImplementedError

    def crashing(*args):
        return 1 / 0

    assert exercises.check("02.perplexity", unwritten) is None
    exercises.check("02.perplexity", crashing)
    exercises.check("02.perplexity", lambda lp: "a string")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[02.perplexity] not done yet")
    assert lines[1].startswith("[02.perplexity] failed: for log_probs") and "ZeroDivisionError" in lines[1]
    assert "got 'a string'" in lines[2]


def test_progress_lists_every_exercise_with_its_latest_verdict(capsys):
    exercises.verdict("07.holm", SOLUTIONS["07.holm"])
    exercises.verdict("07.kendall_tau", _tau_share)
    exercises._SEEN.pop("07.paired_bootstrap", None)
    exercises.progress("07")
    out = capsys.readouterr().out
    assert "1 of 3 exercises pass" in out
    assert re.search(r"\[x\] 07\.holm .*\(passed\)", out) and re.search(r"\[ \] 07\.kendall_tau .*\(failed\)", out)
    assert "not checked yet" in out


def test_an_unknown_key_names_the_notebooks_exercises():
    with pytest.raises(KeyError, match="01.k_core"):
        exercises.verdict("01.nope", len)


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_messages_show_values_not_the_reference_code():
    for key, i in WRONG_CASES:
        message = exercises.verdict(key, WRONG[key][i][0]).message
        assert "def " not in message and "return " not in message and "helpers." not in message


def test_the_subpackage_is_installed_beyond_editable_mode():
    assert '"helpers.exercises"' in (ROOT / "pyproject.toml").read_text()


# ---------------------------------------------------------------- the two editions
def test_the_stub_keeps_signature_and_docstring():
    source = 'def f(x):\n    """Doc."""\n    # BEGIN SOLUTION\n    return x\n    # END SOLUTION'
    assert make_student.stub_solution(source) == f'def f(x):\n    """Doc."""\n    {make_student.STUB}'
    with pytest.raises(ValueError):
        make_student.stub_solution("# BEGIN SOLUTION\nx = 1")


def test_details_solutions_go_and_hints_stay():
    nb = {"cells": [{"cell_type": "markdown", "metadata": {},
                     "source": "1. Try it.\n<details><summary>Hint</summary>h</details>\n"
                               "<details><summary>Solution 1</summary>\ns\n</details>"},
                    {"cell_type": "markdown", "metadata": {}, "source": "<details><summary>Solution 2</summary>s</details>"},
                    {"cell_type": "code", "metadata": {}, "source": "# Solution 2\nx = 1", "outputs": [], "execution_count": None}]}
    out = make_student.student_edition(nb)
    assert len(out["cells"]) == 1 and "Hint" in "".join(out["cells"][0]["source"])
    assert "Solution" not in "".join(out["cells"][0]["source"])


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    assert make_student.main(["--out", str(out), *map(str, NOTEBOOKS)]) == 0
    return {p.name: json.loads((out / p.name).read_text()) for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_student_edition_has_no_solution_and_otherwise_the_same_cells(path, student):
    source, edition = json.loads(path.read_text()), student[path.name]
    text = json.dumps(edition)
    assert "BEGIN SOLUTION" not in text and "<summary>Solution" not in text
    assert not any(make_student.is_solution_cell(c) for c in edition["cells"])
    kept = [("".join(c["source"]), c["cell_type"]) for c in source["cells"]
            if not make_student.is_solution_cell(c) and "solution" not in c["metadata"].get("tags", [])]
    kept = [make_student.retell(s) if kind == "markdown" else s for s, kind in kept]
    same = ["".join(c["source"]) for c in edition["cells"] if "solution" not in c["metadata"].get("tags", [])]
    assert same == [s for s in kept if s.strip()]  # markdown left empty is dropped


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.name)
def test_exercise_cells_run_to_the_end_in_both_editions(path, student):
    _, out = run_cells(exercise_cells(student[path.name]))
    n = len(exercises.exercises_of(path.name[:2]))
    assert out.count("] not done yet:") == n and f"0 of {n} exercises pass" in out, out
    _, out = run_cells(exercise_cells(json.loads(path.read_text())))
    assert out.count("] passed") == n and f"{n} of {n} exercises pass" in out, out


def _names(source: str) -> tuple[set, set]:
    """(names a cell defines, names it reads), ignoring IPython magics."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    defined, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Name):
            (defined if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
    return defined, read


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cell_of_the_student_edition_needs_a_removed_solution(path):
    """The rest of a notebook runs under nbval in the solution edition; what the student edition
    drops must define nothing that a kept cell after it reads (a cheap stand-in for running it)."""
    removed, missing = set(), set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        defined, read = _names("".join(cell["source"]))
        if make_student.is_solution_cell(cell):
            removed |= defined
        else:
            missing |= (read & removed) - defined
            removed -= defined
    assert not missing, f"cells of the student edition read names only a removed solution defines: {missing}"


@pytest.mark.parametrize("key", KEYS)
def test_a_function_that_returns_nothing_fails_with_a_hint(key):
    v = exercises.verdict(key, lambda *args, **kwargs: None)
    assert v.status == exercises.FAILED and "Hint:" in v.message, v.message
