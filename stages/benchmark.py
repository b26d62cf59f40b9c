"""Stage `benchmark`: teacher and every student form side by side, on the same test reviews,
in one run, with the same thread count.

For each: throughput (reviews/s) at batch 64, single-review latency p50/p99 (tokenization
included), size on disk, parameters and accuracy on the sample; then a load test of the HTTP
API on loopback (started and stopped here) with concurrent single-review clients.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from kd.bench import load_test, measure
from kd.data import load_split
from kd.errors import exit_on_error
from kd.export import FILES, load_student
from kd.losses import teacher_margin
from kd.metrics import model_footprint, sigmoid
from kd.model import count_parameters, load_checkpoint
from kd.params import load_params
from kd.teacher import load_teacher, score
from kd.text import encode, load_tokenizer, pad_batch


def _teacher_predictor(params):
    model, tokenizer, identity = load_teacher(params.path)

    def predict(texts: list[str]) -> np.ndarray:
        logits = score(model, tokenizer, texts, max_len=params.max_len,
                       head_tokens=params.head_tokens, batch_size=len(texts),
                       positive=identity["positive_index"])
        return sigmoid(teacher_margin(logits))

    return predict


def _torch_predictor(checkpoint: str, tokenizer_path: str):
    model, _ = load_checkpoint(checkpoint)
    tokenizer = load_tokenizer(tokenizer_path)
    min_len = max(model.config.kernel_sizes)

    @torch.inference_mode()
    def predict(texts: list[str]) -> np.ndarray:
        return torch.sigmoid(model(pad_batch(encode(tokenizer, texts), min_len))).numpy()

    return predict, count_parameters(model)


def _measure(predict, texts: list[str], labels: np.ndarray, batch_size: int,
             latency_reviews: int) -> dict:
    speed, probs = measure(predict, texts, batch_size, latency_reviews)
    return {**speed, "accuracy": float(((probs >= 0.5) == (labels == 1)).mean())}


@exit_on_error
def main(args: argparse.Namespace) -> None:
    params = load_params()
    torch.set_num_threads(args.threads)
    test = load_split(args.test).shuffle(seed=params.seed)
    test = test.select(range(min(args.reviews, len(test))))  # a small test_size has fewer
    texts, labels = list(test["text"]), np.asarray(test["label"])
    export = Path(args.export_dir)

    results = {"reviews": len(texts), "threads": args.threads, "batch_size": args.batch_size}
    results["teacher"] = {
        **_measure(_teacher_predictor(params.teacher), texts, labels, args.batch_size,
                   args.teacher_latency_reviews),
        **model_footprint(params.teacher.path),
    }
    print("teacher", results["teacher"], flush=True)
    torch_predict, student_params = _torch_predictor(args.checkpoint, args.tokenizer)
    forms = {"student_torch": (torch_predict, Path(args.checkpoint))}
    for form in ("bf16", "onnx", "int8"):
        student = load_student(export, form=form, threads=args.threads)
        forms[f"student_{form}"] = (student.positive_probs, export / FILES[form])
    for name, (predict, path) in forms.items():
        results[name] = {**_measure(predict, texts, labels, args.batch_size,
                                    args.latency_reviews),
                         "size_mb": round(path.stat().st_size / 1e6, 2),
                         "params": student_params}
        print(name, results[name], flush=True)
    best = max(results[name]["reviews_per_s"] for name in forms)
    results["speedup_vs_teacher"] = best / results["teacher"]["reviews_per_s"]
    results["api"] = load_test(export, texts, clients=args.clients,
                               requests_per_client=args.requests_per_client)
    print("api", results["api"], flush=True)

    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(results, indent=2) + "\n")
    rows = [{"model": name, "reviews_per_s": round(results[name]["reviews_per_s"], 1),
             "accuracy": results[name]["accuracy"]} for name in ["teacher", *forms]]
    plot = Path(args.plot)
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--test", default="data/prepared/test.parquet")
    parser.add_argument("--checkpoint", default="models/student/best.safetensors")
    parser.add_argument("--tokenizer", default="data/vocab/tokenizer.json")
    parser.add_argument("--export-dir", default="models/export")
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-reviews", type=int, default=500)
    parser.add_argument("--teacher-latency-reviews", type=int, default=100)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=100)
    parser.add_argument("--metrics", default="reports/benchmark.json")
    parser.add_argument("--plot", default="reports/benchmark_plot.json")
    main(parser.parse_args())
