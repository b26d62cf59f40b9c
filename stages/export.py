"""Stage `export`: the best student as ONNX and ONNX int8, and TorchScript (fp32, bf16) where
it compiles, each runnable alone; the ONNX form is added to the pipeline's MLflow run as the
pyfunc model `student`.

Measured here, on the test split: every form's largest probability gap to the eager model and
its accuracy (the int8 and bf16 drops are part of the metrics).
"""

import argparse
import json
from pathlib import Path

import numpy as np

from kd import tracking
from kd.data.labels import read_label_names
from kd.data.splits import load_split
from kd.errors import exit_on_error
from kd.evaluation.metrics import accuracy, sigmoid
from kd.params import load_params
from kd.serving.export import export_all
from kd.serving.mlflow_student import log_student_model
from kd.serving.runtime import load_student
from kd.student.inference import predict_logits
from kd.student.models import arch_of, load_checkpoint
from kd.text import encode, load_tokenizer


@exit_on_error
def main(checkpoint: str, tokenizer_path: str, test_path: str, source_path: str, out_dir: str,
         metrics_path: str) -> None:
    labels = read_label_names(source_path)  # the data's names of labels 0 and 1
    model, meta = load_checkpoint(checkpoint)
    paths = export_all(model, tokenizer_path, out_dir, labels=labels, meta={
        "source_checkpoint": checkpoint, "arch": arch_of(model),
        "teacher_sha256": meta.get("teacher_sha256"),
        "soft_labels": {"device": meta.get("soft_labels_device"),
                        "precision": meta.get("soft_labels_precision")},
        "tokenizer_sha256": meta.get("tokenizer_sha256"), "val_accuracy": meta.get("val_accuracy")})
    test = load_split(test_path)
    texts, labels = list(test["text"]), np.asarray(test["label"])
    input_ids = encode(load_tokenizer(tokenizer_path), texts)
    eager = sigmoid(predict_logits(model, input_ids))
    probs = {"eager": eager}
    for form in paths:
        student = load_student(out_dir, form=form, threads=2)
        probs[form] = np.concatenate([student.positive_probs(texts[start:start + 256])
                                      for start in range(0, len(texts), 256)])
    accuracies = {form: accuracy(labels, p) for form, p in probs.items()}
    metrics = {
        "test_reviews": len(texts),
        "max_prob_diff": {form: float(np.abs(probs[form] - eager).max()) for form in paths},
        "accuracy": accuracies,
        "accuracy_drop": {form: accuracies["eager"] - accuracies[form] for form in paths},
        "size_mb": {form: round(path.stat().st_size / 1e6, 2) for form, path in paths.items()},
    }
    Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n")
    (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    with tracking.pipeline_run(load_params().to_dict()) as run:
        log_student_model(run, out_dir)
        print(f"MLflow run {run.info.run_id}: model `student` logged (see `mlflow ui`)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default="models/student/best.safetensors")
    parser.add_argument("--tokenizer", default="data/vocab/tokenizer.json")
    parser.add_argument("--test", default="data/prepared/test.parquet")
    parser.add_argument("--source", default="data/prepared/source.json",
                        help="written by prepare: the names of labels 0 and 1")
    parser.add_argument("--out-dir", default="models/export")
    parser.add_argument("--metrics", default="reports/export.json")
    args = parser.parse_args()
    main(args.checkpoint, args.tokenizer, args.test, args.source, args.out_dir, args.metrics)
