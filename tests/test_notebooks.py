"""The committed notebooks: clean, numbered, listed, and opening with the setup cell.

Executing them is nbval's job (``pytest --nbval-lax notebooks``, see the Makefile).
"""

import copy
import importlib.util
import json
import os
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


# A number typed into markdown must be printed by that notebook's run (the executed copies of
# `make course`, the cpu profile the prose quotes) or carry a source: tools/typed_numbers.py.
typed_spec = importlib.util.spec_from_file_location("typed_numbers", ROOT / "tools" / "typed_numbers.py")
typed_numbers = importlib.util.module_from_spec(typed_spec)
typed_spec.loader.exec_module(typed_numbers)
# Where the executed notebooks are: COURSE_EXECUTED_NOTEBOOKS, else build/notebooks.
EXECUTED = Path(os.environ.get("COURSE_EXECUTED_NOTEBOOKS", ROOT / "build" / "notebooks"))


def markdown(*sources):
    return [{"cell_type": "markdown", "metadata": {}, "source": s} for s in sources]


def printed(text):
    return code("print(x)", [{"output_type": "stream", "name": "stdout", "text": text}])


def test_a_typed_number_is_backed_only_by_its_own_notebooks_output():
    text = {"cells": markdown("NDCG@10 .0755 against .0727; LoRA trains about 1% of the weights.",
                              "The paper's table gives .0152.",       # a source
                              "HR@10 is $0.25$ here, see `0.125`.",   # a formula, inline code
                              "## Exercises\n\nChange the rate to 0.25.")}
    found = [n for n, _ in typed_numbers.typed_numbers(text)]
    assert found == [".0755", ".0727", "1%"]
    # the number in a code cell no longer counts: only what the run printed
    ran = {"cells": [code("ndcg = 0.0755; lora = 0.0727"), printed("ndcg 0.07549\n")]}
    assert [u.split(" in:")[0] for u in typed_numbers.unbacked(text, ran)] == ["'.0727'", "'1%'"]
    ran = {"cells": [printed("ndcg 0.07549 logistic +0.0727 [-0.0053, +0.0187]\nLoRA 0.0123 of weights\n")]}
    assert typed_numbers.unbacked(text, ran) == []  # rounded to the digits typed; 0.0123 = about 1%


def test_fewer_digits_printed_than_typed_do_not_back_a_number():
    printed_ = typed_numbers.printed_numbers("0.08 and 74498 and 97.5%")
    assert not typed_numbers.backs(".0755", printed_)
    assert typed_numbers.backs("74,498", printed_) and typed_numbers.backs("97.5%", printed_)
    assert not typed_numbers.backs("97.6%", printed_)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_notebook_types_a_number_its_run_does_not_print(path):
    executed = EXECUTED / path.name
    if not executed.exists():
        pytest.skip(f"no executed copy in {EXECUTED} (run `make course`, or set COURSE_EXECUTED_NOTEBOOKS)")
    typed = typed_numbers.unbacked(json.loads(path.read_text()), json.loads(executed.read_text()))
    assert not typed, "print these from the run, cite their source, or ask them as a question:\n" + "\n".join(typed)
