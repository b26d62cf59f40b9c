import random

import numpy as np

from conftest import make_review
from kd.baselines import fit_tfidf_lr


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
