"""The real stages, run by DVC on tiny synthetic reviews with a tiny random BERT teacher."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import write_tarball

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
       "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def run(root: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=root, env=ENV, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def write_params(root: Path, **top_level) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # Pinned, not taken from the committed params: the tests below change exactly these.
    params.update({"epochs": 2, "alpha": 0.3, "temperature": 1.0, "use_unsup": False,
                   **top_level})
    params["vocab"].update(max_size=200, min_freq=1, max_len=40)
    params["teacher"].update(max_len=32, head_tokens=8, batch_size=16)
    params["student"].update(embed_dim=16, num_filters=8)
    params["train"].update(batch_size=16)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_teacher) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "stages", root / "stages",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    write_params(root)
    write_tarball(root / "data/raw/aclImdb_v1.tar.gz", reviews_per_folder=30, unsup=20)
    shutil.copytree(tiny_teacher, root / "models/teacher")
    run(root, "git", "init", "-q")
    run(root, "dvc", "init", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "tiny project")
    # Every test starts from a reproduced, committed project, so any one of them runs alone.
    run(root, "dvc", "repro")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "baseline run")
    return root


def mlflow_runs(root: Path) -> list[tuple[str, str]]:
    """(run id, dvc_exp_name tag) of every run in the project's MLflow store."""
    with sqlite3.connect(root / "mlflow.db") as db:
        return db.execute("SELECT runs.run_uuid, tags.value FROM runs JOIN tags "
                          "ON tags.run_uuid = runs.run_uuid AND tags.key = 'dvc_exp_name' "
                          "ORDER BY runs.start_time").fetchall()


def test_repro_runs_every_stage_and_records_the_run(project):
    for split in ("train", "val", "test", "unsup"):
        assert (project / f"data/prepared/{split}.parquet").is_file()
        assert (project / f"data/teacher/{split}.parquet").is_file()
    assert (project / "data/vocab/tokenizer.json").is_file()
    for student in ("student", "student_no_kd"):
        assert {path.name for path in (project / "models" / student).iterdir()} == {
            "epoch_1.safetensors", "epoch_2.safetensors", "best.safetensors"}
    assert (project / "data/baselines/tfidf_lr.parquet").is_file()
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["test_reviews"] == 60
    for model in ("teacher", "student", "student_no_kd", "tfidf_lr"):
        assert {"accuracy", "f1", "roc_auc", "ece", "params"} <= set(metrics[model])
        assert 0 <= metrics[model]["accuracy"] <= 1
    for model in ("teacher", "student", "student_no_kd"):
        assert metrics[model]["size_mb"] > 0
    assert metrics["student"]["params"] == metrics["student_no_kd"]["params"] > 0
    assert isinstance(metrics["student"]["params"], int)
    assert 0 <= metrics["student"]["agreement_with_teacher"] <= 1
    assert metrics["kd_gain"] == pytest.approx(
        metrics["student"]["accuracy"] - metrics["student_no_kd"]["accuracy"])
    assert metrics["teacher_retention"] == pytest.approx(
        metrics["student"]["accuracy"] / metrics["teacher"]["accuracy"])
    history = (project / "reports/training.csv").read_text().splitlines()
    assert history[0] == "epoch,train_loss,val_loss,val_accuracy" and len(history) == 3
    for name in ("roc_student", "roc_teacher", "roc_tfidf_lr", "reliability_student_no_kd",
                 "confusion_student", "confusion_teacher"):
        assert (project / f"reports/plots/{name}.csv").is_file()
    export = json.loads((project / "reports/export.json").read_text())
    assert max(export["max_prob_diff"]["onnx"], export["max_prob_diff"]["torchscript"]) < 1e-4
    assert export["accuracy"]["onnx"] == metrics["student"]["accuracy"]
    assert {"int8_accuracy_drop", "bf16_accuracy_drop"} <= set(export)
    benchmark = json.loads((project / "reports/benchmark.json").read_text())
    for model in ("teacher", "student_torch", "student_bf16", "student_onnx", "student_int8"):
        assert {"reviews_per_s", "p50_ms", "p99_ms", "size_mb", "accuracy"} <= set(
            benchmark[model])
    assert benchmark["api"]["errors"] == 0 and benchmark["api"]["clients"] == 16
    assert benchmark["speedup_vs_teacher"] > 0
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert {"prepare", "vocab", "teacher_infer@test", "teacher_infer@unsup", "distill",
            "distill_no_kd", "baseline_tfidf", "evaluate", "export", "benchmark"} <= set(
        lock["stages"])
    assert len(mlflow_runs(project)) == 1
    (logged_model,) = project.glob("mlartifacts/**/MLmodel")  # the student, as a pyfunc model
    assert "signature" in logged_model.read_text()
    assert "dvc.yaml" not in run(project, "dvc", "status").stdout  # everything up to date


