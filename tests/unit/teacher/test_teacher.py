import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import write_tiny_teacher
from kd.teacher.scoring import (
    TeacherError,
    check_teacher,
    load_soft_labels,
    load_teacher,
    positive_index,
    save_soft_labels,
    score,
)


def test_missing_teacher_says_dvc_pull(tmp_path):
    with pytest.raises(TeacherError, match="dvc pull"):
        check_teacher(tmp_path / "teacher")


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "teacher").mkdir()
    with pytest.raises(TeacherError, match="no config.json"):
        check_teacher(tmp_path / "teacher")


def test_three_label_classifier_is_refused(tmp_path):
    path = write_tiny_teacher(tmp_path / "teacher", num_labels=3)
    with pytest.raises(TeacherError, match="has 3 labels"):
        check_teacher(path)


def test_bare_encoder_is_refused(tmp_path, tiny_teacher):
    path = tmp_path / "encoder"
    shutil.copytree(tiny_teacher, path)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(TeacherError, match="not a sequence classifier"):
        check_teacher(path)


def test_pickled_weights_are_refused(tmp_path, tiny_teacher):
    path = tmp_path / "pickled"
    shutil.copytree(tiny_teacher, path)
    (path / "model.safetensors").unlink()
    with pytest.raises(TeacherError, match="no \\*.safetensors"):
        check_teacher(path)


def test_positive_index_follows_label_names():
    class Config:
        id2label = {0: "POSITIVE", 1: "NEGATIVE"}

    assert positive_index(Config) == 0
    Config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    assert positive_index(Config) == 1


def test_score_keeps_input_order_whatever_the_batching(tiny_teacher):
    model, tokenizer, identity = load_teacher(tiny_teacher)
    assert len(identity["teacher_sha256"]) == 64
    texts = ["great " * n + "awful" for n in (30, 1, 12, 5, 0)]
    batched = score(model, tokenizer, texts, max_len=16, head_tokens=4, batch_size=2)
    single = np.concatenate([score(model, tokenizer, [text], max_len=16, head_tokens=4,
                                   batch_size=1) for text in texts])
    assert batched.shape == (5, 2) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=2e-2)  # bf16 autocast


def test_soft_labels_round_trip_and_refuse_stale_data(tmp_path):
    path = tmp_path / "train.parquet"
    logits = np.array([[0.1, 0.9], [2.0, -1.0]], dtype=np.float32)
    save_soft_labels(path, ["train/pos/1", "train/neg/2"], logits,
                     {"data_fingerprint": "abc", "teacher_sha256": "t1"})
    loaded = load_soft_labels(path, ["train/neg/2", "train/pos/1"], {"data_fingerprint": "abc"})
    np.testing.assert_array_equal(loaded, logits[::-1])
    with pytest.raises(TeacherError, match="stale: its data_fingerprint is 'abc'"):
        load_soft_labels(path, ["train/pos/1"], {"data_fingerprint": "xyz"})
    with pytest.raises(TeacherError, match="teacher_sha256"):
        load_soft_labels(path, ["train/pos/1"], {"teacher_sha256": "t2"})
    with pytest.raises(TeacherError, match="no teacher logits for 1 review"):
        load_soft_labels(path, ["train/pos/1", "train/pos/3"], {})


def test_empty_soft_labels_are_one_empty_row_group(tmp_path):
    """As `pq.write_table` writes an empty table: the empty augment split keeps its bytes."""
    meta = {"data_fingerprint": "abc"}
    save_soft_labels(tmp_path / "augment.parquet", [], np.zeros((0, 2), np.float32), meta)
    table = pa.table({"id": pa.array([], pa.string()),
                      "teacher_logits": pa.array([], pa.list_(pa.float32(), 2))})
    pq.write_table(table.replace_schema_metadata({b"kd.soft_labels": json.dumps(meta)}),
                   tmp_path / "whole.parquet")
    assert ((tmp_path / "augment.parquet").read_bytes()
            == (tmp_path / "whole.parquet").read_bytes())
    assert load_soft_labels(tmp_path / "augment.parquet", [], meta).shape == (0, 2)


def test_soft_labels_without_metadata_are_refused(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"id": ["a"], "teacher_logits": [[0.0, 1.0]]}), path)
    with pytest.raises(TeacherError, match="no soft-label metadata"):
        load_soft_labels(path, ["a"], {})
    with pytest.raises(TeacherError, match="dvc repro teacher_infer"):
        load_soft_labels(tmp_path / "missing.parquet", ["a"], {})


