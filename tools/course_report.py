"""Execute the course's notebooks in order, time each, and build a landing page.

    python tools/course_report.py notebooks/*.ipynb                  # what `make course` runs
    python tools/course_report.py --mathjax-url URL --timeout 3600 notebooks/02_*.ipynb

For every notebook, in order: print its name, execute it (nbclient, the engine of
``jupyter nbconvert --execute``) into ``BUILD/notebooks/``, print the seconds it took, and
convert the executed copy to ``BUILD/html/``. Then write ``BUILD/timings.json`` (profile,
seconds per notebook, whether it ran) and ``BUILD/html/index.html``: one row per notebook
with a link to its page, its seconds, and the numbers it recorded with ``course.record``
(``results/<profile>/<notebook>.json``). A notebook that fails is reported and the others
still run; the exit status is then 1. The profile is ``$COURSE_PROFILE``'s.
``--reference helpers/reference_times.json`` also stores the seconds as the profile's
reference run (with the commit and the machine), which every notebook's first cell prints as
the time to expect.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError
from nbconvert import HTMLExporter

from helpers import course
from helpers.profile import get_profile


def execute(path: Path, out_dir: Path, timeout: int) -> tuple[float, str]:
    """Run ``path`` with its folder as working directory; write the executed copy. (seconds, error)"""
    nb = nbformat.read(path, as_version=4)
    start, error = time.perf_counter(), ""
    try:
        # without the caller's MPLBACKEND (a headless "agg" would leave the pages without figures)
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
    except (CellExecutionError, CellTimeoutError) as e:
        error = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    seconds = time.perf_counter() - start
    nbformat.write(nb, out_dir / path.name)
    return seconds, error


def to_html(executed: Path, html_dir: Path, mathjax_url: str | None) -> Path:
    exporter = HTMLExporter(**({"mathjax_url": mathjax_url} if mathjax_url else {}))
    body, _ = exporter.from_filename(str(executed))
    target = html_dir / f"{executed.stem}.html"
    target.write_text(body, encoding="utf-8")
    return target


def recorded(notebook: str, profile: str) -> dict[str, float]:
    """What the notebook recorded in this profile ({} when nothing)."""
    path = course.results_path(notebook, profile)
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("values", {}))
    except json.JSONDecodeError:
        return {}


def index_page(rows: list[dict], profile: str) -> str:
    """The landing page: a link, the seconds and the recorded numbers of every notebook."""
    total = sum(r["seconds"] for r in rows)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>The course, profile {profile}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
             "table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;"
             "text-align:left}td.n{text-align:right}.failed{color:#b00}</style></head><body>",
             f"<h1>Next-item prediction: the course</h1><p>profile <b>{html.escape(profile)}</b>; "
             f"{len(rows)} notebooks in {total / 60:.1f} min.</p>",
             "<table><tr><th>notebook</th><th>seconds</th><th>status</th></tr>"]
    for r in rows:
        status = "ok" if not r["error"] else f"<span class='failed'>failed: {html.escape(r['error'])}</span>"
        parts.append(f"<tr><td><a href='{html.escape(r['notebook'])}.html'>{html.escape(r['notebook'])}</a></td>"
                     f"<td class='n'>{r['seconds']:.0f}</td><td>{status}</td></tr>")
    parts.append("</table>")
    for r in rows:
        parts.append(f"<h2 id='{html.escape(r['notebook'])}'>{html.escape(r['notebook'])}: recorded results</h2>")
        if not r["results"]:
            parts.append("<p>nothing recorded</p>")
            continue
        parts.append("<table><tr><th>key</th><th>value</th></tr>")
        parts += [f"<tr><td>{html.escape(k)}</td><td class='n'>{v:.4g}</td></tr>" for k, v in r["results"].items()]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reference(path: Path, profile: str, seconds: dict[str, float], machine: str | None) -> None:
    """Store ``seconds`` as ``profile``'s reference run of each notebook in ``path``, with the commit
    and the machine (other notebooks and profiles kept), atomically."""
    runs = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=path.resolve().parent).stdout.strip() or "unknown"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    machine = machine or f"{os.cpu_count()} CPU cores, load {load} at the end"
    entries = runs["runs"].setdefault(profile, {})
    entries.update({nb: {"seconds": s, "commit": commit, "machine": machine} for nb, s in seconds.items()})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(runs, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--build", type=Path, default=Path("build"), help="output folder (default build/)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may take")
    parser.add_argument("--mathjax-url", default=None, help="MathJax address for the HTML pages")
    parser.add_argument("--reference", type=Path, default=None,
                        help="also store the seconds as this profile's reference run in this JSON file "
                             "(helpers/reference_times.json: what setup() prints as the expected time)")
    parser.add_argument("--machine", default=None, help="with --reference: the machine and cache state, in words")
    args = parser.parse_args(argv)
    profile = get_profile().name
    out_dir, html_dir = args.build / "notebooks", args.build / "html"
    out_dir.mkdir(parents=True, exist_ok=True)
    html_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in args.notebooks:
        print(f"{path.stem} ...", flush=True)
        seconds, error = execute(path, out_dir, args.timeout)
        print(f"{path.stem}: {seconds:.0f} s" + (f"  FAILED: {error}" if error else ""), flush=True)
        to_html(out_dir / path.name, html_dir, args.mathjax_url)
        rows.append({"notebook": path.stem, "seconds": round(seconds, 1), "error": error,
                     "results": recorded(path.stem, profile)})
    timings = {"profile": profile, "total_seconds": round(sum(r["seconds"] for r in rows), 1),
               "notebooks": {r["notebook"]: {"seconds": r["seconds"], "ok": not r["error"]} for r in rows}}
    (args.build / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    (html_dir / "index.html").write_text(index_page(rows, profile), encoding="utf-8")
    if args.reference is not None and not any(r["error"] for r in rows):
        write_reference(args.reference, profile, {r["notebook"]: r["seconds"] for r in rows}, args.machine)
    print(f"total {timings['total_seconds'] / 60:.1f} min; timings in {args.build / 'timings.json'}, "
          f"pages from {html_dir / 'index.html'}")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
