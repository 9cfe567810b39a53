"""Keep committed notebooks clean: no outputs, no execution counts, except checked cells.

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
import sys
from pathlib import Path

MARKER = "# NBVAL_CHECK_OUTPUT"


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


def problems(nb: dict) -> list[str]:
    """Why ``nb`` is not clean (empty when it is)."""
    found = []
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
    parser = argparse.ArgumentParser(description="strip notebook outputs except checked cells")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--outputs-from", type=Path, help="folder of executed copies (same names)")
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if not clean")
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:
        nb = json.loads(path.read_text())
        if args.check:
            for p in problems(nb):
                print(f"{path}: {p}")
                status = 1
            continue
        executed = json.loads((args.outputs_from / path.name).read_text()) if args.outputs_from else None
        path.write_text(json.dumps(clean(nb, executed), indent=1, ensure_ascii=False) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
