"""A student's logits for encoded reviews, apart from training: evaluate, export and the
benchmark read a trained student and need nothing of the training loop."""

import numpy as np
import torch

from kd.text import pad_batch


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, input_ids: list[list[int]], batch_size: int = 256,
                   device: torch.device | None = None) -> np.ndarray:
    """The student's logits for encoded reviews, in the order given (fp32): (N,) for a
    two-label student, (N, K) for a K > 2 label one."""
    model.eval()
    device = device or next(model.parameters()).device
    logits = np.zeros(len(input_ids), dtype=np.float32)
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = torch.from_numpy(pad_batch([input_ids[row] for row in rows], model.min_len))
        batch = batch.to(device)
        batch_logits = model(batch).float().cpu().numpy()  # (B,) or (B, K)
        if batch_logits.ndim == 2 and logits.ndim == 1:  # K labels: one row of K per review
            logits = np.zeros((len(input_ids), batch_logits.shape[1]), dtype=np.float32)
        logits[rows] = batch_logits
    return logits


def logit_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of reviews whose logit (N,) is on their label's side of 0 (0 counts as negative);
    with (N, K) logits, whose largest logit is their label's (ties: the first)."""
    if np.ndim(logits) == 2:
        return float((np.argmax(logits, axis=1) == labels).mean())
    return float(((logits > 0) == (labels == 1)).mean())
