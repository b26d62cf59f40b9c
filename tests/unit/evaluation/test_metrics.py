import numpy as np
import pytest

from kd.evaluation.metrics import (
    accuracy,
    agreement,
    class_confusion_rows,
    class_metrics,
    class_reliability_rows,
    classification_metrics,
    confusion_rows,
    expected_calibration_error,
    one_vs_rest_auc,
    reliability_rows,
    softmax,
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


# K > 2 labels: every number below is worked out by hand from the six reviews.
K_LABELS = np.array([0, 0, 1, 1, 2, 2])
K_PROBS = np.array([
    [0.7, 0.2, 0.1],  # predicts 0, right, confidence 0.7
    [0.25, 0.55, 0.2],  # 1, wrong (0), 0.55
    [0.2, 0.5, 0.3],  # 1, right, 0.5
    [0.05, 0.1, 0.85],  # 2, wrong (1), 0.85
    [0.1, 0.2, 0.7],  # 2, right, 0.7
    [0.55, 0.15, 0.3],  # 0, wrong (2), 0.55
])


def test_k_label_metrics_by_hand():
    metrics = class_metrics(K_LABELS, K_PROBS, ["1", "2", "3"], ordered=True)
    assert metrics["accuracy"] == 0.5
    # Each label is predicted twice and right once, and is true twice: P = R = F1 = 1/2.
    assert metrics["per_class"]["2"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5,
                                         "support": 2}
    assert metrics["macro_f1"] == pytest.approx(0.5)
    assert metrics["confusion"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]  # rows: the true label
    # Bins (15, equal width): 0.5 {right}, 0.55 {wrong, wrong}, 0.7 {right, right}, 0.85 {wrong}
    assert metrics["ece"] == pytest.approx((0.5 + 2 * 0.55 + 2 * 0.3 + 0.85) / 6)
    assert class_reliability_rows(K_LABELS, K_PROBS) == [
        {"confidence": 0.5, "accuracy": 1.0, "share": 0.1667},
        {"confidence": 0.55, "accuracy": 0.0, "share": 0.3333},
        {"confidence": 0.7, "accuracy": 1.0, "share": 0.3333},
        {"confidence": 0.85, "accuracy": 0.0, "share": 0.1667}]
    # One-vs-rest: label 0 wins 7 of its 8 pairs, label 1 3 of 8, label 2 5.5 of 8 (a tie).
    assert metrics["roc_auc"] == pytest.approx((7 / 8 + 3 / 8 + 5.5 / 8) / 3)
    assert metrics["mae_steps"] == pytest.approx((0 + 1 + 0 + 1 + 0 + 2) / 6)
    assert "mae_steps" not in class_metrics(K_LABELS, K_PROBS, ["a", "b", "c"])
    assert class_confusion_rows(K_LABELS[:2], K_PROBS[:2], ["a", "b", "c"]) == [
        {"actual": "a", "predicted": "a"}, {"actual": "a", "predicted": "b"}]


def test_k_label_softmax_and_an_absent_label_in_the_auc():
    probs = softmax(np.array([[0.0, 0.0, 0.0], [1000.0, 0.0, -1000.0]]))  # no overflow
    assert np.allclose(probs, [[1 / 3] * 3, [1.0, 0.0, 0.0]])
    # Label 2 never occurs: the mean is over labels 0 and 1 (both perfectly ranked here).
    assert one_vs_rest_auc(np.array([0, 1, 0]), np.array(
        [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])) == 1.0
