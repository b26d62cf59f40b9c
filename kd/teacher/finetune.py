"""Make a teacher: a base encoder with a new 2-label head, fine-tuned on the prepared training
split with the shipped teacher's recipe (../shared/models/minilm-l6-imdb).

The recipe: AdamW with weight decay on every weight but the biases and LayerNorm's (as the
Hugging Face Trainer does), a linear warm-up over the first `warmup` share of the steps and a
linear decay to 0 after it, gradients clipped to `max_grad_norm`, cross-entropy on the two
logits, bf16 autocast where the hardware has it (`kd.device`). Reviews are cut as the teacher
will read them in `teacher_infer`: head + tail (`kd.teacher.scoring.encode_head_tail`).

Each epoch visits the training reviews in an order drawn from (seed, epoch) alone, so a run
resumed in the middle of an epoch knows which batches are left. The training state (`kd.state`:
weights, AdamW, the scheduler, the random generator) is saved every `save_every` steps and at
the end of every epoch; a run that finds one continues after it and ends with the same bytes as
a run that was never interrupted (same machine type and thread count, as `kd.device` says).
"""

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kd.device import autocast
from kd.errors import PipelineError
from kd.state import load_state, save_state
from kd.teacher.scoring import PlannedBatch, assemble, encode_head_tail, score_batches

TRAINING_FILE = "training.json"  # beside the made teacher: its recipe, data and history
_ENCODE_REVIEWS = 1024  # reviews tokenized per call


class FinetuneError(PipelineError):
    """The base encoder is missing or not a Hugging Face encoder."""


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int
    batch_size: int
    lr: float
    warmup: float  # share of the steps with a linear warm-up
    weight_decay: float
    max_grad_norm: float  # 0: no clipping
    seed: int
    precision: str = "bf16"  # "bf16": autocast forward and backward; "fp32"
    device: str = "cpu"
    save_every: int = 0  # steps between states inside an epoch; 0: epoch ends only


def check_base(path: str | Path) -> None:
    """Check that `path` holds a Hugging Face encoder with safetensors weights and a tokenizer.

    Raises:
        FinetuneError: what is missing, and how to get it.
    """
    path = Path(path)
    if not path.is_dir():
        raise FinetuneError(f"base encoder folder {path} not found: fetch it with `dvc pull "
                            "models/base-encoder.dvc`, or set finetune.base to a local "
                            "Hugging Face encoder folder")
    if not (path / "config.json").is_file():
        raise FinetuneError(f"{path} is not a Hugging Face checkpoint: it has no config.json")
    if not sorted(path.glob("*.safetensors")):
        raise FinetuneError(f"{path} has no *.safetensors weights; save it with "
                            "`model.save_pretrained(path)` (we never unpickle weights)")
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise FinetuneError(f"{path} has no tokenizer (tokenizer.json or vocab.txt)")


def build_teacher(base: str | Path, labels: tuple[str, str], hidden_dropout: float,
                  attention_dropout: float):
    """The base encoder with a new, randomly initialised 2-label head (seed torch first).

    `id2label` names labels 0 and 1 as the data does, so the made teacher says what its outputs
    mean. The dropouts apply where the config has them (BERT-style names).

    Raises:
        FinetuneError: see `check_base`.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging

    check_base(base)
    config = AutoConfig.from_pretrained(base, local_files_only=True)
    config.num_labels = 2
    config.id2label = {0: labels[0], 1: labels[1]}
    config.label2id = {labels[0]: 0, labels[1]: 1}
    for name, value in (("hidden_dropout_prob", hidden_dropout),
                        ("attention_probs_dropout_prob", attention_dropout)):
        if hasattr(config, name):
            setattr(config, name, value)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # "newly initialized: classifier.*" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base, config=config, local_files_only=True, use_safetensors=True)
    finally:
        logging.set_verbosity(verbosity)
    return model


def load_base_tokenizer(base: str | Path):
    """The base encoder's tokenizer, from local files only."""
    from transformers import AutoTokenizer

    check_base(base)
    return AutoTokenizer.from_pretrained(base, local_files_only=True)


def encode(tokenizer, texts, max_len: int, head_tokens: int) -> list[np.ndarray]:
    """[CLS] head + tail [SEP] word pieces of every review, as int32 arrays."""
    input_ids = []
    for start in range(0, len(texts), _ENCODE_REVIEWS):
        part = list(texts[start:start + _ENCODE_REVIEWS])
        input_ids += [np.asarray(ids, dtype=np.int32)
                      for ids in encode_head_tail(tokenizer, part, max_len, head_tokens)]
    return input_ids


