"""Resumable training state: one safetensors file, written atomically.

It holds the weights, the optimizer's state, the learning-rate scheduler's, the random
generators' and a JSON header of the caller's (its place in the run, history so far), so that a
run restarted from it continues exactly where the saved one was. A run killed while writing
leaves the previous state, never half a file (written beside it, then renamed). No pickle: the
tensors are safetensors, everything else JSON.

The teacher's fine-tuning (`kd.teacher.finetune`) and the students' loop (`kd.student.train`)
use it; `work_dir` names the folder a run keeps it in.
"""

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def save_state(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler=None, header: dict | None = None) -> None:
    """Write the training state to `path` (atomically).

    Args:
        scheduler: a `torch.optim.lr_scheduler` object, or None.
        header: JSON-serialisable values the caller needs back (`load_state` returns them).
    """
    tensors = {f"model.{name}": tensor.detach().cpu().contiguous()
               for name, tensor in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    metadata = {
        "header": json.dumps(header or {}),
        "param_groups": json.dumps(optimizer_state["param_groups"]),
        # LambdaLR and friends: counters and learning rates (their functions are rebuilt by the
        # caller, and state_dict leaves them out).
        "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else None),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)


def load_state(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler=None) -> dict:
    """Restore what `save_state` wrote, in place (model, optimizer, scheduler, generators).

    Returns:
        The caller's header.
    """
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    device = next(model.parameters()).device
    model.load_state_dict({name[len("model."):]: tensor for name, tensor in tensors.items()
                           if name.startswith("model.")})
    state: dict = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor if key == "step" else tensor.to(device)
    optimizer.load_state_dict({"state": state,
                               "param_groups": json.loads(metadata["param_groups"])})
    scheduler_state = json.loads(metadata["scheduler"])
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[f"rng.cuda.{index}"] for index in range(torch.cuda.device_count())
                   if f"rng.cuda.{index}" in tensors]
    if cuda_states:
        torch.cuda.set_rng_state_all(cuda_states)
    return json.loads(metadata["header"])


def work_dir(root: str | Path, out_dir: str | Path, meta: dict, code: list[Path]) -> Path:
    """The work folder of one exact run: `root/<out_dir's name>-<digest>`, the digest taken over
    `meta` (its data and params) and the bytes of `code`, so a folder left by other inputs or
    other code is never resumed."""
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for path in code:
        digest.update(Path(path).read_bytes())
    return Path(root) / f"{Path(out_dir).name}-{digest.hexdigest()[:16]}"
