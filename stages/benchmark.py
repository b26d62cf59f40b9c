"""Stage `benchmark`: the accuracy-speed frontier, measured side by side in one run, on the
same test reviews, with the same thread count.

Rows: the teacher in bf16 and under dynamic int8 (its accuracy on the full test split scored
here); the baselines (TF-IDF LR and NB-LR in scikit-learn, fastText's hashed n-grams in C++);
the shipped student in every exported form; and one student of every arch and shape of the
sweep (`reports/sweep.json`, the configuration with the best mean validation accuracy for each
shape). Speed does not depend on the weights, so each sweep shape is timed as a freshly built
student of that shape, exported as the `export` stage does it; its accuracy is the sweep's
mean over seeds on the full test split. For each: reviews/s at batch 64, single-review p50/p99
(tokenization included), size on disk, and its speed against the bf16 teacher and the fastest
teacher.
Teacher and students alike tokenize with `kd.text.Encoder` and run a batch as length-sorted
groups of `GROUP_SIZE` reviews, as the served student does.
Then a load test of the HTTP API serving the shipped student.

Timings belong to the machine and the moment, so the reports are not stage outputs that
dvc.lock hashes (see dvc.yaml).
"""

import argparse
import io
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from kd.data.splits import load_split, require_two_labels
from kd.device import resolve_device, resolve_precision
from kd.errors import PipelineError, exit_on_error
from kd.evaluation.baselines import load_baseline
from kd.evaluation.bench import load_test, measure
from kd.evaluation.fasttext_baseline import load_fasttext
from kd.evaluation.metrics import accuracy, model_footprint, sigmoid
from kd.params import load_params, parse_params
from kd.serving.export import export_all
from kd.serving.runtime import GROUP_SIZE, load_student
from kd.student.inference import predict_logits
from kd.student.losses import teacher_margin
from kd.student.models import count_parameters, load_checkpoint
from kd.student.registry import build_student
from kd.teacher.scoring import load_teacher, score
from kd.text import encode, load_tokenizer, make_tokenizer, max_len_of


