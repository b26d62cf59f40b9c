"""Making a teacher: the fine-tuning stage on a tiny random encoder, and its resumption."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import REPO, make_rows, write_rows, write_tiny_teacher
from kd.data.sources import prepare
from kd.params import parse_params
from kd.teacher.finetune import (
    FinetuneConfig,
    FinetuneError,
    build_teacher,
    epoch_batches,
    finetune,
    make_optimizer,
    make_scheduler,
)
from kd.teacher.scoring import check_teacher, positive_index, read_soft_label_meta, teacher_sha256


def make_project(root: Path, encoder: Path, **finetune_params) -> Path:
    """Prepared splits of a CSV labelled bad/good, tiny params, and the base encoder."""
    write_rows(root / "reviews/train.csv", make_rows(40, seed=1, names=("bad", "good")), "csv")
    write_rows(root / "reviews/test.csv", make_rows(12, seed=2, names=("bad", "good")), "csv")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(source="files", path=str(root / "reviews"), train="train.csv",
                       test="test.csv", text_column="review", label_column="sentiment")
    raw["teacher"].update(max_len=32, head_tokens=8, batch_size=16)
    raw["finetune"].update({"epochs": 2, "batch_size": 8, **finetune_params})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    prepare(parse_params(raw), root / "data/prepared")
    shutil.copytree(encoder, root / "models/base-encoder")
    return root


# A stage as dvc.yaml runs it, `python -m stages.<name>`, with this checkout's stages and kd
# first on the path (the project folder holds neither).
STAGE_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run_stage(root: Path, stage: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=root,
                          env=STAGE_ENV, capture_output=True, text=True, check=True)


def teacher_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_the_stage_makes_a_teacher_that_teacher_infer_reads(tmp_path, tiny_encoder):
    root = make_project(tmp_path, tiny_encoder)
    result = run_stage(root, "finetune_teacher")
    assert "reviews/s" in result.stdout and "ETA" in result.stdout
    assert "labels 0 = 'bad', 1 = 'good'" in result.stdout
    made = root / "models/teacher-finetuned"
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= set(
        teacher_files(made))
    config = check_teacher(made)  # a 2-label sequence classifier with safetensors weights
    assert config.architectures == ["BertForSequenceClassification"]
    assert config.id2label == {0: "bad", 1: "good"} and positive_index(config) == 1
    assert config.attention_probs_dropout_prob == 0.0 and config.hidden_dropout_prob == 0.1
    training = json.loads((made / "training.json").read_text())
    assert [row["epoch"] for row in training["history"]] == [1, 2]
    for row in training["history"]:
        assert row["train_loss"] > 0 and 0 <= row["val_accuracy"] <= 1
    assert training["reviews"] == {"train": 36, "val": 4} and training["labels"] == ["bad", "good"]
    assert training["recipe"]["lr"] == 8e-5 and training["truncation"] == "head 8 + tail 22"
    assert training["base_sha256"] == teacher_sha256(tiny_encoder)
    (tmp_path / "probe").write_text("")  # the weights get a new file's mode, not 0600
    assert (made / "model.safetensors").stat().st_mode == (tmp_path / "probe").stat().st_mode
    for name, content in teacher_files(made).items():  # what DVC hashes: nothing of this run
        if name != "model.safetensors":
            assert str(tmp_path) not in content.decode(), name
    assert not list((root / ".dvc/tmp/finetune").iterdir())  # the work folder goes
    # Trained: the encoder's weights moved from the base's.
    base = load_file(tiny_encoder / "model.safetensors")
    tuned = load_file(made / "model.safetensors")
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(base[name], tuned[f"bert.{name}"])

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["teacher"]["path"] = "models/teacher-finetuned"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    scored = run_stage(root, "teacher_infer", "test")
    assert "teacher test: 12 reviews" in scored.stdout
    meta = read_soft_label_meta(root / "data/teacher/test.parquet")
    assert meta["teacher_sha256"] == teacher_sha256(made)
    assert meta["teacher_path"] == "models/teacher-finetuned"
    assert pq.read_table(root / "data/teacher/test.parquet").num_rows == 12


def test_an_interrupted_finetuning_resumes_to_the_same_bytes(tmp_path, tiny_encoder):
    # Batches of 2: 18 steps an epoch; a state every 3 steps, so the kill lands mid-epoch.
    settings = {"batch_size": 2, "save_every": 3, "epochs": 2}
    reference = make_project(tmp_path / "reference", tiny_encoder, **settings)
    run_stage(reference, "finetune_teacher")
    root = make_project(tmp_path / "interrupted", tiny_encoder, **settings)
    training = subprocess.Popen([sys.executable, "-m", "stages.finetune_teacher"],
                                cwd=root, env=STAGE_ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(root.glob(".dvc/tmp/finetune/*/state.safetensors")):
        assert training.poll() is None and time.monotonic() < deadline, "no state was saved"
        time.sleep(0.01)
    training.kill()  # SIGKILL: no clean-up runs
    training.wait()
    assert not (root / "models/teacher-finetuned").exists()
    resumed = run_stage(root, "finetune_teacher").stdout
    assert "resuming after step" in resumed
    assert teacher_files(root / "models/teacher-finetuned") == teacher_files(
        reference / "models/teacher-finetuned")


def _tiny_training(tmp_path, encoder):
    """A tiny teacher, its data and a config: the same start every call."""
    torch.manual_seed(0)
    model = build_teacher(encoder, ("negative", "positive"), 0.1, 0.0)
    rng = np.random.default_rng(0)
    input_ids = [rng.integers(5, 30, size=rng.integers(3, 12)).astype(np.int32)
                 for _ in range(20)]
    labels = rng.integers(0, 2, size=20)
    config = FinetuneConfig(epochs=2, batch_size=4, lr=1e-3, warmup=0.1, weight_decay=0.01,
                            max_grad_norm=1.0, seed=3, precision="fp32")
    return model, input_ids, labels, config


def test_a_run_stopped_after_an_epoch_continues_as_if_never_stopped(tmp_path, tiny_encoder):
    model, input_ids, labels, config = _tiny_training(tmp_path, tiny_encoder)
    history = finetune(model, input_ids, labels, config, pad_id=0, log=lambda line: None)

    class Stop(Exception):
        pass

    def stop_after_epoch_1(line: str) -> None:
        if line.startswith("epoch 1/2 done"):
            raise Stop

    state = tmp_path / "state.safetensors"
    stopped, *_ = _tiny_training(tmp_path, tiny_encoder)
    with pytest.raises(Stop):
        finetune(stopped, input_ids, labels, config, pad_id=0, state_path=state,
                 log=stop_after_epoch_1)
    lines = []
    resumed, *_ = _tiny_training(tmp_path, tiny_encoder)
    resumed_history = finetune(resumed, input_ids, labels, config, pad_id=0, state_path=state,
                               log=lines.append)
    assert lines[0].startswith("resuming after step 5 of 10 (epoch 2)")
    assert resumed_history == history
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_the_schedule_warms_up_then_decays_and_biases_are_not_decayed(tiny_encoder):
    torch.manual_seed(0)
    model = build_teacher(tiny_encoder, ("negative", "positive"), 0.1, 0.0)
    optimizer = make_optimizer(model, lr=1.0, weight_decay=0.01)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all(parameter.ndim == 2 for parameter in decayed["params"])
    assert all(parameter.ndim == 1 for parameter in plain["params"])  # biases, LayerNorm
    scheduler = make_scheduler(optimizer, total_steps=10, warmup=0.2)  # 2 warm-up steps
    rates = []
    for _ in range(10):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0, 0.5, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])


def test_epoch_order_depends_on_seed_and_epoch_alone():
    first = epoch_batches(10, 4, seed=3, epoch=1)
    assert [len(batch) for batch in first] == [4, 4, 2]
    assert sorted(np.concatenate(first)) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(first, epoch_batches(10, 4, 3, 1),
                                                    strict=True))
    assert not np.array_equal(np.concatenate(first),
                              np.concatenate(epoch_batches(10, 4, seed=3, epoch=2)))


def test_a_missing_base_encoder_says_dvc_pull(tmp_path):
    with pytest.raises(FinetuneError, match="dvc pull models/base-encoder.dvc"):
        build_teacher(tmp_path / "base-encoder", ("negative", "positive"), 0.1, 0.0)


def test_a_classifier_is_no_base_without_safetensors(tmp_path):
    path = write_tiny_teacher(tmp_path / "base")
    (path / "model.safetensors").unlink()
    with pytest.raises(FinetuneError, match="no \\*.safetensors"):
        build_teacher(path, ("negative", "positive"), 0.1, 0.0)
