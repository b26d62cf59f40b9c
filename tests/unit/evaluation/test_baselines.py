import os
import random
import subprocess
import sys

import numpy as np
import pytest

from helpers import make_review
from kd.errors import PipelineError
from kd.evaluation.baselines import (
    fit_nb_lr,
    fit_tfidf_lr,
    load_baseline,
    log_count_ratio,
    save_baseline,
)


def _reviews(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    labels = np.array([index % 2 for index in range(count)])
    return [make_review(rng, int(label)) for label in labels], labels


def test_tfidf_lr_learns_separable_reviews_and_picks_c_on_validation():
    train_texts, train_labels = _reviews(200, seed=0)
    val_texts, val_labels = _reviews(60, seed=1)
    pipeline, summary = fit_tfidf_lr(train_texts, train_labels, val_texts, val_labels,
                                     c_grid=(0.01, 10.0), min_df=1)
    assert summary["c"] in (0.01, 10.0)
    assert summary["val_accuracy"] > 0.8
    probs = pipeline.predict_proba(val_texts)[:, 1]
    assert probs.shape == (60,) and np.all((probs >= 0) & (probs <= 1))
    assert ((probs >= 0.5) == val_labels).mean() == summary["val_accuracy"]


def test_log_count_ratio_by_hand():
    from scipy.sparse import csr_matrix

    features = csr_matrix(np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0]], dtype=np.float32))
    labels = np.array([1, 1, 0])
    positive = 1 + np.array([2, 1, 1])  # smoothed counts in positive reviews
    negative = 1 + np.array([0, 1, 0])
    expected = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
    np.testing.assert_allclose(log_count_ratio(features, labels), expected)


def test_nb_lr_learns_and_folds_the_ratio_into_its_weights(tmp_path):
    train_texts, train_labels = _reviews(200, seed=0)
    val_texts, val_labels = _reviews(60, seed=1)
    pipeline, summary = fit_nb_lr(train_texts, train_labels, val_texts, val_labels,
                                  c_grid=(0.1, 1.0), ngram_max=3)
    assert summary["val_accuracy"] > 0.8
    vectorizer, model = pipeline[0], pipeline[1]
    assert any(len(term.split()) == 3 for term in vectorizer.vocabulary_)  # trigrams
    assert "!" in vectorizer.vocabulary_  # punctuation that carries sentiment
    # A plain binary-count pipeline: the score is (w * r) . x + b.
    features = vectorizer.transform(val_texts)
    np.testing.assert_allclose(pipeline.decision_function(val_texts),
                               features @ model.coef_.ravel() + model.intercept_[0], rtol=1e-5)
    save_baseline(pipeline, tmp_path / "nb.parquet")
    loaded = load_baseline(tmp_path / "nb.parquet")
    np.testing.assert_allclose(loaded.predict_proba(val_texts), pipeline.predict_proba(val_texts),
                               rtol=1e-12)


def test_a_saved_tfidf_model_scores_as_the_fitted_one(tmp_path):
    train_texts, train_labels = _reviews(100, seed=0)
    val_texts, val_labels = _reviews(30, seed=1)
    pipeline, _ = fit_tfidf_lr(train_texts, train_labels, val_texts, val_labels, c_grid=(1.0,),
                               min_df=1)
    save_baseline(pipeline, tmp_path / "tfidf.parquet")
    loaded = load_baseline(tmp_path / "tfidf.parquet")
    np.testing.assert_allclose(loaded.predict_proba(val_texts), pipeline.predict_proba(val_texts),
                               rtol=1e-12)
    first = (tmp_path / "tfidf.parquet").read_bytes()
    save_baseline(loaded, tmp_path / "again.parquet")  # the same model, the same bytes
    assert (tmp_path / "again.parquet").read_bytes() == first


def test_a_file_that_is_not_a_baseline_model_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"ngram": ["a"]}), tmp_path / "other.parquet")
    with pytest.raises(PipelineError, match="not a baseline model"):
        load_baseline(tmp_path / "other.parquet")
    with pytest.raises(PipelineError, match="run `dvc repro`"):
        load_baseline(tmp_path / "missing.parquet")


_FIT_AND_SAVE = """
import sys
import numpy as np
from kd.evaluation.baselines import fit_nb_lr, fit_tfidf_lr, save_baseline

def reviews(count, seed):
    # Zipf-drawn words from a large vocabulary, shifted by the label: many distinct n-grams.
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    texts = [" ".join(f"w{(word + 7 * label) % 3000}"
                      for word in rng.zipf(1.3, rng.integers(20, 80))) for label in labels]
    return texts, labels

train, val, test = reviews(600, 0), reviews(100, 1), reviews(100, 2)
out = sys.argv[1]
for name, pipeline in (("tfidf_lr", fit_tfidf_lr(*train, *val, c_grid=(1.0, 4.0), min_df=1)[0]),
                       ("nb_lr", fit_nb_lr(*train, *val, c_grid=(0.1, 1.0), ngram_max=3)[0])):
    save_baseline(pipeline, f"{out}/{name}.parquet")
    probs = pipeline.predict_proba(test[0])[:, 1].astype(np.float32)
    open(f"{out}/{name}.probs", "wb").write(probs.tobytes())
    print(name, len(pipeline[0].vocabulary_))
"""


def test_the_fit_gives_the_same_bytes_whatever_the_blas_threads(tmp_path):
    """OpenBLAS splits a dot product over more than 10,000 features among its threads; the
    fitted weights must not depend on how many there are, nor on which AVX-512 kernel OpenBLAS
    picks (this machine's SkylakeX, or a Cooperlake's), each fit in its own process."""
    outputs = {}
    for threads, core in (("1", None), ("4", "Cooperlake")):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads}
        if core:
            env["OPENBLAS_CORETYPE"] = core
        out = tmp_path / f"threads{threads}"
        out.mkdir()
        result = subprocess.run([sys.executable, "-c", _FIT_AND_SAVE, str(out)], env=env,
                                capture_output=True, text=True, check=True)
        features = dict(line.split() for line in result.stdout.splitlines())
        assert all(int(count) > 10_000 for count in features.values())  # threaded sums
        outputs[threads] = {path.name: path.read_bytes() for path in out.iterdir()}
    assert len(outputs["1"]) == 4 and outputs["1"] == outputs["4"]