def _cpu() -> str:
    """The processor the timings belong to, and whether it has AMX (oneDNN's bf16 tiles)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.processor() or "unknown")
    return f"{name}{', AMX' if ' amx_bf16' in info else ''}"


def _teacher_predictor(params, device: torch.device, int8: bool = False):
    """P(positive) of the teacher for a list of texts, its form's name and its footprint
    ({"params", "size_mb"}). With `int8`, its linear layers under PyTorch's dynamic int8
    quantization (CPU only), run in fp32."""
    model, tokenizer, identity = load_teacher(params.teacher.path)
    footprint = model_footprint(params.teacher.path)
    if int8:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, torch.qint8)
        precision = "fp32"  # the int8 kernels take fp32 activations
        buffer = io.BytesIO()  # its size as saved (the packed int8 weights are no parameters)
        torch.save(model.state_dict(), buffer)
        footprint["size_mb"] = round(buffer.tell() / 1e6, 2)
    else:
        model.to(device)
        precision = resolve_precision(params.teacher.precision, device)

    def predict(texts: list[str]) -> np.ndarray:
        logits = score(model, tokenizer, texts, max_len=params.teacher.max_len,
                       head_tokens=params.teacher.head_tokens, batch_size=GROUP_SIZE,
                       positive=identity["positive_index"], device=device, precision=precision)
        return sigmoid(teacher_margin(logits))

    return predict, "PyTorch, dynamic int8" if int8 else f"PyTorch, {precision}", footprint


def _torch_predictor(model: torch.nn.Module, tokenizer):
    def predict(texts: list[str]) -> np.ndarray:
        return sigmoid(predict_logits(model, encode(tokenizer, texts), batch_size=GROUP_SIZE))

    return predict


def _measure_forms(export_dir: Path, paths: dict[str, Path], texts: list[str], labels,
                   args) -> dict[str, dict]:
    """Every exported form of one student: speed, size, and accuracy on the sample (none
    where `labels` is None: a student with fresh weights has no accuracy to report)."""
    rows = {}
    for form, path in paths.items():
        student = load_student(export_dir, form=form, threads=args.threads)
        speed, probs = measure(student.positive_probs, texts, args.batch_size,
                               args.latency_reviews)
        rows[form] = {**speed, "size_mb": round(path.stat().st_size / 1e6, 2)}
        if labels is not None:
            rows[form]["sample_accuracy"] = accuracy(labels, probs)
        print(f"  {form}: {rows[form]}", flush=True)
    return rows


def _fastest(forms: dict[str, dict]) -> tuple[str, dict]:
    return max(forms.items(), key=lambda item: item[1]["reviews_per_s"])


@exit_on_error
def main(args: argparse.Namespace) -> None:
    params = load_params()
    require_two_labels(args.test, "benchmark")
    torch.set_num_threads(args.threads)
    device = resolve_device(params.device)
    test = load_split(args.test).shuffle(seed=params.seed)
    test = test.select(range(min(args.reviews, len(test))))  # a small test_size has fewer
    texts, labels = list(test["text"]), np.asarray(test["label"])
    metrics = json.loads(Path(args.metrics).read_text())
    if not Path(args.sweep).is_file():
        raise PipelineError(f"{args.sweep} not found: it lists the students of the frontier "
                            "(python tools/sweep.py writes it from the experiments)")
    sweep = json.loads(Path(args.sweep).read_text())
    results = {"reviews": len(texts), "threads": args.threads, "batch_size": args.batch_size,
               "device": str(device), "cpu": _cpu()}
    frontier = []

    def add(name: str, row: dict, test_accuracy: dict | float) -> None:
        results[name] = row
        summary = test_accuracy if isinstance(test_accuracy, dict) else {"mean": test_accuracy}
        frontier.append({"model": name, "form": row.get("form", ""),
                         "reviews_per_s": round(row["reviews_per_s"], 1),
                         "p50_ms": round(row["p50_ms"], 2), "size_mb": row["size_mb"],
                         "accuracy": summary["mean"], "accuracy_std": summary.get("std")})
        print(name, row, flush=True)

    predict, form, footprint = _teacher_predictor(params, device)
    speed, probs = measure(predict, texts, args.batch_size, args.teacher_latency_reviews)
    add("teacher", {**speed, "form": form, **footprint, "sample_accuracy": accuracy(labels, probs)},
        metrics["teacher"]["accuracy"])
    if device.type == "cpu":  # PyTorch's dynamic int8 kernels are CPU kernels
        predict, form, footprint = _teacher_predictor(params, device, int8=True)
        speed, probs = measure(predict, texts, args.batch_size, args.teacher_latency_reviews)
        full = load_split(args.test)  # its accuracy on the whole test split, scored here
        print(f"teacher_int8: scoring the {len(full)} test reviews", flush=True)
        add("teacher_int8", {**speed, "form": form, **footprint,
                             "sample_accuracy": accuracy(labels, probs)},
            accuracy(np.asarray(full["label"]), predict(list(full["text"]))))

    baselines = Path(args.baselines_dir)
    for name, path, load, form in (
            ("tfidf_lr", baselines / "tfidf_lr.parquet", load_baseline, "scikit-learn"),
            ("nb_lr", baselines / "nb_lr.parquet", load_baseline, "scikit-learn"),
            ("fasttext", baselines / "fasttext.bin", load_fasttext, "fastText")):
        baseline = load(path)
        speed, probs = measure(lambda batch, model=baseline: model.predict_proba(batch)[:, 1],
                               texts, args.batch_size, args.latency_reviews)
        add(name, {**speed, "form": form, "size_mb": round(path.stat().st_size / 1e6, 2),
                   "sample_accuracy": accuracy(labels, probs)},
            metrics[name]["accuracy"])

    # The shipped student: eager PyTorch and every exported form.
    model, _ = load_checkpoint(args.checkpoint)
    tokenizer = load_tokenizer(args.tokenizer)
    speed, probs = measure(_torch_predictor(model, tokenizer), texts, args.batch_size,
                           args.latency_reviews)
    shipped = {"torch": {**speed, "size_mb": round(Path(args.checkpoint).stat().st_size / 1e6, 2),
                         "sample_accuracy": accuracy(labels, probs)}}
    export = Path(args.export_dir)
    files = json.loads((export / "metadata.json").read_text())["files"]
    shipped.update(_measure_forms(export, {form: export / name for form, name in files.items()},
                                  texts, labels, args))
    best_form, best = _fastest(shipped)
    add("student", {**best, "form": best_form, "forms": shipped,
                    "vocab_max_len": max_len_of(tokenizer), "params": count_parameters(model)},
        metrics["student"]["accuracy"])

    # One student of every arch and shape of the sweep, timed with fresh weights and with its
    # own tokenizer (its vocab.max_len decides how much of a review it reads).
    for entry in sweep["frontier"]:
        print(f"{entry['name']}:", flush=True)
        shape = parse_params({**params.to_dict(), **entry["params"]})  # its arch and shape
        with tempfile.TemporaryDirectory() as folder:
            tokenizer_path = Path(folder) / "tokenizer.json"
            own_tokenizer = make_tokenizer(shape.vocab, params.teacher.path, args.train)
            own_tokenizer.save(str(tokenizer_path))  # export_all copies it beside the model
            student = build_student(shape, own_tokenizer).eval()
            paths = export_all(student, tokenizer_path, Path(folder) / "export", {})
            forms = _measure_forms(Path(folder) / "export", paths, texts, None, args)
        form, row = _fastest(forms)
        add(entry["name"], {**row, "form": form, "forms": forms,  # its config: sweep.json
                            "vocab_max_len": max_len_of(own_tokenizer),
                            "params": count_parameters(student)},
            entry["student"]["test_accuracy"])

    teacher_speed = results["teacher"]["reviews_per_s"]
    fastest_teacher = max(row["reviews_per_s"] for row in frontier
                          if row["model"].startswith("teacher"))
    for row in frontier:
        row["x_teacher"] = round(row["reviews_per_s"] / teacher_speed, 2)
        row["x_fastest_teacher"] = round(row["reviews_per_s"] / fastest_teacher, 2)
    results["speedup_vs_teacher"] = results["student"]["reviews_per_s"] / teacher_speed
    results["speedup_vs_fastest_teacher"] = results["student"]["reviews_per_s"] / fastest_teacher
    results["api"] = load_test(export, texts, clients=args.clients,
                               requests_per_client=args.requests_per_client)
    print("api", results["api"], flush=True)
    for path, content in ((args.out, results), (args.frontier, frontier)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(content, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", default="data/prepared/test.parquet")
    parser.add_argument("--checkpoint", default="models/student/best.safetensors")
    parser.add_argument("--tokenizer", default="data/vocab/tokenizer.json")
    parser.add_argument("--train", default="data/prepared/train.parquet")  # vocab.source words
    parser.add_argument("--export-dir", default="models/export")
    parser.add_argument("--baselines-dir", default="models/baselines")
    parser.add_argument("--metrics", default="reports/metrics.json")
    parser.add_argument("--sweep", default="reports/sweep.json")
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-reviews", type=int, default=500)
    parser.add_argument("--teacher-latency-reviews", type=int, default=100)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=100)
    parser.add_argument("--out", default="reports/benchmark.json")
    parser.add_argument("--frontier", default="reports/frontier.json")
    main(parser.parse_args())
