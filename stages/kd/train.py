"""Training and inference loops for the TextCNN student."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from kd.examples import Examples
from kd.losses import distillation_loss
from kd.text import pad_batch


def _batches(examples: Examples, batch_size: int, min_len: int,
             generator: np.random.Generator | None) -> Iterator[tuple[torch.Tensor, ...]]:
    """Length-bucketed batches: (input_ids (B, L), labels (B,), teacher_logits (B, 2)).

    Reviews are sorted by length within chunks of 50 batches so a batch pads little; with a
    generator the chunks and the batch order are shuffled each epoch.
    """
    order = np.arange(len(examples))
    if generator is not None:
        generator.shuffle(order)
    lengths = np.array([len(ids) for ids in examples.input_ids])
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        piece = order[start:start + chunk]
        piece = piece[np.argsort(lengths[piece], kind="stable")]
        batches += [piece[i:i + batch_size] for i in range(0, len(piece), batch_size)]
    if generator is not None:
        generator.shuffle(batches)
    for rows in batches:
        yield (pad_batch([examples.input_ids[row] for row in rows], min_len),
               torch.from_numpy(examples.labels[rows]),
               torch.from_numpy(examples.teacher_logits[rows]))


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, input_ids: list[list[int]],
                   batch_size: int = 256) -> np.ndarray:
    """The student's logits (N,) for encoded reviews, in the order given."""
    model.eval()
    min_len = max(model.config.kernel_sizes)
    logits = np.zeros(len(input_ids), dtype=np.float32)
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        logits[rows] = model(pad_batch([input_ids[row] for row in rows], min_len)).numpy()
    return logits


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The calibration temperature: the T > 0 that minimises the log loss of
    sigmoid(logits / T) against `labels` (temperature scaling, Guo et al. 2017).

    One scalar, so the ranking (accuracy, ROC-AUC) is unchanged and only the confidence moves.

    Args:
        logits: (N,) a model's logits on held-out reviews.
        labels: (N,) 0/1.
    """
    logits_t = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.float64))
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits_t / log_temperature.exp(), labels_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_temperature.detach().exp())


@dataclass
class FitConfig:
    epochs: int
    batch_size: int
    lr: float
    alpha: float
    temperature: float = 1.0
    kd_loss: str = "bce"
    seed: int = 0
    precision: str = "bf16"  # "bf16": autocast forward/backward (about 2x faster on AMX CPUs)


def fit(model: torch.nn.Module, train: Examples, val: Examples, config: FitConfig,
        on_epoch: Callable[[int, dict], None]) -> list[dict]:
    """Train with the distillation loss; after each epoch, score val and call `on_epoch`.

    Weights and optimizer state stay fp32; with precision "bf16" the forward and backward
    passes run under bf16 autocast. Validation runs in fp32, as `evaluate` does.

    Returns:
        One dict per epoch: epoch, train_loss, val_loss (same loss on val), val_accuracy.
    """
    torch.manual_seed(config.seed)
    generator = np.random.default_rng(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    min_len = max(model.config.kernel_sizes)
    history = []

    def loss_of(logits, labels, teacher_logits):
        return distillation_loss(logits, labels, teacher_logits, alpha=config.alpha,
                                 temperature=config.temperature, kd_loss=config.kd_loss)

    for epoch in range(1, config.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for input_ids, labels, teacher_logits in _batches(train, config.batch_size, min_len,
                                                         generator):
            with torch.autocast("cpu", dtype=torch.bfloat16,
                                enabled=config.precision == "bf16"):
                logits = model(input_ids)  # (B,)
            loss = loss_of(logits.float(), labels, teacher_logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            seen += len(labels)
        val_logits = torch.from_numpy(predict_logits(model, val.input_ids))
        val_loss = loss_of(val_logits, torch.from_numpy(val.labels),
                           torch.from_numpy(val.teacher_logits)).item()
        val_accuracy = float(((val_logits.numpy() > 0) == (val.labels == 1)).mean())
        row = {"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss,
               "val_accuracy": val_accuracy}
        history.append(row)
        on_epoch(epoch, row)
    return history
