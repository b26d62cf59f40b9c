"""What the tests share: tiny synthetic IMDb-shaped reviews, tarballs and own-data files, a tiny
random BERT teacher and base encoder, and a runner for commands in a tiny project."""

import csv
import io
import json
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]  # the repository's root
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
       "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def run(root: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=root, env=ENV, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result


POSITIVE_WORDS = ["great", "wonderful", "brilliant", "loved", "superb", "moving"]
NEGATIVE_WORDS = ["awful", "boring", "terrible", "hated", "dull", "waste"]
NEUTRAL_WORDS = ["the", "movie", "film", "plot", "actor", "scene", "was", "a", "and", "it"]


def make_review(rng: random.Random, label: int) -> str:
    """A few sentences of filler with sentiment words, and an HTML line break."""
    cue = POSITIVE_WORDS if label == 1 else NEGATIVE_WORDS
    words = [rng.choice(NEUTRAL_WORDS + cue) for _ in range(rng.randint(4, 30))]
    middle = len(words) // 2
    return " ".join(words[:middle]) + ".<br /><br />" + " ".join(words[middle:]) + "!"


def write_tarball(path: Path, reviews_per_folder: int = 20, unsup: int = 10, seed: int = 0,
                  folders=("train/pos", "train/neg", "test/pos", "test/neg")) -> Path:
    """A tarball in Stanford's layout: aclImdb/<split>/<pos|neg|unsup>/ID_RATING.txt."""
    rng = random.Random(seed)

    def add(archive: tarfile.TarFile, name: str, text: str) -> None:
        data = text.encode("utf-8")
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        add(archive, "aclImdb/README", "synthetic")
        for folder in folders:
            label = 1 if folder.endswith("pos") else 0
            for number in range(reviews_per_folder):
                rating = rng.randint(7, 10) if label else rng.randint(1, 4)
                add(archive, f"aclImdb/{folder}/{number}_{rating}.txt", make_review(rng, label))
        for number in range(unsup):
            add(archive, f"aclImdb/train/unsup/{number}_0.txt", make_review(rng, rng.randint(0, 1)))
    return path


def write_tiny_teacher(path: Path, num_labels: int = 2) -> Path:
    """A randomly initialised 1-layer BERT sequence classifier with a word-level vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "!", "<", ">", "/", "br"]
    words += POSITIVE_WORDS + NEGATIVE_WORDS + NEUTRAL_WORDS
    tokenizer = BertTokenizer(vocab={word: index for index, word in enumerate(words)})
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                        num_labels=num_labels, id2label={0: "negative", 1: "positive"}
                        if num_labels == 2 else None)
    config.architectures = ["BertForSequenceClassification"]
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_tiny_encoder(path: Path) -> Path:
    """A randomly initialised 1-layer BERT encoder without a head (a base to fine-tune), with
    the tiny teacher's word-level vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "!", "<", ">", "/", "br"]
    words += POSITIVE_WORDS + NEGATIVE_WORDS + NEUTRAL_WORDS
    tokenizer = BertTokenizer(vocab={word: index for index, word in enumerate(words)})
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    config.architectures = ["BertModel"]
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_rows(count: int, seed: int, names=("neg", "pos")) -> list[dict]:
    """`count` reviews alternating between the two label names, texts with sentiment cues."""
    rng = random.Random(seed)
    return [{"review": make_review(rng, index % 2), "sentiment": names[index % 2]}
            for index in range(count)]


def write_rows(path: Path, rows: list[dict], fmt: str) -> Path:
    """`rows` (dicts of equal keys) as a Parquet, CSV, TSV, JSON Lines file or datasets folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    if fmt == "parquet":
        pq.write_table(pa.table({key: [row[key] for row in rows] for key in columns}), path)
    elif fmt in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns, delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        from datasets import Dataset

        Dataset.from_list(rows).save_to_disk(str(path))
    return path


SERVE_TEXTS = ["a great and moving film", "boring, dull; a waste", "great " * 300, "ok"]


def write_tiny_export(folder: Path, logit_scale: float = 1.0):
    """A tiny random TextCNN on a word vocabulary of `SERVE_TEXTS`, exported in every form to
    `folder/export` (`kd.serving.export.export_all`).

    Returns:
        (the export folder, `export_all`'s paths, the eager model, its tokenizer).
    """
    import torch

    from kd.serving.export import export_all
    from kd.student.models import TextCNN, TextCNNConfig
    from kd.text import build_tokenizer

    tokenizer = build_tokenizer(SERVE_TEXTS * 2, max_size=100, min_freq=1, max_len=50)
    tokenizer.save(str(folder / "source_tokenizer.json"))
    torch.manual_seed(0)
    model = TextCNN(TextCNNConfig(vocab_size=tokenizer.get_vocab_size(), embed_dim=16,
                                  num_filters=8)).eval()
    model.logit_scale.fill_(logit_scale)
    paths = export_all(model, folder / "source_tokenizer.json", folder / "export", {"demo": 1})
    return folder / "export", paths, model, tokenizer
