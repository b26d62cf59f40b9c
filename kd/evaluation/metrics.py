"""Test-set metrics and the data behind the DVC plots."""

from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

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


# K > 2 labels: probabilities (N, K), one per label, rows summing to 1. The two-label functions
# above keep reading P(label 1) alone, so two-label metrics do not move.
def softmax(logits: np.ndarray) -> np.ndarray:
    """Args: logits (N, K). Returns: probabilities (N, K), each row summing to 1."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))  # no overflow
    return shifted / shifted.sum(axis=1, keepdims=True)


def _top_label_bins(labels: np.ndarray, probs: np.ndarray, bins: int):
    """Per equal-width bin of the top label's probability: (share, mean confidence,
    accuracy); confidence lies in [1/K, 1]."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            yield in_bin.mean(), confidence[in_bin].mean(), correct[in_bin].mean()


def top_label_ece(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE (Guo et al. 2017): the share-weighted gap between the top label's
    probability and how often it is right, over equal-width bins.

    Args: labels (N,) in 0 .. K-1; probs (N, K).
    """
    return float(sum(share * abs(confidence - accuracy) for share, confidence, accuracy
                     in _top_label_bins(labels, probs, bins)))


def class_reliability_rows(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> list[dict]:
    """The top-label reliability diagram, for a DVC plot (as `reliability_rows`)."""
    return [{"confidence": round(float(confidence), 4), "accuracy": round(float(accuracy), 4),
             "share": round(float(share), 4)}
            for share, confidence, accuracy in _top_label_bins(labels, probs, bins)]


def one_vs_rest_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """The mean over labels of the ROC-AUC of P(label k) separating label k from the rest;
    labels absent from `labels` (no positives) are left out of the mean; None if none is left.

    Args: labels (N,) in 0 .. K-1; probs (N, K).
    """
    aucs = [roc_auc_score(labels == label, probs[:, label]) for label in range(probs.shape[1])
            if 0 < (labels == label).sum() < len(labels)]
    return float(np.mean(aucs)) if aucs else None


def class_metrics(labels: np.ndarray, probs: np.ndarray, names: list[str],
                  ordered: bool = False) -> dict:
    """Metrics for K > 2 labels; the prediction is the top label (ties: the first).

    Args:
        labels: (N,) in 0 .. K-1.
        probs: (N, K) probabilities (`softmax` of the logits).
        names: the K label names, in label order (`kd.data.labels.read_labels`).
        ordered: the labels are steps of a scale (stars): add `mae_steps`, the mean absolute
            distance between the predicted and the true label, in labels (1-4 and 7-10 stars
            are 8 steps apart at most 7: 4 stars to 7 is one step).

    Returns:
        accuracy, macro_f1, per_class ({name: {precision, recall, f1, support}}), confusion
        (K x K counts, rows the true label, columns the predicted one), ece (top label),
        roc_auc (one-vs-rest mean), and mae_steps when `ordered`.
    """
    predictions = probs.argmax(axis=1)
    every = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=every, zero_division=0)
    confusion = confusion_matrix(labels, predictions, labels=every)
    metrics = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(np.mean(f1)),
        "per_class": {name: {"precision": float(precision[label]),
                             "recall": float(recall[label]), "f1": float(f1[label]),
                             "support": int(support[label])}
                      for label, name in enumerate(names)},
        "confusion": confusion.tolist(),
        "ece": top_label_ece(labels, probs),
        "roc_auc": one_vs_rest_auc(labels, probs),
    }
    if ordered:
        metrics["mae_steps"] = float(np.abs(predictions - labels).mean())
    return metrics


def class_confusion_rows(labels: np.ndarray, probs: np.ndarray, names: list[str]) -> list[dict]:
    """One (actual, predicted) row per review, by name, for DVC's confusion-matrix template."""
    names = np.array(names)
    return [{"actual": actual, "predicted": predicted} for actual, predicted
            in zip(names[labels], names[probs.argmax(axis=1)], strict=True)]
