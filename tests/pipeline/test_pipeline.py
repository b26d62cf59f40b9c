"""The real stages, run by DVC on tiny synthetic reviews with a tiny random BERT teacher."""

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import ENV, REPO, run, write_tarball
from kd.student.models import Ensemble, load_checkpoint
from kd.teacher.scoring import read_soft_label_meta, teacher_sha256


def write_params(root: Path, **top_level) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # Pinned, not taken from the committed params: the tests below change exactly these.
    params.update({"epochs": 2, "alpha": 0.3, "temperature": 1.0, "use_unsup": False,
                   "augment_size": 20, **top_level})
    params["vocab"].update(max_size=200, min_freq=1, max_len=40)
    params["teacher"].update(max_len=32, head_tokens=8, batch_size=16)
    params["student"].update(embed_dim=16, num_filters=8, ngram_order=2, ngram_buckets=64)
    params["finetune"].update(epochs=1, batch_size=8)
    params["train"].update(batch_size=16)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# The students of the tiny frontier, one of each arch (accuracies made up: the benchmark only
# carries them into its table).
TINY_SWEEP = {"frontier": [
    {"name": name, "params": {"kernel_sizes": [3, 4, 5], "student": student,
                              "vocab": {"source": "teacher", "max_len": max_len}},
     "student": {"test_accuracy": {"mean": 0.5, "std": 0.01}}}
    for name, student, max_len in [
        ("textcnn-tiny", {"arch": "textcnn", "embed_dim": 16, "num_filters": 8,
                          "ngram_order": 2, "ngram_buckets": 64}, 40),
        ("bilstm-tiny", {"arch": "bilstm", "embed_dim": 16, "hidden_size": 8}, 64),
        ("transformer-tiny", {"arch": "transformer", "layers": 1, "max_len": 16,
                              "head_tokens": 4}, 40),
    ]]}


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_teacher, tiny_encoder) -> Path:
    root = tmp_path_factory.mktemp("project")
    for code in ("stages", "kd"):  # the stages run `python -m stages.<name>`: this copy's kd
        shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "teachers").mkdir()
    shutil.copy(REPO / "teachers/dvc.yaml", root / "teachers/dvc.yaml")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    write_params(root)
    (root / "reports").mkdir()
    (root / "reports/sweep.json").write_text(json.dumps(TINY_SWEEP))
    write_tarball(root / "data/raw/aclImdb_v1.tar.gz", reviews_per_folder=30, unsup=20)
    shutil.copytree(tiny_teacher, root / "models/teacher")
    shutil.copytree(tiny_encoder, root / "models/base-encoder")
    run(root, "git", "init", "-q")
    run(root, "dvc", "init", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "tiny project")
    # Every test starts from a reproduced, committed project, so any one of them runs alone.
    run(root, "dvc", "repro")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "baseline run")
    return root


@pytest.fixture
def fresh(project) -> Path:
    """The project as committed after its first `dvc repro`, whatever an earlier test did."""
    run(project, "git", "reset", "-q", "--hard")
    # --allow-missing: teachers/dvc.yaml's output has no hash until that stage runs, and a bare
    # checkout then fails on it (after restoring everything else).
    run(project, "dvc", "checkout", "-q", "--force", "--allow-missing")
    return project


def mlflow_runs(root: Path) -> list[tuple[str, str]]:
    """(run id, dvc_exp_name tag) of every run in the project's MLflow store."""
    with sqlite3.connect(root / "mlflow.db") as db:
        return db.execute("SELECT runs.run_uuid, tags.value FROM runs JOIN tags "
                          "ON tags.run_uuid = runs.run_uuid AND tags.key = 'dvc_exp_name' "
                          "ORDER BY runs.start_time").fetchall()


