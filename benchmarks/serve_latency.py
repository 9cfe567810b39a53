"""Latency of one recommendation on this machine: the model alone, and through a real HTTP service.

    python benchmarks/serve_latency.py                       # Beauty SASRec, the active profile
    python benchmarks/serve_latency.py --profile cpu --compile --repeats 2000 --json results/serve_latency.json
    python benchmarks/serve_latency.py --profile ci --repeats 10 --artefact artefacts/sasrec-beauty  # keep one

The issue's setting: one request (batch 1) with a history of the profile's ``max_len`` items (the
longest test history), top 10 over all items with the seen ones excluded. Rows:

* the scoring function alone: eager PyTorch, int8 dynamic quantization, ONNX Runtime and (with
  ``--compile``) ``torch.compile``, at batch 1 and batch 64 (time per user);
* ``Recommender.recommend`` (raw IDs in and out, seen items masked, no explanation);
* the same through a real uvicorn on 127.0.0.1 (``helpers.service``), one request at a time on a
  kept-alive connection; the service's overhead is the client's time minus the model time the
  server reports in its ``Server-Timing`` header.

The model comes from the registry (trained once, then read from the model cache). Torch and ONNX
Runtime use ``--threads`` threads (default 1: a service answers many requests at once with one
core each). Timings depend on what else the machine runs: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import torch

from helpers import compress, recommender, service
from helpers.profile import get_profile
from helpers.sequences import pad_left


def model_rows(rec: recommender.Recommender, one: torch.Tensor, batch: torch.Tensor, repeats: int,
               use_compile: bool, workdir: Path, threads: int) -> dict[str, dict]:
    """Latency of each runtime at batch 1 and per user at batch 64; checks scores against eager first."""
    model = rec.model
    runners = {"eager PyTorch": model.score, "int8 Linear (dynamic)": compress.quantize_linear(model).score,
               "ONNX Runtime": compress.OnnxScorer(compress.export_onnx(model, workdir / "model.onnx"),
                                                   model.max_len, threads).score}
    rows = {}
    if use_compile:
        compiled = torch.compile(compress.Scores(model).eval())
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(one)
            compiled(batch)
        rows["torch.compile"] = {"compile s": time.perf_counter() - start}
        runners["torch.compile"] = compiled
    reference = model.score(batch)
    with torch.inference_mode():
        for name, run in runners.items():
            gap = float((run(batch)[:, 1:] - reference[:, 1:]).abs().max())
            single = compress.latency_summary(compress.time_calls(lambda run=run: run(one), repeats))
            per_user = np.median(compress.time_calls(lambda run=run: run(batch), max(10, repeats // 10))) / len(batch)
            rows[name] = {**rows.get(name, {}), **single, "batch 64 ms/user": per_user, "max |diff|": gap}
    return rows


def http_rows(rec: recommender.Recommender, history: list, repeats: int, workdir: Path,
              threads: int) -> dict[str, dict]:
    """``recommend()`` in-process, and through uvicorn: client time, model time, overhead."""
    direct = compress.time_calls(lambda: rec.recommend(history, k=10, explain_top=0), repeats)
    artefact = workdir / "artefact"
    rec.save(artefact)
    body = {"history": history, "k": 10, "explain": False}
    client_ms, model_ms = np.empty(repeats), np.empty(repeats)
    with service.running_server(artefact, threads=threads) as url, httpx.Client(base_url=url) as client:
        for _ in range(20):
            client.post("/recommend", json=body).raise_for_status()
        for i in range(repeats):
            start = time.perf_counter()
            response = client.post("/recommend", json=body)
            client_ms[i] = (time.perf_counter() - start) * 1e3
            response.raise_for_status()
            model_ms[i] = float(response.headers["server-timing"].split("dur=")[1])
    return {"recommend() in-process": compress.latency_summary(direct),
            "HTTP service (client)": compress.latency_summary(client_ms),
            "HTTP service: model part": compress.latency_summary(model_ms),
            "HTTP service: overhead": compress.latency_summary(client_ms - model_ms)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $COURSE_PROFILE)")
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--repeats", type=int, default=1000, help="timed calls per row")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (compiles first)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--artefact", type=Path, default=None, help="also save the served artefact here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    rec, s = recommender.from_registry(args.dataset, profile)
    longest = max(range(len(s.test)), key=lambda i: len(s.test.histories[i]))
    history = s.test.histories[longest]
    one = pad_left([history], rec.max_len)  # (1, T)
    batch = pad_left(s.test.histories[:64], rec.max_len)  # (64, T)
    with tempfile.TemporaryDirectory() as tmp:
        rows = model_rows(rec, one, batch, args.repeats, args.compile, Path(tmp), args.threads)
        rows.update(http_rows(rec, [rec.raw_id(i) for i in history], args.repeats, Path(tmp), args.threads))
    if args.artefact:
        print(f"artefact {args.artefact}, checksum {rec.save(args.artefact)}")
    table = pd.DataFrame(rows).T
    load = os.getloadavg()
    print(f"{args.dataset} {type(rec.model).__name__}, profile {profile.name}: {rec.n_items:,} items, "
          f"{min(len(history), rec.max_len)}-item history, top 10, seen excluded; {args.repeats} calls per row, "
          f"{args.threads} thread(s); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} CPUs\n")
    print(table.to_markdown(floatfmt=".3f"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"profile": profile.name, "dataset": args.dataset, "load": load,
                                         "rows": table.to_dict("index")}, indent=2, default=float))


if __name__ == "__main__":
    main()
