"""Tiny synthetic IMDb-shaped data and a tiny random BERT teacher, made fresh for each test."""

import io
import random
import tarfile
from pathlib import Path

import pytest

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


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    return write_tarball(tmp_path / "aclImdb_v1.tar.gz")


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return write_tiny_teacher(tmp_path_factory.mktemp("teacher") / "teacher")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("encoder") / "base-encoder")
