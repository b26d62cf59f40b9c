import numpy as np
import pytest

from kd.evaluation.metrics import (
    accuracy,
    agreement,
    classification_metrics,
    confusion_rows,
    expected_calibration_error,
    reliability_rows,
)
from kd.student.train import fit_temperature


def test_ece_by_hand():
    labels = np.array([1, 1, 0, 0])
    probs = np.array([0.9, 0.6, 0.2, 0.7])  # confidences 0.9, 0.6, 0.8, 0.7; last one wrong
    # 15 bins: each review alone in its bin -> mean |confidence - correct| over the four
    expected = (abs(0.9 - 1) + abs(0.6 - 1) + abs(0.8 - 1) + abs(0.7 - 0)) / 4
    assert expected_calibration_error(labels, probs) == pytest.approx(expected)
    # two bins: (0.5, 1] holds all four -> |mean confidence - accuracy|
    assert expected_calibration_error(labels, probs, bins=2) == pytest.approx(abs(0.75 - 0.75))


def test_reliability_rows_give_accuracy_per_confidence_bin():
    labels = np.array([1, 1, 0, 0])
    probs = np.array([0.95, 0.96, 0.02, 0.7])
    rows = reliability_rows(labels, probs, bins=10)
    assert [row["share"] for row in rows] == [0.25, 0.75]
    assert rows[0] == {"confidence": 0.7, "accuracy": 0.0, "share": 0.25}
    assert rows[1]["accuracy"] == 1.0


def test_classification_metrics_and_agreement():
    labels = np.array([1, 0, 1, 0])
    probs = np.array([0.8, 0.3, 0.4, 0.1])
    metrics = classification_metrics(labels, probs)
    assert metrics["accuracy"] == 0.75
    assert accuracy(labels, probs) == 0.75  # 0.4 is read as negative
    assert accuracy(labels, np.array([0.5, 0.5, 0.49, 0.0])) == 0.5  # 0.5 is read as positive
    assert metrics["f1"] == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert metrics["roc_auc"] == 1.0  # every positive scored above every negative
    assert agreement(probs, np.array([0.9, 0.9, 0.1, 0.1])) == 0.75
    assert confusion_rows(labels[:2], probs[:2]) == [
        {"actual": "positive", "predicted": "positive"},
        {"actual": "negative", "predicted": "negative"}]


def test_temperature_scaling_recovers_a_known_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-true_logits))).astype(np.int64)
    assert fit_temperature(3.0 * true_logits, labels) == pytest.approx(3.0, rel=0.05)
    assert fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.05)
