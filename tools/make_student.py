"""Write the learner's edition of the notebooks: the same notebooks without the solutions.

One source, two editions. The notebooks in ``notebooks/`` keep every solution; this tool writes
copies where

- each checked exercise's solution (the lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION``
  in a cell tagged ``solution``) becomes ``raise NotImplementedError(...)`` inside the function,
  so the check under it reports "not done yet" and ``Run all`` goes on;
- the open experiments' solution cells (code cells that start with ``# Solution``) are dropped;
- ``<details><summary>Solution ...</summary> ... </details>`` blocks are dropped from the
  markdown (hints stay), and a markdown cell left empty is dropped; "Each solution below is
  hidden" becomes a line saying where the solutions are.

Every other cell is copied as it is, so the learner's edition runs top to bottom exactly as the
course does.

    python tools/make_student.py --out build/student notebooks/*.ipynb

``--colab-base URL`` also writes ``README.md`` into the output folder with an "Open in Colab"
link per notebook, for a host who publishes the edition (for example on a ``student`` branch:
``--colab-base https://colab.research.google.com/github/OWNER/REPO/blob/student``).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
SOLUTION_CELL = re.compile(r"\s*# Solution\b")
DETAILS = re.compile(r"\n?<details>\s*<summary>\s*Solution.*?</details>\n?", re.S)
STUB = 'raise NotImplementedError("write this function, run this cell, then run the check below")'
HIDDEN_NOTE = "Each solution below is hidden: try first, then open it and run the cell under it."
STUDENT_NOTE = "This edition has no solutions; the course's own notebooks (in `notebooks/`) have them."


def stub_solution(source: str) -> str:
    """``source`` with every BEGIN/END SOLUTION block replaced by a ``NotImplementedError`` stub."""
    out, inside = [], False
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{BEGIN} inside another solution block")
            indent = line[:len(line) - len(line.lstrip())]
            out.append(f"{indent}{STUB}\n")
            inside = True
        elif stripped == END:
            if not inside:
                raise ValueError(f"{END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN} without {END}")
    return "".join(out).rstrip("\n")


def retell(markdown: str) -> str:
    """``markdown`` without its ``<details>`` solutions, and saying that this edition has none."""
    if "<summary>" in markdown:
        markdown = DETAILS.sub("\n", markdown).strip("\n")
    return markdown.replace(HIDDEN_NOTE, STUDENT_NOTE)


def is_solution_cell(cell: dict) -> bool:
    """An open experiment's solution: a code cell whose first line is ``# Solution``."""
    return cell["cell_type"] == "code" and bool(SOLUTION_CELL.match("".join(cell["source"])))


def student_edition(nb: dict) -> dict:
    """A copy of notebook ``nb`` (nbformat 4, as JSON) without its solutions."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb["cells"]:
        original = source = "".join(cell["source"])
        if is_solution_cell(cell):
            continue
        if cell["cell_type"] == "code" and BEGIN in source:
            if "solution" not in cell["metadata"].get("tags", []):
                raise ValueError(f"a cell with {BEGIN} must be tagged 'solution':\n{source[:200]}")
            source = stub_solution(source)
        elif cell["cell_type"] == "markdown":
            source = retell(source)
            if not source.strip():
                continue
        if source != original:
            cell["source"] = source.splitlines(keepends=True)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    nb["cells"] = cells
    return nb


def colab_readme(names: list[str], base: str) -> str:
    rows = [f"- [{name}]({base.rstrip('/')}/{name}.ipynb)" for name in names]
    return ("# The learner's edition\n\nThe course's notebooks without the solutions: every checked exercise "
            "reports `not done yet` until you write it. Open in Colab:\n\n" + "\n".join(rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the learner's edition (no solutions) of the notebooks")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("build/student"), help="output folder (default build/student)")
    parser.add_argument("--colab-base", help="also write README.md with Colab links under this address")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.notebooks:
        nb = student_edition(json.loads(path.read_text()))
        (args.out / path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        print(f"{args.out / path.name}")
    if args.colab_base:
        (args.out / "README.md").write_text(colab_readme([p.stem for p in args.notebooks], args.colab_base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
