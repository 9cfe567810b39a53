"""Load test of the recommendation service: many clients at once against a real uvicorn.

    python benchmarks/load_test.py                                   # Beauty SASRec, the active profile
    python benchmarks/load_test.py --profile cpu --requests 2000 --concurrency 300 --workers 2

Starts ``helpers.service`` under uvicorn on 127.0.0.1 (``--workers`` processes), sends
``--requests`` POST /recommend bodies (histories of random test users, in raw IDs) with up to
``--concurrency`` in flight through one ``httpx.AsyncClient``, and stops the server. Reports
throughput, client-side p50/p95/p99 latency, the model's own p50 (from ``Server-Timing``) and
the error count: every request is sent once, nothing is retried or dropped. The request count
is bounded, so the script always ends.
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
        return await service.load_test(client, bodies, concurrency=concurrency, timeout=60.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $COURSE_PROFILE)")
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200, help="requests in flight at once")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--explain", action="store_true", help="ask for explanations (occlusion) too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    rec, s = recommender.from_registry(args.dataset, profile)
    picks = np.random.default_rng(args.seed).integers(0, len(s.test), args.requests)
    bodies = [{"history": [rec.raw_id(i) for i in s.test.histories[u]], "k": 10, "explain": args.explain}
              for u in picks]
    with tempfile.TemporaryDirectory() as tmp:
        rec.save(Path(tmp) / "artefact")
        with service.running_server(Path(tmp) / "artefact", workers=args.workers) as url:
            report = asyncio.run(run(url, bodies, args.concurrency))
    summary = {**report.summary(), "workers": args.workers, "explain": args.explain}
    load = os.getloadavg()
    print(f"{args.dataset} {type(rec.model).__name__}, profile {profile.name}: {rec.n_items:,} items; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs\n")
    print(pd.Series(summary).to_frame("load test").to_markdown(floatfmt=".2f"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"profile": profile.name, "dataset": args.dataset, "load": load,
                                         **summary}, indent=2, default=float))


if __name__ == "__main__":
    main()
