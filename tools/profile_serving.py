"""Where a served student's time goes: tokenization, grouping and padding, the model.

Times each part of `ExportedStudent.positive_probs` over the benchmark's test sample at batch
64, one form of an export, on an idle machine (numbers from a loaded one mean little):

    python tools/profile_serving.py                       # models/export, every form
    python tools/profile_serving.py --form onnx --threads 1
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from kd.data.splits import load_split
from kd.serving.runtime import FILES, length_groups, load_student


def profile(student, texts: list[str], batch_size: int, repeats: int) -> dict:
    """Milliseconds a review for each part, the best of `repeats` passes over `texts`."""
    batches = [texts[start:start + batch_size] for start in range(0, len(texts), batch_size)]
    best = {"tokenize": np.inf, "group_and_pad": np.inf, "model": np.inf, "total": np.inf}
    for _ in range(repeats):
        parts = dict.fromkeys(best, 0.0)
        for batch in batches:
            started = time.perf_counter()
            ids, offsets = student.encoder.ragged(batch)
            tokenized = time.perf_counter()
            groups = length_groups(ids, offsets, student.metadata["min_len"],
                                   student.length_multiple)
            grouped = time.perf_counter()
            scored = student.pool.map if student.pool else map
            list(scored(lambda group: student.logits(group[1]), groups))
            done = time.perf_counter()
            parts["tokenize"] += tokenized - started
            parts["group_and_pad"] += grouped - tokenized
            parts["model"] += done - grouped
            parts["total"] += done - started
        best = {key: min(best[key], parts[key]) for key in best}
    return {key: round(1000 * value / len(texts), 4) for key, value in best.items()}


def main(args: argparse.Namespace) -> None:
    test = load_split(args.test).shuffle(seed=args.seed).select(range(args.reviews))
    texts = list(test["text"])
    files = json.loads((Path(args.export_dir) / "metadata.json").read_text())["files"]
    forms = [args.form] if args.form else [form for form in FILES if form in files]
    for form in forms:
        student = load_student(args.export_dir, form=form, threads=args.threads)
        student.positive_probs(texts[:args.batch_size])  # warm-up
        print(json.dumps({"form": form, "threads": args.threads,
                          "ms_a_review": profile(student, texts, args.batch_size, args.repeats)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export-dir", default="models/export")
    parser.add_argument("--test", default="data/prepared/test.parquet")
    parser.add_argument("--form", choices=list(FILES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=13)  # params.yaml's seed: the same sample
    main(parser.parse_args())
