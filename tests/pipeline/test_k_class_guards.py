"""K > 2 labels (issue 28): `prepare` takes them; every stage after it that handles two labels
so far stops first, with the file, the number of classes and the stage, and writes nothing."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import ENV, REPO
from kd.data.labels import LabelError, read_label_names
from kd.data.sources import prepare
from kd.data.splits import DataError, require_two_labels
from kd.params import parse_params

CLASSES = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def three_class_project(tmp_path_factory) -> Path:
    """Prepared splits of a CSV labelled negative / neutral / positive, and its params.yaml."""
    root = tmp_path_factory.mktemp("k3")
    (root / "reviews").mkdir()
    for name, per_class in (("train.csv", 12), ("test.csv", 2)):
        rows = [f"{name} review {index} of a {label} kind,{label}\n"
                for index in range(per_class) for label in CLASSES]
        (root / "reviews" / name).write_text("review,sentiment\n" + "".join(rows))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(source="files", path="reviews", train="train.csv", test="test.csv",
                       text_column="review", label_column="sentiment")
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cwd = os.getcwd()
    os.chdir(root)  # the prepared files name data.path as params.yaml does: relative
    try:
        prepare(parse_params(raw), Path("data/prepared"))
    finally:
        os.chdir(cwd)
    return root


def test_the_split_guard_names_the_file_the_classes_and_the_stage(three_class_project):
    prepared = three_class_project / "data/prepared"
    with pytest.raises(DataError) as error:
        require_two_labels(prepared / "train.parquet", "distill")
    assert str(error.value) == (
        f"{prepared}/train.parquet holds labels 0 .. 2 (3 classes; their names in "
        f"{prepared}/source.json): `distill` handles two labels so far, K classes are being "
        "built (issue 28); prepare two labels (data.imdb_label = sentiment, or a two-value "
        "data.label_column) to run it")
    require_two_labels(prepared / "unsup.parquet", "teacher_infer")  # no labels: nothing to refuse


def test_two_labels_pass_the_guard(tmp_path):
    pq.write_table(pa.table({"label": pa.array([0, 1, 1, -1], pa.int64())}),
                   tmp_path / "train.parquet")
    require_two_labels(tmp_path / "train.parquet", "distill")  # returns, says nothing


def test_label_names_for_two_refuse_three(three_class_project):
    path = three_class_project / "data/prepared/source.json"
    with pytest.raises(LabelError) as error:
        read_label_names(path)
    assert str(error.value) == (
        f"{path} holds 3 labels ('negative', 'neutral', 'positive'): this stage handles two "
        "labels so far, K classes are being built (issue 28); prepare two labels to run it")


# (stage arguments, what the message names): each stage runs as dvc.yaml runs it.
STAGES = {
    "teacher_infer": (["train"], "data/prepared/train.parquet holds labels 0 .. 2 (3 classes"),
    "distill": ([], "`distill` handles two labels so far"),
    "evaluate": ([], "data/prepared/test.parquet holds labels 0 .. 2 (3 classes; their names "
                     "in data/prepared/source.json): `evaluate` handles two labels so far"),
    "baseline": (["tfidf_lr"], "`baseline@tfidf_lr` handles two labels so far"),
    "benchmark": ([], "`benchmark` handles two labels so far"),
    "export": ([], "data/prepared/source.json holds 3 labels ('negative', 'neutral', "
                   "'positive'): this stage handles two labels so far"),
    "finetune_teacher": ([], "data/prepared/source.json holds 3 labels"),
}


@pytest.mark.parametrize("stage", STAGES)
def test_stages_not_yet_k_way_stop_before_any_work(stage, three_class_project):
    args, message = STAGES[stage]
    before = sorted(path for path in three_class_project.rglob("*"))
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}", *args],
                            cwd=three_class_project, capture_output=True, text=True,
                            env={**ENV, "PYTHONPATH": str(REPO)})  # this checkout's kd
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert sorted(path for path in three_class_project.rglob("*")) == before  # nothing written
