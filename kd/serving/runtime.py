"""Serving a student export: texts in, probabilities out, with ONNX Runtime or TorchScript.

An export folder (`kd.serving.export.export_all`) runs on its own: the model files, the student's
`tokenizer.json` and `metadata.json` (the forms it holds, the shortest input the model
accepts, the names of labels 0 and 1). The ONNX forms need numpy, `tokenizers`, nanotoken and
ONNX Runtime only: this module imports torch for the TorchScript forms alone, when one is
loaded, so a server installed from requirements-serve.txt runs without it.
"""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from kd.data.labels import IMDB_LABELS
from kd.errors import PipelineError
from kd.text import PAD_ID, Encoder

LABELS = IMDB_LABELS  # the names of an export that does not carry its own
FILES = {"torchscript": "student.pt", "bf16": "student.bf16.pt", "onnx": "student.onnx",
         "int8": "student.int8.onnx"}
# Reviews per forward pass. A batch runs as length-sorted groups of this many, each padded to
# its own longest review: one long review then pads 7 others, not 63 (batch-64 throughput
# about 2x for whole IMDb reviews; the answers are the same, the model ignores padding).
GROUP_SIZE = 8


def length_groups(ids: np.ndarray, offsets: np.ndarray, min_len: int,
                  length_multiple: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split encoded texts into length-sorted groups of `GROUP_SIZE`, each padded with PAD_ID
    to its own longest text (at least `min_len`, rounded up to `length_multiple`).

    Args:
        ids, offsets: `Encoder.ragged`'s output: text i is ids[offsets[i]:offsets[i + 1]].

    Returns:
        [(rows (G,): which texts, input_ids (G, W) int64), ...], shortest group first.
    """
    lengths = np.diff(offsets)  # (N,)
    order = np.argsort(lengths, kind="stable")
    source = np.append(ids, PAD_ID)  # the padding reads the last element
    groups = []
    for start in range(0, len(order), GROUP_SIZE):
        rows = order[start:start + GROUP_SIZE]
        width = max(min_len, int(lengths[rows].max()))
        width = -(-width // length_multiple) * length_multiple
        positions = np.arange(width)  # (W,)
        inside = positions < lengths[rows, None]  # (G, W)
        index = np.where(inside, offsets[rows, None] + positions, len(source) - 1)  # (G, W)
        groups.append((rows, source[index]))
    return groups


class ExportedStudent:
    """One form of a student export: texts in, P(label 1) out. Use `load_student`.

    A batch's groups run on `threads` worker threads, one model call each on one core: for
    small students, calls side by side keep both cores busier than one call split in two.
    """

    length_multiple = 1  # batches are padded to a multiple of this many tokens

    def __init__(self, export_dir: str | Path, form: str = "onnx", threads: int = 1):
        """Load once: the tokenizer, the metadata and the model file.

        Raises:
            PipelineError: an unknown form, or the folder lacks the export's files.
        """
        if form not in FILES:
            raise PipelineError(f"unknown student form {form!r}; choose one of {list(FILES)}")
        folder = Path(export_dir)
        needed = [folder / "metadata.json", folder / "tokenizer.json"]
        missing = [str(path) for path in needed if not path.is_file()]
        if missing:
            raise PipelineError(f"student export incomplete, missing {', '.join(missing)}: "
                                "run `dvc repro export`")
        self.metadata = json.loads((folder / "metadata.json").read_text())
        files = self.metadata.get("files", FILES)
        if form not in files:
            raise PipelineError(f"{folder} has no {form} form of this student; it has "
                                f"{', '.join(files)}")
        if not (folder / files[form]).is_file():
            raise PipelineError(f"student export incomplete, missing {folder / files[form]}: "
                                "run `dvc repro export`")
        self.encoder = Encoder(Tokenizer.from_file(str(folder / "tokenizer.json")))
        self.labels = tuple(self.metadata.get("labels", LABELS))  # names of labels 0 and 1
        self.form = form
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self._load(folder / files[form])

    def _load(self, path: Path) -> None:
        raise NotImplementedError

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Args: input_ids (B, L) int64. Returns: logits (B,) float32."""
        raise NotImplementedError

    def positive_probs(self, texts: list[str]) -> np.ndarray:
        """P(label 1) per text, (B,): P(positive) for IMDb. Run in groups of `GROUP_SIZE`
        reviews of similar length; the answers come back in the order of `texts`."""
        groups = length_groups(*self.encoder.ragged(texts), self.metadata["min_len"],
                               self.length_multiple)
        scored = (self.pool.map if self.pool and len(groups) > 1 else map)(
            lambda group: self.logits(group[1]), groups)
        logits = np.zeros(len(texts), dtype=np.float32)
        for (rows, _), group_logits in zip(groups, scored, strict=True):
            logits[rows] = group_logits
        return 1.0 / (1.0 + np.exp(-logits))

    def predict(self, texts: list[str]) -> list[dict]:
        """[{"label": the name of label 0 or 1, "positive_prob": P(label 1)}, ...]."""
        return [{"label": self.labels[int(prob >= 0.5)], "positive_prob": round(float(prob), 6)}
                for prob in self.positive_probs(texts)]


class OnnxStudent(ExportedStudent):
    """The ONNX forms (onnx, int8), served by ONNX Runtime."""

    def _load(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # the worker threads are the parallelism
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {"input_ids": input_ids})
        return logits


class ScriptedStudent(ExportedStudent):
    """The TorchScript forms (torchscript, bf16), served by torch."""

    # oneDNN builds a convolution kernel per input shape; padding to a multiple of 64 tokens
    # lets single reviews of similar length share one (the model ignores padding).
    length_multiple = 64

    def _load(self, path: Path) -> None:
        import torch

        # One intra-op thread a call (the worker threads are the parallelism): torch's thread
        # count is the process's, so this holds for every torch model it runs from now on.
        torch.set_num_threads(1)
        self.torch = torch
        self.module = torch.jit.load(str(path))

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(input_ids)).float().numpy()


def load_student(export_dir: str | Path, form: str = "onnx", threads: int = 1) -> ExportedStudent:
    """Serve one form of a student export.

    Args:
        export_dir: a folder written by `kd.serving.export.export_all`.
        form: onnx (fp32), int8 (4x smaller), bf16 or torchscript.
        threads: worker threads, each scoring one group of a batch at a time.

    Raises:
        PipelineError: an unknown form, or the folder lacks the export's files.
    """
    if form in ("onnx", "int8"):
        return OnnxStudent(export_dir, form, threads)
    return ScriptedStudent(export_dir, form, threads)