def epoch_batches(reviews: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch (row numbers), in a random order decided by (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(reviews)
    return [order[start:start + batch_size] for start in range(0, reviews, batch_size)]


def collate(input_ids: list[np.ndarray], rows: np.ndarray,
            pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids (B, L) padded with `pad_id` to the longest review, and their attention mask
    (B, L): 1 on word pieces, 0 on padding."""
    width = max(len(input_ids[row]) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, :len(input_ids[row])] = input_ids[row]
        mask[i, :len(input_ids[row])] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights (the 1-d parameters) are not decayed."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float):
    """Linear warm-up over ceil(warmup * total_steps) steps, then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, math.ceil(warmup * total_steps),
                                           total_steps)


def evaluate(model, batches: list[PlannedBatch], labels: np.ndarray, device: torch.device,
             precision: str) -> dict:
    """Accuracy and cross-entropy on planned batches (`kd.teacher.scoring.plan_batches`), as
    `teacher_infer` scores them; the model goes back to training mode."""
    model.eval()
    try:
        logits = assemble(batches, score_batches(model, batches, 1, device, precision),
                          len(labels))  # (N, 2)
    finally:
        model.train()
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return {"val_accuracy": float((logits.argmax(axis=1) == labels).mean()), "val_loss": loss}


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Prints the pace every `every` seconds: reviews/s over this process's steps, and the time
    left for the whole run at that pace (evaluation not included)."""

    def __init__(self, total_steps: int, done_steps: int, log: Callable[[str], object] = print,
                 every: float = 30.0):
        self.total, self.first = total_steps, done_steps
        self.log, self.every = log, every
        self.started = self.last = time.perf_counter()
        self.reviews = 0

    def update(self, step: int, reviews: int, epoch: int, epochs: int, loss: float,
               lr: float) -> None:
        self.reviews += reviews
        now = time.perf_counter()
        if now - self.last < self.every and step not in (self.first + 1, self.total):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        left = (self.total - step) * elapsed / (step - self.first)
        self.log(f"epoch {epoch}/{epochs} | step {step}/{self.total} | "
                 f"{self.reviews / elapsed:.1f} reviews/s | loss {loss:.4f} | lr {lr:.2e} | "
                 f"ETA {_duration(left)}")


def finetune(model, input_ids: list[np.ndarray], labels: np.ndarray, config: FinetuneConfig,
             pad_id: int, state_path: str | Path | None = None,
             evaluate_fn: Callable[[torch.nn.Module], dict] | None = None,
             log: Callable[[str], object] = print) -> list[dict]:
    """Fine-tune `model` (a sequence classifier) on encoded reviews and their 0/1 labels.

    With `state_path`, the training state is saved there every `config.save_every` steps and
    at every epoch's end, and a run that finds one continues after it.

    Args:
        input_ids: one int array of word pieces per review (`encode`).
        labels: (N,) int64 0/1.
        evaluate_fn: called at each epoch's end; its dict joins the epoch's row.
        log: where progress lines go.

    Returns:
        One dict per epoch: epoch, train_loss (mean over its reviews), and `evaluate_fn`'s.
    """
    device = torch.device(config.device)
    model.to(device).train()
    steps_per_epoch = math.ceil(len(input_ids) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    scheduler = make_scheduler(optimizer, total_steps, config.warmup)
    step, history, loss_sum, seen = 0, [], 0.0, 0
    if state_path is not None and Path(state_path).is_file():
        header = load_state(state_path, model, optimizer, scheduler)
        step, history = header["step"], header["history"]
        loss_sum, seen = header["loss_sum"], header["seen"]
        log(f"resuming after step {step} of {total_steps} (epoch {len(history) + 1}) from "
            f"{state_path}")
    labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    pace = Progress(total_steps, step, log)

    def save() -> None:
        save_state(state_path, model, optimizer, scheduler,
                   {"step": step, "history": history, "loss_sum": loss_sum, "seen": seen})

    while step < total_steps:
        epoch = step // steps_per_epoch + 1
        batches = epoch_batches(len(input_ids), config.batch_size, config.seed, epoch)
        for rows in batches[step - (epoch - 1) * steps_per_epoch:]:
            ids, mask = collate(input_ids, rows, pad_id)  # (B, L), (B, L)
            with autocast(device, config.precision):
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            loss = F.cross_entropy(logits.float(), labels[torch.from_numpy(rows)].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss.item() * len(rows)
            seen += len(rows)
            pace.update(step, len(rows), epoch, config.epochs, loss_sum / seen,
                        scheduler.get_last_lr()[0])
            if (state_path is not None and config.save_every and step % config.save_every == 0
                    and step % steps_per_epoch):
                save()
        row = {"epoch": epoch, "train_loss": loss_sum / seen,
               **(evaluate_fn(model) if evaluate_fn is not None else {})}
        history.append(row)
        loss_sum, seen = 0.0, 0
        if state_path is not None:
            save()  # the epoch's checkpoint
        log(f"epoch {epoch}/{config.epochs} done | train loss {row['train_loss']:.4f}"
            + "".join(f" | {key} {value:.4f}" for key, value in row.items()
                      if key not in ("epoch", "train_loss")))
    return history


def save_teacher(model, tokenizer, out_dir: str | Path, training: dict) -> Path:
    """Write the made teacher as a Hugging Face checkpoint `teacher_infer` reads: config (with
    `id2label`), safetensors weights, tokenizer, and `training.json` (recipe, data, history).

    Only what the inputs decide is written: no times, paths of this machine or run ids.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.cpu().save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / TRAINING_FILE).write_text(json.dumps(training, indent=2, sort_keys=True) + "\n")
    umask = os.umask(0)
    os.umask(umask)
    for path in out.iterdir():  # transformers writes the weights 0600 (a temporary file)
        path.chmod(0o666 & ~umask)
    return out
