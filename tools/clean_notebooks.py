"""Keep committed notebooks clean: the setup cell from pyproject.toml, no outputs, no execution
counts except in checked cells.

Every notebook's first code cell is the setup cell, written here from ``setup_cell()``: on Colab it
installs the course from ``[project.urls] Colab-install`` in pyproject.toml (a pinned tag or
commit; a fork changes that one line and reruns this tool), then calls ``course.setup``.

A cell whose source starts with ``# NBVAL_CHECK_OUTPUT`` prints something that must not
change (data set counts): its text output is committed, and nbval compares it on every
run. nbval skips outputs of cells that were never run, so such a cell also keeps an
execution count (its position among the code cells). Every other output is stripped.

    python tools/clean_notebooks.py notebooks/*.ipynb                  # strip in place
    python tools/clean_notebooks.py --outputs-from build/notebooks notebooks/*.ipynb
        # take the checked cells' outputs from executed copies (e.g. after `make course`)
    python tools/clean_notebooks.py --check notebooks/*.ipynb          # exit 1 if not clean
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest (the test extra) brings tomli on Python 3.10
    import tomli as tomllib

MARKER = "# NBVAL_CHECK_OUTPUT"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
INSTALL_KEY = "Colab-install"

SETUP_CELL = '''# Setup: on Colab, install the course (the version pinned in pyproject.toml, [project.urls]);
# elsewhere nothing is installed. To change the run profile, see the lines this cell prints.
import sys

COURSE = "{source}"
if "google.colab" in sys.modules:
    import importlib
    import subprocess

    print(f"installing {{COURSE}} (a minute or two)...")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", COURSE], capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"could not install the course from {{COURSE}}:\\n{{pip.stderr[-3000:]}}\\n"
                           "Check the runtime's internet access and that this repository and tag exist "
                           "(a fork sets its own in pyproject.toml, [project.urls] Colab-install), "
                           "then rerun this cell.")
    importlib.invalidate_caches()

from helpers import course

session = course.setup("{notebook}")
profile = session.profile'''


def install_source(pyproject: Path = PYPROJECT) -> str:
    """What the Colab cell installs: ``[project.urls] Colab-install`` (``git+https://...@<tag>``)."""
    return tomllib.loads(pyproject.read_text())["project"]["urls"][INSTALL_KEY]


def colab_url(notebook: str, source: str | None = None) -> str:
    """The "Open in Colab" address of ``notebooks/<notebook>.ipynb`` at the pinned version."""
    match = re.fullmatch(r"git\+https://github\.com/([^/]+/[^/@]+?)(?:\.git)?@(.+)", source or install_source())
    if match is None:
        raise ValueError(f"{INSTALL_KEY} must look like git+https://github.com/OWNER/REPO@TAG, got {source!r}")
    repo, ref = match.groups()
    return f"https://colab.research.google.com/github/{repo}/blob/{ref}/notebooks/{notebook}.ipynb"


def setup_cell(notebook: str, source: str | None = None) -> str:
    """The first code cell of ``notebooks/<notebook>.ipynb``."""
    return SETUP_CELL.format(source=source or install_source(), notebook=notebook)


def _first_code_cell(nb: dict) -> dict | None:
    return next((c for c in nb["cells"] if c["cell_type"] == "code"), None)


def write_setup_cell(nb: dict, notebook: str) -> dict:
    """Replace the first code cell by the setup cell (it must already call ``course.setup``)."""
    cell = _first_code_cell(nb)
    if cell is None or "course.setup(" not in "".join(cell["source"]):
        raise ValueError(f"{notebook}: the first code cell must be the setup cell (calling course.setup)")
    cell["source"] = setup_cell(notebook).splitlines(keepends=True)
    return nb


def is_checked(cell: dict) -> bool:
    return cell["cell_type"] == "code" and "".join(cell["source"]).startswith(MARKER)


def text_outputs(cell: dict) -> list[dict]:
    """Only stdout streams: what a checked cell prints, never images or stderr."""
    return [{"output_type": "stream", "name": "stdout", "text": o["text"]}
            for o in cell.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stdout"]


def clean(nb: dict, executed: dict | None = None) -> dict:
    """``nb`` without outputs; checked cells keep theirs (or take them from ``executed``)."""
    if executed is not None and len(executed["cells"]) != len(nb["cells"]):
        raise ValueError("the executed copy has a different number of cells")
    n_code = 0
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        n_code += 1
        source = executed["cells"][i] if executed is not None else cell
        cell["outputs"] = text_outputs(source) if is_checked(cell) else []
        cell["execution_count"] = n_code if is_checked(cell) else None
    return nb


def problems(nb: dict, notebook: str | None = None) -> list[str]:
    """Why ``nb`` is not clean (empty when it is); with ``notebook``, also a stale setup cell."""
    found = []
    first = _first_code_cell(nb)
    if notebook is not None and (first is None or "".join(first["source"]) != setup_cell(notebook)):
        found.append("the first code cell is not the setup cell of pyproject.toml's version "
                     "(run tools/clean_notebooks.py on it)")
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("execution_count") is not None and not is_checked(cell):
            found.append(f"cell {i} has an execution count")
        if cell.get("outputs") and (not is_checked(cell) or cell["outputs"] != text_outputs(cell)):
            found.append(f"cell {i} has outputs beyond the printed text of a {MARKER} cell")
        if is_checked(cell) and not cell.get("outputs"):
            found.append(f"cell {i} is a {MARKER} cell without a stored output: nbval would compare nothing")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the setup cell, strip outputs except checked cells")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--outputs-from", type=Path, help="folder of executed copies (same names)")
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if not clean")
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:
        nb = json.loads(path.read_text())
        if args.check:
            for p in problems(nb, path.stem):
                print(f"{path}: {p}")
                status = 1
            continue
        executed = json.loads((args.outputs_from / path.name).read_text()) if args.outputs_from else None
        nb = write_setup_cell(clean(nb, executed), path.stem)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