def test_speed_curve_times_every_form_of_each_shape(project, tmp_path):
    out = tmp_path / "curve.json"
    run(project, sys.executable, "stages/speed_curve.py", "--shapes", "16x8", "8x4",
        "--reviews", "20", "--latency-reviews", "5", "--out", str(out))
    *rows, tokenizer = json.loads(out.read_text())
    assert [(row["embed_dim"], row["form"]) for row in rows] == [
        (16, "bf16"), (16, "onnx"), (16, "int8"), (8, "bf16"), (8, "onnx"), (8, "int8")]
    assert all(row["reviews_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0 for row in rows)
    assert tokenizer["form"] == "tokenizer only" and tokenizer["reviews_per_s"] > 0


def test_exp_run_sets_alpha_and_metrics_diff_compares(project):
    runs_before = len(mlflow_runs(project))
    teacher_logits = (project / "data/teacher/train.parquet").stat().st_mtime_ns
    result = run(project, "dvc", "exp", "run", "-S", "alpha=0.7")
    assert "Running stage 'teacher_infer" not in result.stdout  # student params only
    assert (project / "data/teacher/train.parquet").stat().st_mtime_ns == teacher_logits
    assert yaml.safe_load((project / "params.yaml").read_text())["alpha"] == 0.7

    diff = json.loads(run(project, "dvc", "metrics", "diff", "--all", "--json").stdout)
    changes = diff["reports/metrics.json"]
    assert {"student.accuracy", "teacher.accuracy", "test_reviews"} <= set(changes)
    assert changes["test_reviews"]["new"] == 60

    runs = mlflow_runs(project)
    assert len(runs) == runs_before + 1
    experiments = json.loads(run(project, "dvc", "exp", "show", "--json").stdout)
    names = {exp["name"] for entry in experiments for exp in entry.get("experiments") or []}
    assert runs[-1][1] in names


def test_transfer_set_and_temperature_retrain_only_the_student(project):
    result = run(project, "dvc", "exp", "run", "-S", "use_unsup=true", "-S", "temperature=2")
    assert "Running stage 'distill'" in result.stdout
    for stage in ("teacher_infer", "distill_no_kd", "baseline_tfidf"):
        assert f"Running stage '{stage}" not in result.stdout
    assert "74 training reviews (with the unlabelled transfer set)" in result.stdout


def test_bad_params_stop_the_run_and_keep_the_teacher_logits(project):
    before = {path: path.stat().st_mtime_ns for path in (project / "data/teacher").iterdir()}
    write_params(project, alpha=1.5)
    result = run(project, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "`alpha` = 1.5 is not allowed; it must be a number in [0, 1]" in result.stderr
    after = {path: path.stat().st_mtime_ns for path in (project / "data/teacher").iterdir()}
    assert after == before
    # DVC clears the failing stage's own outputs before it starts; its cache still has them.
    run(project, "dvc", "checkout")
    assert (project / "models/student/best.safetensors").is_file()
