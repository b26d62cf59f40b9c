"""Encoded reviews joined with the teacher's logits, checked against the data they came from."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd.data.splits import fingerprint, load_split
from kd.teacher.scoring import load_soft_labels
from kd.text import encode


@dataclass
class Examples:
    """Encoded reviews with their labels (-1 = unlabelled) and teacher logits (N, 2)."""

    ids: list[str]
    input_ids: list[list[int]]
    labels: np.ndarray
    teacher_logits: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def concat(self, other: "Examples") -> "Examples":
        return Examples(self.ids + other.ids, self.input_ids + other.input_ids,
                        np.concatenate([self.labels, other.labels]),
                        np.concatenate([self.teacher_logits, other.teacher_logits]))


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_examples(split: str, tokenizer, data_dir: str | Path, teacher_dir: str | Path | None,
                  teacher_sha256: str | None = None) -> tuple[Examples, str]:
    """Load a prepared split, encode it, and attach the teacher's logits for it.

    Args:
        split: "train", "val", "test" or "unsup".
        tokenizer: the student's tokenizer.
        data_dir: folder of the prepared splits.
        teacher_dir: folder of the soft labels; None gives zero logits (training on labels
            alone needs no teacher).
        teacher_sha256: if given, the soft labels must come from this teacher.

    Returns:
        (examples, data fingerprint of the split).

    Raises:
        TeacherError: the soft labels are missing, or were made from other data or another
            teacher than required.
    """
    dataset = load_split(Path(data_dir) / f"{split}.parquet")
    data_fingerprint = fingerprint(dataset)
    expected = {"data_fingerprint": data_fingerprint}
    if teacher_sha256 is not None:
        expected["teacher_sha256"] = teacher_sha256
    ids = list(dataset["id"])
    if teacher_dir is None:
        teacher_logits = np.zeros((len(ids), 2), dtype=np.float32)
    else:
        teacher_logits = load_soft_labels(Path(teacher_dir) / f"{split}.parquet", ids, expected)
    examples = Examples(ids, encode(tokenizer, dataset["text"]),
                        np.asarray(dataset["label"], dtype=np.int64), teacher_logits)
    return examples, data_fingerprint
