"""Notebook 10's tables (multi-behaviour sequences), from one execution of the notebook.

The tables are built in the notebook itself (one copy of the code); this script executes it
headless in the chosen profile and prints what it recorded (``course.record``) as markdown:
the next-behaviour table, the next-item tables (buy, view), the two-head weight table and the
published test under full and sampled ranking.

    COURSE_PROFILE=cpu .venv/bin/python benchmarks/multibehaviour.py [--no-run]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from helpers import course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "10_multi_behaviour"


def run_notebook(out: Path) -> float:
    """Execute the notebook with nbconvert (same environment); return its seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                    "--ExecutePreprocessor.timeout=3600", "--output-dir", str(out),
                    str(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb")], check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return time.perf_counter() - started


def tables(values: dict[str, float]) -> dict[str, pd.DataFrame]:
    """Split the recorded ``a/b/c`` keys into one table per first part (rows b, columns c)."""
    out: dict[str, dict] = {}
    for key, value in values.items():
        parts = key.split("/")
        if len(parts) == 3:
            out.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = value
        elif len(parts) == 4:  # published/<protocol>/<model>/<metric>
            out.setdefault(parts[0], {}).setdefault(f"{parts[1]}: {parts[2]}", {})[parts[3]] = value
    return {name: pd.DataFrame(rows).T for name, rows in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-run", action="store_true", help="print the last recorded run without executing")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "notebooks", help="executed notebook goes here")
    args = parser.parse_args()
    if not args.no_run:
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"notebook {NOTEBOOK}: {run_notebook(args.out):.0f} s")
    recorded = course.load_results(NOTEBOOK)
    print(f"profile {recorded['profile']}")
    for name, frame in tables(recorded["values"]).items():
        print(f"\n### {name}\n\n{frame.round(4).to_markdown()}")


if __name__ == "__main__":
    main()
