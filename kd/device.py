"""Where the heavy steps run: one function picks the device, one the precision, one sets up a
repeatable run. Teacher scoring, teacher fine-tuning, student training, evaluation and the
benchmark all go through them."""

import os

import torch

from kd.errors import PipelineError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA, then Apple's MPS, then the CPU; or the device named.

    Raises:
        PipelineError: the named device is not on this machine.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise PipelineError(f"params.yaml: `device` = {name!r}, but this machine has no CUDA "
                                "device (set device: auto or cpu)")
        if (device.index or 0) >= count:
            raise PipelineError(f"params.yaml: `device` = {name!r}, but this machine has {count} "
                                f"CUDA device(s): cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise PipelineError(f"params.yaml: `device` = {name!r}, but MPS is not available here "
                            "(set device: auto or cpu)")
    return device


def bf16_supported(device: torch.device) -> bool:
    """Whether `device` runs bf16 matrix products natively: a CPU with AVX512-BF16 or AMX, or an
    Ampere-or-newer GPU. Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cpu":
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto`: bf16 autocast where the hardware has it, fp32 elsewhere; or the one named.

    Raises:
        PipelineError: bf16 asked for on a device without it.
    """
    if name == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if name == "bf16" and not bf16_supported(device):
        raise PipelineError(f"bf16 was asked for, but {device} has no native bf16 (needs an "
                            "AVX512-BF16/AMX CPU or an Ampere-or-newer GPU); use fp32 or auto")
    return name


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` on `device` (a no-op for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def make_repeatable(seed: int, threads: int = 0) -> int:
    """Seed torch, fix the CPU thread count and ask for deterministic kernels, so the same
    inputs give the same bytes on the same machine type. The thread count is part of it:
    reductions split over another number of threads add up in another order.

    Returns:
        The thread count used (`threads`, or every core for 0).
    """
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    # cuBLAS needs this to be repeatable; it must be set before the first CUDA call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    return threads
