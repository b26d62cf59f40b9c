"""Teacher throughput by engine: local, and Ray with 1, 2, ... workers (not a stage).

Plans a fixed sample once (the first --sample reviews of a prepared split, the teacher's
settings from params.yaml), then scores the same planned batches with each engine and checks
that every engine gave the local engine's logits. Each Ray call starts its actor pool (each
actor loads the teacher), as every call the stage makes does (one per chunk of 65,536
reviews): `reviews/s` counts from the first batch started to the last finished on any actor,
`startup` is the rest of the call, `end to end` the whole call.

    python tools/engine_scaling.py --workers 1 2
    RAY_ADDRESS=<head>:6379 python tools/engine_scaling.py --workers 1 2 4 8   # a cluster

Run it from the repository root on a quiet machine (a few minutes on 2 CPU cores).
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from kd.device import resolve_device, resolve_precision
from kd.params import load_params
from kd.teacher.engines import LocalEngine, RayEngine, connect_ray
from kd.teacher.scoring import assemble, load_teacher, plan_batches


def timed(engine, batches) -> tuple[float, list[np.ndarray]]:
    started = time.perf_counter()
    logits = engine.score(batches)
    return time.perf_counter() - started, logits


def main(args: argparse.Namespace) -> None:
    import ray
    import torch

    params = load_params()
    device = resolve_device(params.device)
    precision = resolve_precision(args.precision or params.teacher.precision, device)
    texts = pq.read_table(args.split, columns=["text"])["text"].to_pylist()[:args.sample]
    model, tokenizer, identity = load_teacher(args.teacher)
    positive = identity["positive_index"]
    plan = {"max_len": params.teacher.max_len, "head_tokens": params.teacher.head_tokens,
            "batch_size": params.teacher.batch_size}
    batches = plan_batches(tokenizer, texts, **plan)
    rows = []

    local = LocalEngine(model, positive, device, precision)
    timed(local, batches[:1])  # warm-up: first-call allocations
    seconds, reference = timed(local, batches)
    reference = assemble(batches, reference, len(texts))
    rows.append({"engine": "local", "workers": 1, "threads": torch.get_num_threads(),
                 "startup_s": 0.0, "end_to_end_s": seconds, "scoring_s": seconds})

    connect_ray()  # RAY_ADDRESS, a `ray start` cluster on this machine, or a new local one
    try:
        for workers in args.workers:
            with RayEngine(args.teacher, positive, device, precision, workers) as engine:
                seconds, logits = timed(engine, batches)
                scoring = engine.scoring_seconds
            logits = assemble(batches, logits, len(texts))
            if not np.array_equal(logits, reference):
                print(f"ray x{workers}: logits differ from local by up to "
                      f"{np.abs(logits - reference).max():.3g}")
            rows.append({"engine": "ray", "workers": workers,
                         "threads": 1 if device.type == "cpu" else None,
                         "startup_s": seconds - scoring, "end_to_end_s": seconds,
                         "scoring_s": scoring,
                         "same_logits_as_local": bool(np.array_equal(logits, reference))})
        cluster = {key: value for key, value in ray.cluster_resources().items()
                   if key in ("CPU", "GPU")}
    finally:
        ray.shutdown()

    print(f"{len(texts)} reviews of {args.split}, {device} {precision}, batch "
          f"{plan['batch_size']}, {os.cpu_count()} cores here, Ray cluster {cluster}")
    print("| engine | workers | reviews/s | x local | startup per call | end to end | "
          "same logits |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    local_rate = len(texts) / rows[0]["scoring_s"]
    for row in rows:
        row["reviews_per_s"] = len(texts) / row["scoring_s"]
        print(f"| {row['engine']} | {row['workers']} | {row['reviews_per_s']:.1f} | "
              f"{row['reviews_per_s'] / local_rate:.2f} | {row['startup_s']:.1f} s | "
              f"{row['end_to_end_s']:.1f} s | {row.get('same_logits_as_local', '-')} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"reviews": len(texts), "device": str(device),
                                              "precision": precision, "rows": rows},
                                             indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=512)
    parser.add_argument("--split", default="data/prepared/test.parquet")
    parser.add_argument("--teacher", default="models/teacher")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                        help="default: teacher.precision in params.yaml")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    main(parser.parse_args())
