"""Stage `evaluate`: teacher, students and baselines on the test split -> metrics and plots,
added to the pipeline's MLflow run."""

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from kd import tracking
from kd.data.splits import require_two_labels
from kd.errors import PipelineError, exit_on_error
from kd.evaluation.metrics import (
    agreement,
    classification_metrics,
    confusion_rows,
    model_footprint,
    reliability_rows,
    roc_rows,
    sigmoid,
)
from kd.params import load_params
from kd.reports import write_csv
from kd.student.examples import file_sha256, load_examples
from kd.student.inference import predict_logits
from kd.student.losses import teacher_margin
from kd.student.models import count_parameters, load_checkpoint
from kd.text import load_tokenizer


def _load_student(checkpoint: str, tokenizer_sha256: str):
    """The checkpoint's model, and its metadata with its parameter count and size on disk.

    Raises:
        PipelineError: the checkpoint was trained with another tokenizer.
    """
    model, meta = load_checkpoint(checkpoint)
    if meta.get("tokenizer_sha256") != tokenizer_sha256:
        raise PipelineError(f"{checkpoint} was trained with another tokenizer than the current "
                            "one; run `dvc repro`")
    return model, {**meta, "n_params": count_parameters(model),
                   "size_mb": round(Path(checkpoint).stat().st_size / 1e6, 2)}


def _baseline_probs(path: str, stage: str, ids: list[str],
                    data_fingerprint: str) -> tuple[np.ndarray, dict]:
    if not Path(path).is_file():
        raise PipelineError(f"{path} not found: run `dvc repro {stage}`")
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"kd.baseline"])
    if meta["data_fingerprint"] != data_fingerprint:
        raise PipelineError(f"{path} scored other test reviews than the prepared split; "
                            f"run `dvc repro {stage}`")
    prob_of = dict(zip(table.column("id").to_pylist(), table.column("positive_prob").to_pylist(),
                       strict=True))
    return np.array([prob_of[review_id] for review_id in ids]), meta


@exit_on_error
def main(args: argparse.Namespace) -> None:
    params = load_params()
    require_two_labels(Path(args.data_dir) / "test.parquet", "evaluate")
    tokenizer_sha256 = file_sha256(args.tokenizer)
    student_model, student = _load_student(args.checkpoint, tokenizer_sha256)
    no_kd_model, no_kd = _load_student(args.no_kd_checkpoint, tokenizer_sha256)
    # The test logits must come from the teacher the student learned from.
    test, test_fingerprint = load_examples("test", load_tokenizer(args.tokenizer), args.data_dir,
                                           args.teacher_dir, student["teacher_sha256"])
    labels = test.labels
    print(f"soft labels made on {student.get('soft_labels_device')} in "
          f"{student.get('soft_labels_precision')} (teacher "
          f"{student['teacher_sha256'][:12]}, {student.get('teacher_truncation')})")
    teacher_probs = sigmoid(teacher_margin(test.teacher_logits))
    student_probs = sigmoid(predict_logits(student_model, test.input_ids))
    no_kd_probs = sigmoid(predict_logits(no_kd_model, test.input_ids))
    tfidf_probs, tfidf = _baseline_probs(args.tfidf, "baseline@tfidf_lr", test.ids,
                                         test_fingerprint)
    nb_probs, nb = _baseline_probs(args.nb, "baseline@nb_lr", test.ids, test_fingerprint)
    fasttext_probs, fasttext = _baseline_probs(args.fasttext, "baseline@fasttext", test.ids,
                                               test_fingerprint)

    rows = {
        "teacher": model_footprint(params.teacher.path),
        "student": _student_row(student, student_probs, teacher_probs),
        "student_no_kd": _student_row(no_kd, no_kd_probs, teacher_probs),
        "tfidf_lr": {"params": tfidf["features"] + 1, "val_accuracy": tfidf["val_accuracy"]},
        "nb_lr": {"params": nb["features"] + 1, "val_accuracy": nb["val_accuracy"]},
        "fasttext": {"params": fasttext["params"], "val_accuracy": fasttext["val_accuracy"]},
    }
    probs = {"teacher": teacher_probs, "student": student_probs, "student_no_kd": no_kd_probs,
             "tfidf_lr": tfidf_probs, "nb_lr": nb_probs, "fasttext": fasttext_probs}
    metrics = {"test_reviews": len(test)}
    for name, model_probs in probs.items():
        metrics[name] = {**classification_metrics(labels, model_probs), **rows[name]}
    metrics["kd_gain"] = metrics["student"]["accuracy"] - metrics["student_no_kd"]["accuracy"]
    metrics["teacher_retention"] = metrics["student"]["accuracy"] / metrics["teacher"]["accuracy"]

    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(metrics, indent=2) + "\n")
    plots = Path(args.plots_dir)
    for name, model_probs in probs.items():
        write_csv(plots / f"roc_{name}.csv", roc_rows(labels, model_probs))
        write_csv(plots / f"reliability_{name}.csv", reliability_rows(labels, model_probs))
    for name in ("teacher", "student"):
        write_csv(plots / f"confusion_{name}.csv", confusion_rows(labels, probs[name]))
    print(json.dumps(metrics, indent=2))

    with tracking.pipeline_run(params.to_dict()) as run:
        tracking.log_results(run, metrics, artifacts=[args.checkpoint, args.tokenizer,
                                                      args.metrics])
        print(f"MLflow run {run.info.run_id} (see `mlflow ui`)")


def _student_row(student: dict, probs: np.ndarray, teacher_probs: np.ndarray) -> dict:
    return {"agreement_with_teacher": agreement(probs, teacher_probs),
            "val_accuracy": student["val_accuracy"], "params": student["n_params"],
            "size_mb": student["size_mb"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--teacher-dir", default="data/teacher")
    parser.add_argument("--tokenizer", default="data/vocab/tokenizer.json")
    parser.add_argument("--checkpoint", default="models/student/best.safetensors")
    parser.add_argument("--no-kd-checkpoint", default="models/student_no_kd/best.safetensors")
    parser.add_argument("--tfidf", default="data/baselines/tfidf_lr.parquet")
    parser.add_argument("--nb", default="data/baselines/nb_lr.parquet")
    parser.add_argument("--fasttext", default="data/baselines/fasttext.parquet")
    parser.add_argument("--metrics", default="reports/metrics.json")
    parser.add_argument("--plots-dir", default="reports/plots")
    main(parser.parse_args())