def mlflow_metric_steps(root: Path, run_id: str) -> dict[str, list[int]]:
    with sqlite3.connect(root / "mlflow.db") as db:
        rows = db.execute("SELECT key, step FROM metrics WHERE run_uuid = ? ORDER BY step",
                          (run_id,)).fetchall()
    steps: dict[str, list[int]] = {}
    for key, step in rows:
        steps.setdefault(key, []).append(step)
    return steps


def lock_outs(root: Path) -> dict[str, str]:
    """md5 of every stage output in dvc.lock, by path."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", [])}


def test_repro_runs_every_stage_and_records_the_run(fresh):
    project = fresh
    for split in ("train", "val", "test", "unsup", "augment"):
        assert (project / f"data/prepared/{split}.parquet").is_file()
        assert (project / f"data/teacher/{split}.parquet").is_file()
    assert (project / "data/vocab/tokenizer.json").is_file()
    for student in ("student", "student_no_kd"):
        assert {path.name for path in (project / "models" / student).iterdir()} == {
            "epoch_1.safetensors", "epoch_2.safetensors", "best.safetensors"}
    assert not list((project / ".dvc/tmp/training").iterdir())  # work folders cleaned up
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["test_reviews"] == 60
    for model in ("teacher", "student", "student_no_kd", "tfidf_lr", "nb_lr"):
        assert {"accuracy", "f1", "roc_auc", "ece", "params"} <= set(metrics[model])
        assert 0 <= metrics[model]["accuracy"] <= 1
    for model in ("student", "student_no_kd", "tfidf_lr", "nb_lr"):
        assert 0 <= metrics[model]["val_accuracy"] <= 1
    assert metrics["student"]["params"] == metrics["student_no_kd"]["params"] > 0
    assert 0 <= metrics["student"]["agreement_with_teacher"] <= 1
    assert metrics["kd_gain"] == pytest.approx(
        metrics["student"]["accuracy"] - metrics["student_no_kd"]["accuracy"])
    assert metrics["teacher_retention"] == pytest.approx(
        metrics["student"]["accuracy"] / metrics["teacher"]["accuracy"])
    history = (project / "reports/training.csv").read_text().splitlines()
    assert history[0] == "epoch,train_loss,val_loss,val_accuracy" and len(history) == 3
    for name in ("roc_student", "roc_teacher", "roc_tfidf_lr", "roc_nb_lr",
                 "reliability_student_no_kd", "confusion_student", "confusion_teacher"):
        assert (project / f"reports/plots/{name}.csv").is_file()
    export = json.loads((project / "reports/export.json").read_text())
    assert max(export["max_prob_diff"]["onnx"], export["max_prob_diff"]["torchscript"]) < 1e-4
    assert export["accuracy"]["onnx"] == metrics["student"]["accuracy"]
    assert set(export["accuracy_drop"]) == {"torchscript", "bf16", "onnx", "int8"}
    exported = json.loads((project / "models/export/metadata.json").read_text())
    assert exported["arch"] == "textcnn"
    assert exported["soft_labels"]["device"] == "cpu"  # what made the soft labels, for /model
    assert exported["soft_labels"]["precision"] in ("bf16", "fp32")

    benchmark = json.loads((project / "reports/benchmark.json").read_text())
    frontier = json.loads((project / "reports/frontier.json").read_text())
    names = ["teacher", "teacher_int8", "tfidf_lr", "nb_lr", "fasttext", "student",
             "textcnn-tiny", "bilstm-tiny", "transformer-tiny"]
    assert [row["model"] for row in frontier] == names
    # Every row against the bf16 teacher and against the fastest teacher form.
    fastest = max(row["reviews_per_s"] for row in frontier[:2])
    for row in frontier:
        # (the frontier's speeds are rounded to 0.1 reviews/s, the ratios made before that)
        assert row["x_teacher"] == pytest.approx(
            row["reviews_per_s"] / frontier[0]["reviews_per_s"], rel=1e-3, abs=0.01)
        assert row["x_fastest_teacher"] == pytest.approx(row["reviews_per_s"] / fastest,
                                                         rel=1e-3, abs=0.01)
    assert 0 <= frontier[1]["accuracy"] <= 1  # the int8 teacher, scored on the whole test split
    for row in frontier:
        assert row["reviews_per_s"] > 0 and row["p50_ms"] > 0 and row["size_mb"] > 0
    assert benchmark["student"]["forms"].keys() == {"torch", "torchscript", "bf16", "onnx",
                                                   "int8"}
    assert benchmark["transformer-tiny"]["forms"].keys() == {"onnx", "int8"}
    # Each sweep row is timed reading as much of a review as its own vocab.max_len lets it (the
    # project's is 40).
    assert benchmark["student"]["vocab_max_len"] == benchmark["textcnn-tiny"]["vocab_max_len"] == 40
    assert benchmark["bilstm-tiny"]["vocab_max_len"] == 64
    # Only a trained student has an accuracy on the sample; the sweep's rows have fresh weights.
    assert all("sample_accuracy" in row for row in benchmark["student"]["forms"].values())
    assert not any("sample_accuracy" in row for row in benchmark["bilstm-tiny"]["forms"].values())
    assert frontier[0]["accuracy"] == metrics["teacher"]["accuracy"]
    assert frontier[-1]["accuracy"] == 0.5 and frontier[-1]["accuracy_std"] == 0.01
    assert benchmark["api"]["errors"] == 0 and benchmark["api"]["clients"] == 16
    assert benchmark["speedup_vs_teacher"] > 0

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert {"prepare", "augment", "vocab", "teacher_infer@test", "teacher_infer@augment",
            "distill", "distill_no_kd", "baseline@tfidf_lr", "baseline@nb_lr",
            "baseline@fasttext", "evaluate", "export", "benchmark"} <= set(lock["stages"])
    assert "outs" not in lock["stages"]["benchmark"]  # timings are never hashed
    # One MLflow run for the whole execution: the epochs of both trainings as they ended,
    # the test metrics, and the exported student as a model.
    ((run_id, exp_name),) = mlflow_runs(project)
    assert exp_name == "workspace"
    steps = mlflow_metric_steps(project, run_id)
    assert steps["val_accuracy"] == [1, 2] and steps["no_kd.train_loss"] == [1, 2]
    assert "student.accuracy" in steps and "nb_lr.accuracy" in steps
    (logged_model,) = project.glob("mlartifacts/**/MLmodel")
    assert "signature" in logged_model.read_text()
    # Everything up to date but the teacher-making stage of teachers/dvc.yaml, which a plain
    # `dvc repro` never runs (no stage of dvc.yaml depends on it with the default teacher.path).
    stages = [line for line in run(project, "dvc", "status").stdout.splitlines()
              if line.endswith(":") and not line.startswith(("\t", " "))]
    assert stages == ["teachers/dvc.yaml:finetune:"]
    assert not (project / "models/teacher-finetuned").exists()
    assert not (project / "teachers/dvc.lock").exists()


def test_every_stage_reruns_to_the_same_bytes(fresh):
    """No output dvc.lock hashes holds a time, a run id or a path: `dvc repro -f` (every stage,
    the teacher, both trainings and the exports included) gives the same hashes."""
    before = lock_outs(fresh)
    metrics = (fresh / "reports/metrics.json").read_bytes()
    run(fresh, "dvc", "repro", "-f")
    assert lock_outs(fresh) == before
    assert (fresh / "reports/metrics.json").read_bytes() == metrics


def test_an_interrupted_training_resumes_to_the_same_bytes(fresh):
    write_params(fresh, epochs=12)
    params = yaml.safe_load((fresh / "params.yaml").read_text())
    params["train"]["batch_size"] = 2  # slow epochs, so the kill lands in the middle
    (fresh / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    training = subprocess.Popen([sys.executable, "-m", "stages.distill"], cwd=fresh, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(fresh.glob(".dvc/tmp/training/*/training_state.safetensors")):
        assert training.poll() is None and time.monotonic() < deadline, "no epoch ended"
        time.sleep(0.01)
    training.kill()  # SIGKILL mid-training: no clean-up runs
    training.wait()
    (state,) = fresh.glob(".dvc/tmp/training/*/training_state.safetensors")
    resumed = run(fresh, "dvc", "repro", "distill").stdout
    assert "resuming after epoch" in resumed
    assert not state.exists()  # the work folder goes once the training is done
    outputs = {path.name: path.read_bytes() for path in (fresh / "models/student").iterdir()}
    assert len(outputs) == 13  # 12 epochs and the best
    run(fresh, "dvc", "repro", "-f", "-s", "distill")
    assert {path.name: path.read_bytes()
            for path in (fresh / "models/student").iterdir()} == outputs


def test_no_test_review_enters_a_transfer_set(fresh):
    def ids(name: str, column: str = "id") -> set[str]:
        return set(pq.read_table(fresh / f"data/prepared/{name}.parquet").column(column)
                   .to_pylist())

    test, val, train, unsup = ids("test"), ids("val"), ids("train"), ids("unsup")
    sources = ids("augment", "source_id")
    assert sources and sources <= train | unsup
    assert not sources & (test | val)
    assert not unsup & test and not train & test
    _, meta = load_checkpoint(fresh / "models/student/best.safetensors")
    assert meta["transfer_set"] == ["augment"]


def test_exp_run_sets_alpha_and_metrics_diff_compares(fresh):
    project = fresh
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


def test_transfer_set_and_temperature_retrain_only_the_student(fresh):
    result = run(fresh, "dvc", "exp", "run", "-S", "use_unsup=true", "-S", "temperature=2")
    assert "Running stage 'distill'" in result.stdout
    for stage in ("teacher_infer", "distill_no_kd", "baseline"):
        assert f"Running stage '{stage}" not in result.stdout
    assert "94 training reviews (train, unsup, augment)" in result.stdout


def test_a_training_done_before_is_restored_from_the_run_cache(fresh):
    """A sweep over seeds trains each seed's labels-only twin once: the trainings' learning
    curves are plots (an uncached plain output would turn DVC's run cache off for the stage)."""
    run(fresh, "dvc", "exp", "run", "-S", "train.seed=99", "distill_no_kd")
    curve = (fresh / "reports/training_no_kd.csv").read_bytes()
    run(fresh, "git", "reset", "-q", "--hard")  # back to seed 13
    result = run(fresh, "dvc", "exp", "run", "-S", "train.seed=99", "-S", "alpha=0.7",
                 "distill_no_kd")  # another experiment, the same twin
    assert "Stage 'distill_no_kd' is cached - skipping run" in result.stdout
    assert (fresh / "reports/training_no_kd.csv").read_bytes() == curve


def test_the_ray_engine_gives_the_same_soft_labels(fresh):
    """`dvc repro` of a teacher stage in fp32, on the local engine, then on a local Ray
    cluster of 2 actors: the same bytes."""
    pytest.importorskip("ray")

    def repro_with(**teacher) -> str:
        params = yaml.safe_load((fresh / "params.yaml").read_text())
        params["teacher"].update(precision="fp32", **teacher)
        (fresh / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        result = run(fresh, "dvc", "repro", "teacher_infer@test")
        assert f"{teacher['engine']} engine, {teacher['workers']} worker(s)" in result.stdout
        return lock_outs(fresh)["data/teacher/test.parquet"]

    assert repro_with(engine="local", workers=1) == repro_with(engine="ray", workers=2)


def test_an_ensemble_trains_each_member_on_its_own_seed_and_ships_as_one(fresh):
    student = fresh / "models/student"
    single = {path.name: load_file(path) for path in student.glob("epoch_*.safetensors")}
    params = yaml.safe_load((fresh / "params.yaml").read_text())
    params["student"]["members"] = 2
    (fresh / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(fresh, "dvc", "repro", "evaluate", "export")
    model, meta = load_checkpoint(student / "best.safetensors")
    assert type(model) is Ensemble and len(model.members) == 2
    assert [member["seed"] for member in meta["members"]] == [13, 1013]
    # The first member is the committed single student, epoch for epoch; the second is not.
    assert len(single) == 2
    for name, tensors in single.items():
        member = load_file(student / "member_0" / name)
        assert all(torch.equal(member[key], tensors[key]) for key in tensors)
    second = load_file(student / "member_1/epoch_1.safetensors")
    assert not torch.equal(second["output.weight"], single["epoch_1.safetensors"]["output.weight"])
    history = (fresh / "reports/training.csv").read_text().splitlines()
    assert history[0].startswith("member,epoch,") and len(history) == 1 + 2 * 2
    twin, _ = load_checkpoint(fresh / "models/student_no_kd/best.safetensors")
    assert type(twin) is Ensemble  # the labels-only twin is the same ensemble
    export = json.loads((fresh / "reports/export.json").read_text())
    assert export["max_prob_diff"]["onnx"] < 1e-4 and export["max_prob_diff"]["torchscript"] < 1e-4


def test_bad_params_stop_the_run_and_keep_the_teacher_logits(fresh):
    project = fresh
    before = {path: path.stat().st_mtime_ns for path in (project / "data/teacher").iterdir()}
    write_params(project, alpha=1.5)
    result = run(project, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "`alpha` = 1.5 is not allowed; it must be a number in [0, 1]" in result.stderr
    after = {path: path.stat().st_mtime_ns for path in (project / "data/teacher").iterdir()}
    assert after == before
    # DVC clears the failing stage's own outputs before it starts; its cache still has them.
    run(project, "dvc", "checkout", "--allow-missing")
    assert (project / "models/student/best.safetensors").is_file()


def test_one_param_switches_to_a_made_teacher(fresh):
    """`dvc exp run -S teacher.path=models/teacher-finetuned` pulls in teachers/dvc.yaml: the
    teacher is fine-tuned from the base encoder, then scores the split."""
    result = run(fresh, "dvc", "exp", "run", "-S", "teacher.path=models/teacher-finetuned",
                 "teacher_infer@test")
    try:
        assert "Running stage 'teachers/dvc.yaml:finetune'" in result.stdout
        assert "Running stage 'teacher_infer@test'" in result.stdout
        assert "Running stage 'distill'" not in result.stdout  # only what the target needs
        made = fresh / "models/teacher-finetuned"
        meta = read_soft_label_meta(fresh / "data/teacher/test.parquet")
        assert meta["teacher_path"] == "models/teacher-finetuned"
        assert meta["teacher_sha256"] == teacher_sha256(made)
        lock = yaml.safe_load((fresh / "teachers/dvc.lock").read_text())
        assert [out["path"] for out in lock["stages"]["finetune"]["outs"]] == [
            "models/teacher-finetuned"]
        # Back on the pulled teacher, the made one is out of the graph again.
        write_params(fresh)
        assert "finetune" not in run(fresh, "dvc", "repro", "teacher_infer@test").stdout
    finally:  # untracked: `git reset` would keep them for the next test
        (fresh / "teachers/dvc.lock").unlink(missing_ok=True)
        shutil.rmtree(fresh / "models/teacher-finetuned", ignore_errors=True)


def test_a_loss_edit_reruns_only_the_trainings_and_what_follows(fresh):
    # Import edges decide DVC's reruns: nothing before the students imports the loss module,
    # so an edit to it never rescores the teacher or rebuilds data, vocabulary or baselines.
    losses = fresh / "kd/student/losses.py"
    losses.write_text(losses.read_text() + "\n# an edit\n")
    changed = set(json.loads(run(fresh, "dvc", "status", "--json", "dvc.yaml").stdout))
    assert {"distill", "distill_no_kd"} <= changed
    assert changed <= {"distill", "distill_no_kd", "evaluate", "export", "benchmark"}
