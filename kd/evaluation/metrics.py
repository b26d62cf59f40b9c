"""Test-set metrics and the data behind the DVC plots."""

from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, roc_curve

from kd.student.models import safetensors_parameters


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def model_footprint(weights_dir: str | Path) -> dict:
    """{"params", "size_mb"} of the safetensors files in a model folder (headers only)."""
    weights = sorted(Path(weights_dir).glob("*.safetensors"))
    return {"params": sum(safetensors_parameters(path) for path in weights),
            "size_mb": round(sum(path.stat().st_size for path in weights) / 1e6, 2)}


def _confidence_bins(labels: np.ndarray, positive_probs: np.ndarray, bins: int):
    """Per equal-width confidence bin: (share of reviews, mean confidence, accuracy).

    Confidence is the probability of the predicted class (in [0.5, 1] for two classes).
    """
    predictions = positive_probs >= 0.5
    confidence = np.where(predictions, positive_probs, 1 - positive_probs)
    correct = predictions == (labels == 1)
    edges = np.linspace(0, 1, bins + 1)
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            yield in_bin.mean(), confidence[in_bin].mean(), correct[in_bin].mean()


def expected_calibration_error(labels: np.ndarray, positive_probs: np.ndarray,
                               bins: int = 15) -> float:
    """ECE: the share-weighted gap between confidence and accuracy over equal-width bins."""
    return float(sum(share * abs(confidence - accuracy) for share, confidence, accuracy
                     in _confidence_bins(labels, positive_probs, bins)))


def reliability_rows(labels: np.ndarray, positive_probs: np.ndarray,
                     bins: int = 15) -> list[dict]:
    """The reliability diagram: accuracy against mean confidence per bin, for a DVC plot."""
    return [{"confidence": round(float(confidence), 4), "accuracy": round(float(accuracy), 4),
             "share": round(float(share), 4)}
            for share, confidence, accuracy in _confidence_bins(labels, positive_probs, bins)]


def classification_metrics(labels: np.ndarray, positive_probs: np.ndarray) -> dict:
    """accuracy, f1 (positive class), roc_auc and ece for binary labels and P(positive)."""
    predictions = (positive_probs >= 0.5).astype(int)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions)),
        "roc_auc": float(roc_auc_score(labels, positive_probs)),
        "ece": expected_calibration_error(labels, positive_probs),
    }


def accuracy(labels: np.ndarray, positive_probs: np.ndarray) -> float:
    """Share of reviews whose predicted class (P(positive) >= 0.5) is their label."""
    return float(((positive_probs >= 0.5) == (labels == 1)).mean())


def agreement(probs_a: np.ndarray, probs_b: np.ndarray) -> float:
    """Share of reviews on which two models predict the same class."""
    return float(((probs_a >= 0.5) == (probs_b >= 0.5)).mean())


def roc_rows(labels: np.ndarray, positive_probs: np.ndarray) -> list[dict]:
    """Points of the ROC curve, for a DVC plot."""
    fpr, tpr, _ = roc_curve(labels, positive_probs)
    return [{"fpr": round(float(false_pos), 5), "tpr": round(float(true_pos), 5)}
            for false_pos, true_pos in zip(fpr, tpr, strict=True)]


def confusion_rows(labels: np.ndarray, positive_probs: np.ndarray) -> list[dict]:
    """One (actual, predicted) row per review, for DVC's confusion-matrix template."""
    names = np.array(["negative", "positive"])
    actual, predicted = names[labels], names[(positive_probs >= 0.5).astype(int)]
    return [{"actual": a, "predicted": p} for a, p in zip(actual, predicted, strict=True)]
