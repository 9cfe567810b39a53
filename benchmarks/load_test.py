"""Load test of the recommendation service: many clients at once against a real uvicorn.

    python benchmarks/load_test.py                                   # Beauty SASRec, the active profile
    python benchmarks/load_test.py --profile cpu --requests 2000 --concurrency 300 --workers 2
    python benchmarks/load_test.py --explain                         # explanations on: occlusion, then gradient

Starts ``helpers.service`` under uvicorn on 127.0.0.1 (``--workers`` processes), sends
``--requests`` POST /recommend bodies (histories of random test users, in raw IDs) with up to
``--concurrency`` in flight through one ``httpx.AsyncClient``, and stops the server. Reports
throughput, client-side p50/p95/p99 latency, the model's own p50 (from ``Server-Timing``) and
the error count: every request is sent once, nothing is retried or dropped. The request count
is bounded, so the script always ends.

``--explain`` asks for explanations and runs once per method (occlusion, gradient x input),
each with its own server: the same bodies are first sent one at a time, then all at once, and
every concurrent answer must equal its sequential one (``mismatches``). The script exits with
an error when any request got a 5xx or an answer differed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from helpers import recommender, service
from helpers.profile import get_profile


async def run(url: str, bodies: list[dict], concurrency: int) -> service.LoadReport:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        await client.post("/recommend", json=bodies[0])  # warm up one connection
        return await service.load_test(client, bodies, concurrency=concurrency, timeout=60.0, keep_answers=True)


def serve_and_load(rec: recommender.Recommender, bodies: list[dict], concurrency: int, workers: int,
                   compare: bool) -> dict:
    """One server for ``rec``; the load test's summary, and with ``compare`` the number of
    concurrent answers that differ from the same bodies sent one at a time."""
    with tempfile.TemporaryDirectory() as tmp:
        rec.save(Path(tmp) / "artefact")
        with service.running_server(Path(tmp) / "artefact", workers=workers) as url:
            sequential = asyncio.run(run(url, bodies, 1)) if compare else None
            report = asyncio.run(run(url, bodies, concurrency))
    summary = report.summary()
    if sequential is not None:
        summary["mismatches"] = report.mismatches(sequential.answers)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $COURSE_PROFILE)")
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200, help="requests in flight at once")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--explain", action="store_true",
                        help="ask for explanations, once by occlusion and once by gradient x input, and "
                             "compare every concurrent answer with the sequential one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    rec, s = recommender.from_registry(args.dataset, profile)
    picks = np.random.default_rng(args.seed).integers(0, len(s.test), args.requests)
    bodies = [{"history": [rec.raw_id(i) for i in s.test.histories[u]], "k": 10, "explain": args.explain}
              for u in picks]
    summaries = {}
    for method in ("occlusion", "gradient") if args.explain else ("none",):
        if args.explain:
            rec.explain_with = method
        summaries[method] = {**serve_and_load(rec, bodies, args.concurrency, args.workers, args.explain),
                             "workers": args.workers}
    load = os.getloadavg()
    print(f"{args.dataset} {type(rec.model).__name__}, profile {profile.name}: {rec.n_items:,} items; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs\n")
    print(pd.DataFrame(summaries).rename_axis(f"explain: {'method' if args.explain else 'off'}")
          .to_markdown(floatfmt=".2f"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"profile": profile.name, "dataset": args.dataset, "load": load,
                                         "explain": args.explain, **summaries}, indent=2, default=float))
    failed = {m: v for m, v in summaries.items() if v["5xx"] or v.get("mismatches")}
    if failed:
        raise SystemExit(f"not clean: {failed}")


if __name__ == "__main__":
    main()
