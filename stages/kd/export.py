"""Portable forms of the student: ONNX (fp32) and ONNX int8 for every arch, and TorchScript
(fp32 and bf16) for the ones TorchScript compiles (TextCNN, BiLSTM).

An export folder runs on its own: the model files, the student's `tokenizer.json`, and
`metadata.json` (the forms it holds, the shortest input the model accepts, the names of labels
0 and 1 as `prepare` found them in the data, where the student came from). Predictions answer
with those names. `load_student` serves any form: the ONNX ones with ONNX Runtime and
numpy, the TorchScript ones with torch (this module imports torch for the exports either way).
"""

import copy
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from kd.errors import PipelineError
from kd.labels import IMDB_LABELS
from kd.model import Student

LABELS = IMDB_LABELS  # the names of an export that does not carry its own
FILES = {"torchscript": "student.pt", "bf16": "student.bf16.pt", "onnx": "student.onnx",
         "int8": "student.int8.onnx"}
# Reviews per forward pass. A batch runs as length-sorted groups of this many, each padded to
# its own longest review: one long review then pads 7 others, not 63 (batch-64 throughput
# about 2x for whole IMDb reviews; the answers are the same, the model ignores padding).
GROUP_SIZE = 8


def forms_of(model: Student) -> list[str]:
    """The forms `export_all` writes for this student."""
    return [form for form in FILES if model.scriptable or form in ("onnx", "int8")]


def export_torchscript(model: Student, path: str | Path,
                       dtype: torch.dtype = torch.float32) -> None:
    """Script the model in `dtype` (no tracing: any batch size and length stay valid).

    bf16 halves the file and runs the convolutions on the CPU's bf16 units. The archive is
    written without TorchScript's debug records (`*.debug_pkl`: source ranges naming the
    absolute paths of our modules and of torch's in this checkout and virtual environment),
    so a clone anywhere writes the same bytes; a TorchScript error then names no Python line.
    """
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(copy.deepcopy(model).eval().to(dtype)), buffer)
    buffer.seek(0)
    reader = torch._C.PyTorchFileReader(buffer)
    # The writer adds the version and a serialization id computed from the records it wrote.
    skip = {".data/version", "version", ".data/serialization_id"}
    writer = torch._C.PyTorchFileWriter(str(path))
    for name in reader.get_all_records():
        if name not in skip and not name.endswith(".debug_pkl"):
            record = reader.get_record(name)
            writer.write_record(name, record, len(record))
    writer.write_end_of_file()


def export_onnx(model: Student, path: str | Path) -> None:
    """ONNX with dynamic batch and sequence axes: input_ids (B, L) int64 -> logits (B,)."""
    example = torch.ones((2, max(model.min_len, 2)), dtype=torch.long)
    torch.onnx.export(model.eval(), (example,), str(path), input_names=["input_ids"],
                      output_names=["logits"], dynamo=False,
                      dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                    "logits": {0: "batch"}})


def quantize_int8(onnx_path: str | Path, int8_path: str | Path,
                  op_types: tuple[str, ...] = ("Gather",)) -> None:
    """Dynamic int8 quantization of the `op_types` weights (the model's `int8_ops`).

    For the TextCNN and BiLSTM, the embedding table only (weights, dequantized on lookup): it is
    nearly all of their bytes, and ONNX Runtime's ConvInteger measured 3.6x slower than its
    fp32 Conv on this CPU (148 against 533 reviews/s). The transformer's matrix products too.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ONNX Runtime logs a warning on the root logger advising shape pre-processing, which
    # serves activation quantization; a weight-only table lookup has no use for it.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(op_types))
    finally:
        root.setLevel(level)


def export_all(model: Student, tokenizer_path: str | Path, out_dir: str | Path,
               meta: dict, labels: tuple[str, str] = LABELS) -> dict[str, Path]:
    """Write every form of the student (`forms_of`), its tokenizer and metadata into `out_dir`.

    Args:
        labels: the names of labels 0 and 1 (`kd.labels.read_label_names`): what predictions
            answer with.

    Returns:
        {form: path} for the forms written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {form: out / FILES[form] for form in forms_of(model)}
    if model.scriptable:
        export_torchscript(model, paths["torchscript"])
        export_torchscript(model, paths["bf16"], dtype=torch.bfloat16)
    export_onnx(model, paths["onnx"])
    quantize_int8(paths["onnx"], paths["int8"], model.int8_ops)
    shutil.copy(tokenizer_path, out / "tokenizer.json")
    metadata = {"labels": list(labels), "min_len": model.min_len,
                "files": {form: path.name for form, path in paths.items()}, **meta}
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return paths


