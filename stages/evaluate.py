"""Stage `evaluate`: teacher and student on the test split -> metrics, plots and an MLflow run."""

import argparse
import csv
import json
from pathlib import Path

from kd.errors import PipelineError, exit_on_error
from kd.examples import file_sha256, load_examples
from kd.losses import teacher_margin
from kd.metrics import agreement, classification_metrics, confusion_rows, roc_rows, sigmoid
from kd.model import count_parameters, load_checkpoint, safetensors_parameters
from kd.params import load_params
from kd.text import load_tokenizer
from kd.tracking import log_pipeline_run
from kd.train import predict_logits


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@exit_on_error
def main(data_dir: str, teacher_dir: str, tokenizer_path: str, checkpoint: str,
         history_path: str, metrics_path: str, plots_dir: str) -> None:
    params = load_params()
    model, meta = load_checkpoint(checkpoint)
    if meta.get("tokenizer_sha256") != file_sha256(tokenizer_path):
        raise PipelineError(f"{checkpoint} was trained with another tokenizer than "
                            f"{tokenizer_path}; run `dvc repro distill`")
    test, _ = load_examples("test", load_tokenizer(tokenizer_path), data_dir, teacher_dir,
                            teacher_sha256=meta["teacher_sha256"])
    labels = test.labels
    teacher_probs = sigmoid(teacher_margin(test.teacher_logits))
    student_probs = sigmoid(predict_logits(model, test.input_ids))

    teacher_path = Path(params.teacher.path)
    teacher_weights = sorted(teacher_path.glob("*.safetensors"))
    metrics = {
        "test_reviews": len(test),
        "teacher": {
            **classification_metrics(labels, teacher_probs),
            "params": sum(safetensors_parameters(path) for path in teacher_weights),
            "size_mb": round(sum(path.stat().st_size for path in teacher_weights) / 1e6, 2),
        },
        "student": {
            **classification_metrics(labels, student_probs),
            "agreement_with_teacher": agreement(student_probs, teacher_probs),
            "params": count_parameters(model),
            "size_mb": round(Path(checkpoint).stat().st_size / 1e6, 2),
        },
    }
    Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n")
    plots = Path(plots_dir)
    for name, probs in (("teacher", teacher_probs), ("student", student_probs)):
        _write_csv(plots / f"roc_{name}.csv", roc_rows(labels, probs))
        _write_csv(plots / f"confusion_{name}.csv", confusion_rows(labels, probs))
    print(json.dumps(metrics, indent=2))

    with open(history_path) as handle:
        history = [{key: float(value) for key, value in row.items()}
                   for row in csv.DictReader(handle)]
    for row in history:
        row["epoch"] = int(row["epoch"])
    run_id = log_pipeline_run(params.to_dict(), history, metrics,
                              artifacts=[checkpoint, tokenizer_path, metrics_path])
    print(f"MLflow run {run_id} (see `mlflow ui`)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--teacher-dir", default="data/teacher")
    parser.add_argument("--tokenizer", default="data/vocab/tokenizer.json")
    parser.add_argument("--checkpoint", default="models/student/best.safetensors")
    parser.add_argument("--history", default="reports/training.csv")
    parser.add_argument("--metrics", default="reports/metrics.json")
    parser.add_argument("--plots-dir", default="reports/plots")
    args = parser.parse_args()
    main(args.data_dir, args.teacher_dir, args.tokenizer, args.checkpoint, args.history,
         args.metrics, args.plots_dir)