# K > 2 labels: a K-label teacher is taken when its labels are the data's, by name.
def _named_teacher(path, names):
    from transformers import AutoConfig

    write_tiny_teacher(path, num_labels=len(names))
    config = AutoConfig.from_pretrained(path)
    config.id2label = dict(enumerate(names))
    config.label2id = {name: index for index, name in enumerate(names)}
    config.save_pretrained(path)
    return path


def test_a_k_label_teacher_maps_its_outputs_to_the_data_labels_by_name(tmp_path):
    from kd.teacher.scoring import match_teacher_labels

    path = _named_teacher(tmp_path / "t", ["Positive", "negative", "neutral"])
    config = check_teacher(path, num_labels=3)
    # The data's labels 0, 1, 2 are negative, neutral, positive: teacher rows 1, 2, 0.
    assert match_teacher_labels(config, ["negative", "neutral", " positive"], path) == [1, 2, 0]


def test_a_k_label_teacher_with_other_names_or_counts_is_refused(tmp_path):
    from kd.teacher.scoring import match_teacher_labels

    path = _named_teacher(tmp_path / "t", ["LABEL_0", "LABEL_1", "LABEL_2"])
    config = check_teacher(path, num_labels=3)
    with pytest.raises(TeacherError) as error:
        match_teacher_labels(config, ["negative", "neutral", "positive"], path)
    assert str(error.value).startswith(
        f"{path}'s labels do not match the data's by name: the teacher has {{'LABEL_0', "
        "'LABEL_1', 'LABEL_2'}, the data {'negative', 'neutral', 'positive'} (the teacher "
        "lacks 'negative', 'neutral', 'positive'; the data lacks 'LABEL_0', 'LABEL_1', "
        "'LABEL_2'). Name the teacher's outputs as the data does")
    with pytest.raises(TeacherError, match=r"has 3 labels \('LABEL_0', 'LABEL_1', 'LABEL_2'\); "
                                           "the data has 4: the teacher must have the data's"):
        check_teacher(path, num_labels=4)
    with pytest.raises(TeacherError, match="has 3 labels; the teacher must have 2 "
                                           r"\(negative, positive\)"):
        check_teacher(path)  # two labels: today's check and message


def test_k_label_teacher_scores_k_logits_in_the_data_order(tmp_path):
    """A 3-label teacher's soft labels: 3 logits a review, reordered to the data's labels by
    `rows`, written and read back as (N, 3); two-label files keep their 2-logit schema."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kd.teacher.scoring import assemble, match_teacher_labels, plan_batches, score_batches

    path = _named_teacher(tmp_path / "t", ["positive", "negative", "neutral"])
    config = check_teacher(path, num_labels=3)
    rows = match_teacher_labels(config, ["negative", "neutral", "positive"], path)  # [1, 2, 0]
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = ["great " * n + "awful" for n in (3, 0, 7)]
    batches = plan_batches(tokenizer, texts, 16, 4, 2)
    teacher_order = assemble(batches, score_batches(model, batches, precision="fp32",
                                                    rows=[0, 1, 2]), 3, width=3)
    data_order = assemble(batches, score_batches(model, batches, precision="fp32", rows=rows),
                          3, width=3)
    assert data_order.shape == (3, 3)
    np.testing.assert_array_equal(data_order, teacher_order[:, [1, 2, 0]])
    save_soft_labels(tmp_path / "k.parquet", ["a", "b", "c"], data_order, {"k": 3})
    assert pq.read_schema(tmp_path / "k.parquet").field("teacher_logits").type.list_size == 3
    np.testing.assert_array_equal(load_soft_labels(tmp_path / "k.parquet", ["c", "a"], {}),
                                  data_order[[2, 0]])
    save_soft_labels(tmp_path / "two.parquet", ["a"], np.zeros((1, 2), np.float32), {})
    assert pq.read_schema(tmp_path / "two.parquet").field("teacher_logits").type == pa.list_(
        pa.float32(), 2)
    with pytest.raises(TeacherError, match=r"logits of shape \(2, 3\) for a batch of 2"):
        assemble(batches, score_batches(model, batches, precision="fp32", rows=rows), 3)
