import random
import struct

import numpy as np
import pytest

from helpers import make_review
from kd.errors import PipelineError
from kd.evaluation.fasttext_baseline import (
    FastTextConfig,
    fit_fasttext,
    fit_fasttext_on_validation,
    load_fasttext,
    preprocess,
    save_fasttext,
)

# The smallest n-gram matrix allowed (32 MiB, see _MIN_MATRIX_BYTES): fits take ~0.1 s.
TINY = FastTextConfig(word_ngrams=2, epoch=5, lr=0.5, dim=8, bucket=2**20)


def _reviews(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    labels = np.array([index % 2 for index in range(count)])
    return [make_review(rng, int(label)) for label in labels], labels


@pytest.fixture(scope="module")
def tiny_model():
    return fit_fasttext(*_reviews(200, seed=0), TINY)


def test_preprocess_by_hand():
    text = "Great film!!<br /><br />It's 10/10.\nSee __label__1 NOW,\tthen\x00again<BR>x_y"
    assert preprocess(text) == ("great film ! ! it ' s 10 / 10 . see label 1 now , then again "
                                "x y")


def test_preprocess_leaves_one_line_with_no_label_prefix():
    text = "__label__0\r\nÉTÉ\u00a0café\x0b\x0c__label__x <br/>end"
    processed = preprocess(text)
    assert processed == "label 0 été café label x end"
    assert "\n" not in processed and "_" not in processed


def test_fastconfig_refuses_bad_values():
    with pytest.raises(ValueError, match="word_ngrams=0"):
        FastTextConfig(word_ngrams=0, epoch=5, lr=0.5, dim=8, bucket=2**20)
    with pytest.raises(ValueError, match="lr=0"):
        FastTextConfig(word_ngrams=2, epoch=5, lr=0, dim=8, bucket=2**20)
    with pytest.raises(ValueError, match="bucket=1000 x dim=8"):
        FastTextConfig(word_ngrams=2, epoch=5, lr=0.5, dim=8, bucket=1000)


def test_fit_learns_and_gives_probabilities(tiny_model):
    texts, labels = _reviews(60, seed=1)
    proba = tiny_model.predict_proba(texts)
    assert proba.shape == (60, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_array_equal(proba[:, 1], tiny_model.positive_probs(texts))
    assert ((proba[:, 1] >= 0.5) == labels).mean() > 0.9
    assert tiny_model.predict_proba([]).shape == (0, 2)


def test_a_split_sorted_by_label_still_learns():
    # fastText reads its file in order: unshuffled, the last label seen would win.
    texts, labels = _reviews(200, seed=0)
    order = np.argsort(labels, kind="stable")
    model = fit_fasttext([texts[index] for index in order], labels[order], TINY)
    val_texts, val_labels = _reviews(60, seed=1)
    assert ((model.positive_probs(val_texts) >= 0.5) == val_labels).mean() > 0.9


def test_grid_picks_on_validation_and_skips_a_diverging_point():
    diverging = FastTextConfig(word_ngrams=2, epoch=5, lr=50.0, dim=8, bucket=2**20)
    slow = FastTextConfig(word_ngrams=2, epoch=1, lr=0.01, dim=8, bucket=2**20)
    val_texts, val_labels = _reviews(60, seed=1)
    model, summary = fit_fasttext_on_validation(*_reviews(200, seed=0), val_texts, val_labels,
                                                grid=(diverging, slow, TINY))
    assert [point["val_accuracy"] is None for point in summary["grid"]] == [True, False, False]
    assert summary["grid"][2]["val_accuracy"] > summary["grid"][1]["val_accuracy"]
    assert summary["config"] == {"word_ngrams": 2, "epoch": 5, "lr": 0.5, "dim": 8,
                                 "bucket": 2**20}
    accuracy = ((model.positive_probs(val_texts) >= 0.5) == val_labels).mean()
    assert accuracy == summary["val_accuracy"] == summary["grid"][2]["val_accuracy"]


def test_every_point_diverging_is_a_clear_error():
    diverging = FastTextConfig(word_ngrams=2, epoch=5, lr=50.0, dim=8, bucket=2**20)
    with pytest.raises(PipelineError, match="diverged"):
        fit_fasttext_on_validation(*_reviews(200, seed=0), *_reviews(20, seed=1),
                                   grid=(diverging,))


def test_round_trip_in_fasttexts_format(tiny_model, tmp_path):
    path = tmp_path / "fasttext.bin"
    save_fasttext(tiny_model, path)
    assert struct.unpack("<ii", path.read_bytes()[:8]) == (793712314, 12)  # fastText's header
    loaded = load_fasttext(path)
    texts, _ = _reviews(60, seed=2)
    np.testing.assert_array_equal(loaded.predict_proba(texts), tiny_model.predict_proba(texts))
    assert loaded.size() == tiny_model.size()
    assert loaded.size()["features"] > 2**20  # the words, then the n-gram buckets


def test_training_twice_gives_the_same_bytes_and_scores(tiny_model, tmp_path):
    texts, labels = _reviews(200, seed=0)
    again = fit_fasttext(texts, labels, TINY)
    other_seed = fit_fasttext(texts, labels, TINY, seed=1)
    for name, model in (("first", tiny_model), ("again", again), ("seed1", other_seed)):
        save_fasttext(model, tmp_path / f"{name}.bin")
    first = (tmp_path / "first.bin").read_bytes()
    assert (tmp_path / "again.bin").read_bytes() == first
    assert (tmp_path / "seed1.bin").read_bytes() != first  # the seed is what fixes them
    val_texts, _ = _reviews(60, seed=1)
    np.testing.assert_array_equal(again.positive_probs(val_texts),
                                  tiny_model.positive_probs(val_texts))


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="not found: run `dvc repro baseline@fasttext`"):
        load_fasttext(tmp_path / "fasttext.bin")


@pytest.mark.parametrize("damage, message", [
    (lambda data: b"not a fastText model" * 8, "no fastText format 12 header"),
    (lambda data: data[:40], "40 bytes"),
    (lambda data: data[:200], "cut short in its dictionary"),
    (lambda data: data[:len(data) // 2], "cut short in its input matrix"),
    (lambda data: data[:-1], "cut short in its output matrix"),
    (lambda data: data + b"\0", "bytes where its layout takes"),
])
def test_a_corrupt_model_file_is_a_clear_error(tiny_model, tmp_path, damage, message):
    path = tmp_path / "fasttext.bin"
    save_fasttext(tiny_model, path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(PipelineError, match=message):
        load_fasttext(path)
