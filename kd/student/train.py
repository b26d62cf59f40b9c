"""Training and inference loops for the students (any arch: they share `embed`/`classify`)."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kd.device import autocast
from kd.state import load_state, save_state
from kd.student.examples import Examples
from kd.student.inference import logit_accuracy, predict_logits
from kd.student.losses import distillation_loss
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
        yield (torch.from_numpy(pad_batch([examples.input_ids[row] for row in rows], min_len)),
               torch.from_numpy(examples.labels[rows]),
               torch.from_numpy(examples.teacher_logits[rows]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The calibration temperature: the T > 0 that minimises the log loss of
    sigmoid(logits / T) against `labels` (temperature scaling, Guo et al. 2017).

    One scalar, so the ranking (accuracy, ROC-AUC) is unchanged and only the confidence moves.
    With K > 2 labels, the T that minimises the cross-entropy of softmax(logits / T): one
    scalar again, so the top label never changes.

    Args:
        logits: (N,) a model's logits on held-out reviews; (N, K) for K > 2 labels.
        labels: (N,) 0/1; 0 .. K-1 for (N, K) logits.
    """
    if np.ndim(logits) == 2:
        return _fit_class_temperature(logits, labels)
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


def _fit_class_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """`fit_temperature` for K > 2 labels: logits (N, K), labels (N,) in 0 .. K-1."""
    logits_t = torch.from_numpy(np.asarray(logits, dtype=np.float64))  # (N, K)
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))  # (N,)
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_temperature.exp(), labels_t)
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
    precision: str = "bf16"  # "bf16": autocast forward/backward; "fp32"
    adversarial: float = 0.0  # epsilon of the adversarial perturbation of the word vectors
    ngram_lr: float = 0.0  # learning rate of the n-gram branch (parameters `ngrams.*`); 0 = lr
    device: str = "cpu"


def adversarial_perturbation(loss: torch.Tensor, embedded: torch.Tensor,
                             input_ids: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The perturbation of the word vectors that raises the loss most, to first order
    (Miyato et al. 2017): epsilon * g / ||g|| per review, g the loss's gradient on its word
    vectors, scaled by sqrt(review length) so epsilon is a per-word-piece size.

    Args:
        loss: the scalar loss on the clean input.
        embedded: (B, L, E) the word vectors the loss was computed from.
        input_ids: (B, L), for the reviews' lengths.

    Returns:
        (B, L, E), no gradient.
    """
    (gradient,) = torch.autograd.grad(loss, embedded, retain_graph=True)
    gradient = gradient.detach().float()
    norms = gradient.flatten(1).norm(dim=1).clamp(min=1e-12)  # (B,)
    lengths = (input_ids != 0).sum(dim=1).clamp(min=1).float()  # (B,)
    scale = epsilon * lengths.sqrt() / norms  # (B,)
    return (gradient * scale[:, None, None]).to(embedded.dtype)


def parameter_groups(model: torch.nn.Module, ngram_lr: float) -> list[dict]:
    """The optimizer's groups: the n-gram branch at its own learning rate, if it has one.

    A linear model over a million hashed n-grams learns far slower than the convolutions at
    the same step size: most n-grams occur in a few reviews, so their weights get few updates.
    """
    ngrams = [p for name, p in model.named_parameters() if name.startswith("ngrams.")]
    if not ngrams or not ngram_lr:
        return [{"params": list(model.parameters())}]
    rest = [p for name, p in model.named_parameters() if not name.startswith("ngrams.")]
    return [{"params": rest}, {"params": ngrams, "lr": ngram_lr}]


def fit(model: torch.nn.Module, train: Examples, val: Examples, config: FitConfig,
        on_epoch: Callable[[int, dict], None], state_path: str | Path | None = None) -> list[dict]:
    """Train with the distillation loss; after each epoch, score val and call `on_epoch`.

    Weights and optimizer state stay fp32; with precision "bf16" the forward and backward
    passes run under bf16 autocast. Validation runs in fp32, as `evaluate` does.

    With `state_path`, the training state (weights, optimizer, random generators, history) is
    written there after every epoch, and a run that finds one there continues after its last
    epoch: an interrupted training resumes, and ends with the same bytes as one that was not.

    Returns:
        One dict per epoch: epoch, train_loss, val_loss (same loss on val), val_accuracy.
    """
    device = torch.device(config.device)
    model.to(device)
    torch.manual_seed(config.seed)
    generator = np.random.default_rng(config.seed)
    optimizer = torch.optim.Adam(parameter_groups(model, config.ngram_lr), lr=config.lr)
    history: list[dict] = []
    if state_path is not None and Path(state_path).is_file():
        history = load_training_state(state_path, model, optimizer, generator)
        print(f"resuming after epoch {len(history)} from {state_path}", flush=True)

    def loss_of(logits, labels, teacher_logits):
        return distillation_loss(logits, labels, teacher_logits, alpha=config.alpha,
                                 temperature=config.temperature, kd_loss=config.kd_loss)

    for epoch in range(len(history) + 1, config.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        progress = tqdm(total=len(train), desc=f"epoch {epoch}/{config.epochs}", unit="review",
                        mininterval=10, leave=False)  # an epoch can take half an hour on a CPU
        for input_ids, labels, teacher_logits in _batches(train, config.batch_size,
                                                         model.min_len, generator):
            input_ids, labels = input_ids.to(device), labels.to(device)
            teacher_logits = teacher_logits.to(device)
            with autocast(device, config.precision):
                embedded = model.embed(input_ids)  # (B, L, E)
                logits = model.classify(embedded, input_ids)  # (B,)
            loss = loss_of(logits.float(), labels, teacher_logits)
            if config.adversarial > 0:
                noise = adversarial_perturbation(loss, embedded, input_ids, config.adversarial)
                with autocast(device, config.precision):
                    adversarial_logits = model.classify(embedded + noise, input_ids)
                loss = loss + loss_of(adversarial_logits.float(), labels, teacher_logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            seen += len(labels)
            progress.update(len(labels))
        progress.close()
        val_logits = torch.from_numpy(predict_logits(model, val.input_ids, device=device))
        val_loss = loss_of(val_logits, torch.from_numpy(val.labels),
                           torch.from_numpy(val.teacher_logits)).item()
        val_accuracy = logit_accuracy(val_logits.numpy(), val.labels)
        row = {"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss,
               "val_accuracy": val_accuracy}
        history.append(row)
        on_epoch(epoch, row)
        if state_path is not None:
            save_training_state(state_path, model, optimizer, generator, history)
    return history


def save_training_state(path: str | Path, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, generator: np.random.Generator,
                        history: list[dict]) -> None:
    """Everything a later run needs to continue exactly (`kd.state`: safetensors, written
    atomically), with the batch-order generator and the history so far."""
    save_state(path, model, optimizer,
               header={"history": history, "generator": generator.bit_generator.state})


def load_training_state(path: str | Path, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, generator: np.random.Generator
                        ) -> list[dict]:
    """Restore what `save_training_state` wrote, in place. Returns: the history so far."""
    header = load_state(path, model, optimizer)
    generator.bit_generator.state = header["generator"]
    return header["history"]
