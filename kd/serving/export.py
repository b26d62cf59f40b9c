"""Portable forms of the student: ONNX (fp32) and ONNX int8 for every arch, and TorchScript
(fp32 and bf16) for the ones TorchScript compiles (TextCNN, BiLSTM).

An export folder runs on its own: the model files, the student's `tokenizer.json`, and
`metadata.json` (the forms it holds, the shortest input the model accepts, the names of labels
0 and 1 as `prepare` found them in the data, where the student came from). Predictions answer
with those names. `kd.serving.runtime.load_student` serves any form.
"""

import copy
import io
import json
import logging
import shutil
from pathlib import Path

import torch

from kd.serving.runtime import FILES, LABELS
from kd.student.models import Student


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
        labels: the names of labels 0 and 1 (`kd.data.labels.read_label_names`): what predictions
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
