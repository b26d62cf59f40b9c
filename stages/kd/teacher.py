"""The frozen teacher: load it from local files, score reviews, and save/check its soft labels.

Soft labels are one Parquet file per split (`id`, `teacher_logits` as [negative, positive]),
with metadata in the file itself: which teacher (sha256 of its weights), tokenizer, max length,
truncation, and the fingerprint of the prepared split it scored. `load_soft_labels` refuses a
file whose metadata does not match what the caller expects.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from kd.device import autocast
from kd.errors import PipelineError

_META_KEY = b"kd.soft_labels"


class TeacherError(PipelineError):
    """The teacher folder or its soft labels are missing, wrong, or stale."""


def head_tail(ids: list[int], head: int, budget: int) -> list[int]:
    """Keep the first `head` and the last `budget - head` ids of a sequence longer than `budget`.

    Sun et al. (2019) found head+tail truncation the best way to fit IMDb reviews into BERT.
    """
    if len(ids) <= budget:
        return ids
    return ids[:head] + ids[len(ids) - (budget - head):]


def _weights_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def teacher_sha256(path: str | Path) -> str:
    """sha256 over the teacher's safetensors weights: the teacher's identity in every artifact."""
    digest = hashlib.sha256()
    for weights in _weights_files(Path(path)):
        with open(weights, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_teacher(path: str | Path):
    """Check that `path` holds a 2-label sequence classifier with safetensors weights.

    Returns:
        The model's `transformers` config.

    Raises:
        TeacherError: the folder is missing, is not a Hugging Face checkpoint, is not a 2-label
            sequence classifier, or has no safetensors weights.
    """
    from transformers import AutoConfig

    path = Path(path)
    if not path.is_dir():
        raise TeacherError(f"teacher folder {path} not found: fetch it with `dvc pull`, "
                           "or set teacher.path in params.yaml to a local checkpoint folder")
    if not (path / "config.json").is_file():
        raise TeacherError(f"{path} is not a Hugging Face checkpoint: it has no config.json")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise TeacherError(f"{path} is not a sequence classifier (architectures: {architectures});"
                           " the teacher must be an *ForSequenceClassification checkpoint")
    if config.num_labels != 2:
        raise TeacherError(f"{path} has {config.num_labels} labels; the teacher must have 2 "
                           "(negative, positive)")
    if not _weights_files(path):
        raise TeacherError(f"{path} has no *.safetensors weights; convert the checkpoint with "
                           "`model.save_pretrained(path)` (we never unpickle weights)")
    return config


def positive_index(config) -> int:
    """Which of the two outputs means "positive": a label named pos*, else index 1."""
    for index, name in config.id2label.items():
        if str(name).lower().startswith("pos"):
            return int(index)
    return 1


def load_teacher(path: str | Path):
    """Load the checked teacher and its tokenizer from local files only, in eval mode.

    Returns:
        (model, tokenizer, identity) where identity describes the teacher for artifacts.

    Raises:
        TeacherError: see `check_teacher`.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = check_teacher(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, local_files_only=True, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    identity = {
        "teacher_path": str(path),
        "teacher_sha256": teacher_sha256(path),
        "teacher_architecture": config.architectures[0],
        "tokenizer": type(tokenizer).__name__,
        "positive_index": positive_index(config),
    }
    return model.eval(), tokenizer, identity


def encode_head_tail(tokenizer, texts: list[str], max_len: int,
                     head_tokens: int) -> list[list[int]]:
    """Tokenize reviews for the teacher: head+tail truncation, then [CLS] ... [SEP].

    BERT-family tokenizers name their start and end tokens cls/sep (RoBERTa's <s> and </s> too).
    """
    encoded = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)
    return [[tokenizer.cls_token_id, *head_tail(ids, head_tokens, max_len - 2),
             tokenizer.sep_token_id] for ids in encoded["input_ids"]]


@torch.inference_mode()
def score(model, tokenizer, texts: list[str], max_len: int, head_tokens: int, batch_size: int,
          positive: int = 1, desc: str = "teacher", device: torch.device | None = None,
          precision: str = "bf16") -> np.ndarray:
    """The teacher's logits for every review, in the order given.

    Batches are sorted by length so little time goes to padding; with precision "bf16" the
    model runs under bf16 autocast (about 3x faster than fp32 on AMX cores). Progress shows
    reviews/s.

    Returns:
        float32 array (N, 2): [negative, positive] logits.
    """
    device = device or torch.device("cpu")
    logits = np.zeros((len(texts), 2), dtype=np.float32)
    if len(texts) == 0:
        return logits
    input_ids = encode_head_tail(tokenizer, list(texts), max_len, head_tokens)
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    pad_id = tokenizer.pad_token_id or 0
    with tqdm(total=len(texts), desc=desc, unit="review", mininterval=5) as progress, \
            autocast(device, precision):
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(input_ids[row]) for row in rows)
            batch = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, L)
            mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, L)
            for i, row in enumerate(rows):
                batch[i, :len(input_ids[row])] = torch.tensor(input_ids[row])
                mask[i, :len(input_ids[row])] = 1
            output = model(input_ids=batch.to(device), attention_mask=mask.to(device))
            output = output.logits.float().cpu()  # (B, 2)
            logits[rows] = output[:, [1 - positive, positive]].numpy()
            progress.update(len(rows))
    return logits


def save_soft_labels(path: str | Path, ids: list[str], teacher_logits: np.ndarray,
                     meta: dict) -> None:
    """Write soft labels keyed by review id, with `meta` stored in the file itself."""
    table = pa.table({
        "id": pa.array(ids, pa.string()),
        "teacher_logits": pa.array(list(teacher_logits.astype(np.float32)),
                                   pa.list_(pa.float32(), 2)),
    })
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta, sort_keys=True)})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def load_soft_labels(path: str | Path, ids: list[str], expected: dict) -> np.ndarray:
    """Read soft labels and check they belong to this data and this setup.

    Args:
        path: a file written by `save_soft_labels`.
        ids: the review ids of the prepared split, in the order wanted.
        expected: metadata values that must match (e.g. `data_fingerprint`).

    Returns:
        float32 array (N, 2) of [negative, positive] teacher logits aligned with `ids`.

    Raises:
        TeacherError: missing file, no metadata, a mismatched value, or a review without logits.
    """
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"{path} not found: run `dvc repro teacher_infer` first")
    table = pq.read_table(path)
    raw_meta = (table.schema.metadata or {}).get(_META_KEY)
    if raw_meta is None:
        raise TeacherError(f"{path} has no soft-label metadata: it was not written by "
                           "teacher_infer; run `dvc repro teacher_infer`")
    meta = json.loads(raw_meta)
    for key, value in expected.items():
        if meta.get(key) != value:
            raise TeacherError(
                f"{path} is stale: its {key} is {meta.get(key)!r} but the prepared data needs "
                f"{value!r}; rescore with `dvc repro teacher_infer`")
    row_of = {review_id: row for row, review_id in enumerate(table.column("id").to_pylist())}
    missing = [review_id for review_id in ids if review_id not in row_of]
    if missing:
        raise TeacherError(f"{path} has no teacher logits for {len(missing)} review(s), e.g. "
                           f"{missing[0]!r}; rescore with `dvc repro teacher_infer`")
    all_logits = np.asarray(table.column("teacher_logits").to_pylist(), dtype=np.float32)
    return all_logits[[row_of[review_id] for review_id in ids]]


def read_soft_label_meta(path: str | Path) -> dict:
    """The metadata stored in a soft-label file."""
    return json.loads(pq.read_schema(path).metadata[_META_KEY])