class ExportedStudent:
    """One form of a student export: texts in, P(positive) out. Use `load_student`."""

    length_multiple = 1  # batches are padded to a multiple of this many tokens

    def __init__(self, export_dir: str | Path, form: str = "onnx", threads: int = 1):
        """Load once: the tokenizer, the metadata and the model file.

        Raises:
            PipelineError: an unknown form, or the folder lacks the export's files.
        """
        from tokenizers import Tokenizer

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
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.labels = tuple(self.metadata.get("labels", LABELS))  # names of labels 0 and 1
        self.form = form
        self._load(folder / files[form], threads)

    def _load(self, path: Path, threads: int) -> None:
        raise NotImplementedError

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Args: input_ids (B, L) int64. Returns: logits (B,) float32."""
        raise NotImplementedError

    def pad(self, sequences: list[list[int]]) -> np.ndarray:
        """Token ids (B, L), right-padded with 0 to the longest sequence and to `min_len`."""
        width = max([self.metadata["min_len"]] + [len(ids) for ids in sequences])
        width = -(-width // self.length_multiple) * self.length_multiple
        input_ids = np.zeros((len(sequences), width), dtype=np.int64)
        for row, ids in enumerate(sequences):
            input_ids[row, :len(ids)] = ids
        return input_ids

    def positive_probs(self, texts: list[str]) -> np.ndarray:
        """P(label 1) per text, (B,): P(positive) for IMDb. Run in groups of `GROUP_SIZE`
        reviews of similar length; the answers come back in the order of `texts`."""
        # encode_batch_fast skips the character offsets, which a classifier never reads.
        sequences = [encoding.ids for encoding in self.tokenizer.encode_batch_fast(texts)]
        order = np.argsort([len(ids) for ids in sequences], kind="stable")
        logits = np.zeros(len(texts), dtype=np.float32)
        for start in range(0, len(order), GROUP_SIZE):
            rows = order[start:start + GROUP_SIZE]
            logits[rows] = self.logits(self.pad([sequences[row] for row in rows]))
        return 1.0 / (1.0 + np.exp(-logits))

    def predict(self, texts: list[str]) -> list[dict]:
        """[{"label": the name of label 0 or 1, "positive_prob": P(label 1)}, ...]."""
        return [{"label": self.labels[int(prob >= 0.5)], "positive_prob": round(float(prob), 6)}
                for prob in self.positive_probs(texts)]


class OnnxStudent(ExportedStudent):
    """The ONNX forms (onnx, int8), served by ONNX Runtime."""

    def _load(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
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

    def _load(self, path: Path, threads: int) -> None:
        torch.set_num_threads(threads)
        self.module = torch.jit.load(str(path))

    @torch.inference_mode()
    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        return self.module(torch.from_numpy(input_ids)).float().numpy()


def load_student(export_dir: str | Path, form: str = "onnx", threads: int = 1) -> ExportedStudent:
    """Serve one form of a student export.

    Args:
        export_dir: a folder written by `export_all`.
        form: onnx (fp32, the fastest for single reviews here), int8 (4x smaller), bf16 or
            torchscript.
        threads: intra-op threads.

    Raises:
        PipelineError: an unknown form, or the folder lacks the export's files.
    """
    if form in ("onnx", "int8"):
        return OnnxStudent(export_dir, form, threads)
    return ScriptedStudent(export_dir, form, threads)
