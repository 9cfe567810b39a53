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
