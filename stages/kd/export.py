"""Portable forms of the student: TorchScript, ONNX (fp32) and ONNX int8.

An export folder runs on its own: the model files, the student's `tokenizer.json`, and
`metadata.json` (max length, the shortest input the convolutions accept, label names, where
the student came from). `OnnxStudent` serves it with ONNX Runtime and numpy, without torch.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from kd.errors import PipelineError
from kd.model import TextCNN

LABELS = ("negative", "positive")
FILES = {"torchscript": "student.pt", "onnx": "student.onnx", "int8": "student.int8.onnx"}


def export_torchscript(model: TextCNN, path: str | Path) -> None:
    """Script the model (no tracing: any batch size and length stay valid)."""
    torch.jit.script(model.eval()).save(str(path))


def export_onnx(model: TextCNN, path: str | Path) -> None:
    """ONNX with dynamic batch and sequence axes: input_ids (B, L) int64 -> logits (B,)."""
    example = torch.ones((2, max(model.config.kernel_sizes)), dtype=torch.long)
    torch.onnx.export(model.eval(), (example,), str(path), input_names=["input_ids"],
                      output_names=["logits"], dynamo=False,
                      dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                    "logits": {0: "batch"}})


def quantize_int8(onnx_path: str | Path, int8_path: str | Path) -> None:
    """Dynamic int8 quantization (weights int8, activations quantized on the fly)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8)


def export_all(model: TextCNN, tokenizer_path: str | Path, out_dir: str | Path,
               meta: dict) -> dict[str, Path]:
    """Write every form of the student, its tokenizer and metadata into `out_dir`.

    Returns:
        {"torchscript" | "onnx" | "int8": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {form: out / name for form, name in FILES.items()}
    export_torchscript(model, paths["torchscript"])
    export_onnx(model, paths["onnx"])
    quantize_int8(paths["onnx"], paths["int8"])
    shutil.copy(tokenizer_path, out / "tokenizer.json")
    metadata = {"labels": list(LABELS), "min_len": max(model.config.kernel_sizes),
                "files": FILES, **meta}
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return paths


class OnnxStudent:
    """A student export served by ONNX Runtime: texts in, P(positive) out."""

    def __init__(self, export_dir: str | Path, form: str = "int8", threads: int = 1):
        """Load once: the tokenizer, the metadata and an ONNX Runtime session.

        Raises:
            PipelineError: the folder lacks the export's files.
        """
        import onnxruntime
        from tokenizers import Tokenizer

        folder = Path(export_dir)
        needed = [folder / "metadata.json", folder / "tokenizer.json", folder / FILES[form]]
        missing = [str(path) for path in needed if not path.is_file()]
        if missing:
            raise PipelineError(f"student export incomplete, missing {', '.join(missing)}: "
                                "run `dvc repro export`")
        self.metadata = json.loads((folder / "metadata.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(folder / FILES[form]), options,
                                                    providers=["CPUExecutionProvider"])
        self.form = form

    def encode(self, texts: list[str]) -> np.ndarray:
        """Token ids (B, L), right-padded with 0 to the longest text and to `min_len`."""
        encodings = self.tokenizer.encode_batch(texts)
        width = max([self.metadata["min_len"]] + [len(encoding.ids) for encoding in encodings])
        input_ids = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, :len(encoding.ids)] = encoding.ids
        return input_ids

    def positive_probs(self, texts: list[str]) -> np.ndarray:
        """P(positive) per text, (B,)."""
        (logits,) = self.session.run(None, {"input_ids": self.encode(texts)})
        return 1.0 / (1.0 + np.exp(-logits))

    def predict(self, texts: list[str]) -> list[dict]:
        """[{"label": "positive" | "negative", "positive_prob": p}, ...]."""
        return [{"label": LABELS[int(prob >= 0.5)], "positive_prob": round(float(prob), 6)}
                for prob in self.positive_probs(texts)]
