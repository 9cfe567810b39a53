"""The committed notebooks: clean, numbered, listed, and opening with the setup cell.

Executing them is nbval's job (``pytest --nbval-lax notebooks``, see the Makefile).
"""

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

spec = importlib.util.spec_from_file_location("clean_notebooks", ROOT / "tools" / "clean_notebooks.py")
clean_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(clean_notebooks)


def code(source, outputs=(), count=None):
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": list(outputs),
            "execution_count": count}


STDOUT = {"output_type": "stream", "name": "stdout", "text": "943 users\n"}
IMAGE = {"output_type": "display_data", "data": {"image/png": "..."}, "metadata": {}}


def test_clean_keeps_only_the_printed_text_of_checked_cells():
    nb = {"cells": [code("# NBVAL_CHECK_OUTPUT\nprint(943)", [STDOUT, IMAGE], 3),
                    code("plot()", [IMAGE], 4)]}
    assert clean_notebooks.problems(copy.deepcopy(nb))
    cleaned = clean_notebooks.clean(nb)
    assert cleaned["cells"][0]["outputs"] == [STDOUT] and cleaned["cells"][1]["outputs"] == []
    assert [c["execution_count"] for c in cleaned["cells"]] == [1, None]  # nbval skips unrun cells
    assert clean_notebooks.problems(cleaned) == []


def test_a_checked_cell_without_output_is_reported():
    assert clean_notebooks.problems({"cells": [code("# NBVAL_CHECK_OUTPUT\nprint(1)")]})


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("01_")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_starts_with_the_setup_cell(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name)
    nb = json.loads(path.read_text())
    assert clean_notebooks.problems(nb) == []
    first = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert '"google.colab" in sys.modules' in first
    assert f'course.setup("{path.stem}")' in first
    assert f"notebooks/{path.name}" in (ROOT / "README.md").read_text(), "list it in the README"


# A number typed into markdown must come from the run (a code cell computes or prints it) or be
# a cited reference. Measured-looking numbers: two or more decimals (.0152, 0.33), thousands with
# commas (74,498), approximate percentages ("about 1%"). Formulas, inline code and paragraphs that
# cite a source ("published", "paper", "README", "et al.", a tool's "default") are not checked;
# a number also counts as computed when any notebook's code holds it (a data set size asserted in 01).
TYPED_NUMBER = re.compile(r"(?<![\w.$])(\d*\.\d{2,}|\d{1,3}(?:,\d{3})+)(?!\w)"
                          r"|(?:about|around|roughly|nearly|almost|only|~)\s+(\d+(?:\.\d+)?\s?%)", re.I)
CITATION = re.compile(r"published|paper|README|et al\.|default", re.I)


def _digits(text: str) -> str:
    return re.sub(r"[,_%\s]", "", text)


def typed_numbers(nb: dict, code: str) -> list[str]:
    """Numbers in ``nb``'s markdown prose that neither ``code`` (digits only) nor a citation backs."""
    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`", " ", "".join(cell["source"]), flags=re.S)
        for paragraph in re.split(r"\n\s*\n|\n\s*- |\n\s*\d\. |\n\|", text):
            if CITATION.search(paragraph):
                continue
            for match in TYPED_NUMBER.finditer(paragraph):
                number = match.group(1) or match.group(2)
                if "%" in number or _digits(number) not in code:
                    found.append(f"{number!r} in: {' '.join(paragraph.split())[:120]}")
    return found


def test_typed_numbers_are_found_and_the_check_can_fail():
    nb = {"cells": [{"cell_type": "markdown", "source": "LoRA trains about 1% of the weights; NDCG@10 .0758."},
                    {"cell_type": "markdown", "source": "The paper's table gives .0152."},
                    {"cell_type": "markdown", "source": "HR@10 is $0.25$ here, see `0.125`."}]}
    assert [f.split(" in:")[0] for f in typed_numbers(nb, code="x = 1")] == ["'1%'", "'.0758'"]
    assert typed_numbers(nb, code="assert ndcg == 0.0758") == ["'1%' in: LoRA trains about 1% of the weights; NDCG@10 .0758."]


def test_no_notebook_types_a_number_its_run_does_not_compute():
    nbs = {path.name: json.loads(path.read_text()) for path in NOTEBOOKS}
    code = _digits("\n".join("".join(c["source"]) for nb in nbs.values() for c in nb["cells"]
                             if c["cell_type"] == "code"))
    typed = [f"{name}: {f}" for name, nb in nbs.items() for f in typed_numbers(nb, code)]
    assert not typed, "print these from the run, cite their source, or ask them as a question:\n" + "\n".join(typed)
