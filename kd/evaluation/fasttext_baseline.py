"""A fastText baseline: supervised fastText (Joulin et al. 2016, compiled C++) over words and
word n-grams hashed into buckets, trained on the training split's labels alone (no teacher),
its settings picked on validation by a small grid.

The model is saved in fastText's own binary format (`.bin`), never pickled. fastText reads
whitespace-separated tokens, so reviews pass through `preprocess` first, at training and at
prediction alike. Training runs on one thread with a fixed seed: the same data gives the same
model bytes and the same probabilities.
"""

import itertools
import json
import mmap
import re
import struct
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import fasttext
import numpy as np

from kd.errors import PipelineError

# Tokens never hold "_" (see `preprocess`), so no review word can start with fastText's label
# prefix and be read as a label.
_LABELS = ("__label__0", "__label__1")  # negative, positive
# A fastText model file starts with this magic number and format version (fastText 0.9's).
_MAGIC, _VERSION = 793712314, 12

# fastText on one thread draws random values for only the first tenth of its input matrix
# (DenseMatrix::uniform splits it in 10 blocks, one per thread; fastText issue #1061) and leaves
# the rest as allocated, uninitialised. glibc maps a block of 32 MiB or more (its largest mmap
# threshold) as fresh pages from the kernel, all zeros, unless its heap holds that much free
# memory in one piece; so training runs in a fresh interpreter, whose heap is small, and the
# rest then starts at 0 on every run (the tests check the bytes). A smaller matrix starts from
# whatever the heap held: NaN losses, other bytes each run.
_MIN_MATRIX_BYTES = 32 * 2**20
# What the fresh interpreter runs: fastText's training, settings and paths from argv.
_TRAIN = ("import json, sys, fasttext; "
          "fasttext.train_supervised(**json.loads(sys.argv[1])).save_model(sys.argv[2])")


class FastTextDiverged(RuntimeError):
    """fastText stopped on a NaN loss (a learning rate too high for the data)."""

_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# Runs of letters and digits, or one punctuation character alone; "_", whitespace and control
# characters split tokens and are dropped.
_TOKEN = re.compile(r"[^\W_]+|[^\w\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class FastTextConfig:
    """One point of the grid: fastText's supervised settings that change the model."""

    word_ngrams: int  # word 1..n-grams; the 2..n-grams are hashed into `bucket` rows
    epoch: int  # passes over the training split
    lr: float  # starting learning rate, decayed linearly to 0
    dim: int  # size of each word's and n-gram's vector
    bucket: int = 2_000_000  # hash buckets for the n-grams (fastText's default)

    def __post_init__(self):
        for key in ("word_ngrams", "epoch", "dim", "bucket"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"fasttext {key}={value!r}: must be a positive integer")
        if not self.lr > 0:
            raise ValueError(f"fasttext lr={self.lr!r}: must be > 0")
        if self.bucket * self.dim * 4 < _MIN_MATRIX_BYTES:
            raise ValueError(f"fasttext bucket={self.bucket} x dim={self.dim}: the n-gram "
                             f"matrix must hold at least {_MIN_MATRIX_BYTES // 4:,} floats "
                             "(32 MiB), or training is not deterministic (see _MIN_MATRIX_BYTES)")


# The grid picked on validation (first best wins ties). A module constant: as
# `baselines.fasttext_*` keys of params.yaml it would let `dvc exp run -S` sweep it.
GRID = tuple(FastTextConfig(word_ngrams=ngrams, epoch=epoch, lr=lr, dim=10)
             for ngrams, epoch, lr in itertools.product((2, 3), (5, 10), (0.25, 0.5)))
SEED = 0  # fastText's own random generator (one thread, so one stream)


def preprocess(text: str) -> str:
    """A review as fastText reads it: HTML line breaks dropped, lower-cased, words and each
    punctuation character as space-separated tokens, on one line.

    >>> preprocess("Great film!!<br /><br />It's 10/10.")
    "great film ! ! it ' s 10 / 10 ."
    """
    return " ".join(_TOKEN.findall(_LINE_BREAK.sub(" ", text).lower()))


class FastTextBaseline:
    """A fitted fastText model, texts in, probabilities out (like a scikit-learn pipeline)."""

    def __init__(self, model: fasttext.FastText._FastText):
        labels = set(model.get_labels())
        if labels != set(_LABELS):
            raise PipelineError(f"the fastText model's labels are {sorted(labels)}, not "
                                f"{list(_LABELS)}: it was not written by the baseline stage")
        self.model = model

    def positive_probs(self, texts: list[str]) -> np.ndarray:
        """P(positive) of each review.

        Returns:
            (N,) float64.
        """
        if not texts:
            return np.zeros(0)
        labels, probs = self.model.predict([preprocess(text) for text in texts], k=2)
        probs = np.asarray(probs, dtype=np.float64)  # (N, 2), the likelier label first
        positive_first = np.array([label[0] == _LABELS[1] for label in labels])
        # fastText reports each softmax probability plus 1e-5: renormalise the pair.
        return np.where(positive_first, probs[:, 0], probs[:, 1]) / probs.sum(axis=1)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(N, 2) float64: P(negative), P(positive), as scikit-learn's `predict_proba`."""
        positive = self.positive_probs(texts)
        return np.stack([1 - positive, positive], axis=1)

    def size(self) -> dict:
        """{"features": rows of the input matrix (words and n-gram buckets), "params": its
        rows times dim plus the output matrix's 2 x dim}."""
        rows = len(self.model.get_words()) + self.model.f.getArgs().bucket
        dim = self.model.get_dimension()
        return {"features": rows, "params": rows * dim + len(_LABELS) * dim}


def fit_fasttext(texts: list[str], labels: np.ndarray, config: FastTextConfig,
                 seed: int = SEED) -> FastTextBaseline:
    """Train one supervised fastText model on one thread, on the reviews in a seeded shuffled
    order (deterministic for a given seed), in a fresh interpreter.

    Args:
        texts: N raw reviews (preprocessed here).
        labels: (N,) 0/1.

    Raises:
        FastTextDiverged: the loss became NaN.
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    # fastText reads its file in order, its learning rate decaying to 0: a split sorted by
    # label (as prepared splits are) would leave it predicting the last label. Shuffle, seeded.
    order = np.random.default_rng(seed).permutation(len(texts))
    with tempfile.TemporaryDirectory() as folder:
        train_path, model_path = Path(folder) / "train.txt", Path(folder) / "model.bin"
        with train_path.open("w", encoding="utf-8") as out:
            for index in order:
                out.write(f"{_LABELS[int(labels[index])]} {preprocess(texts[index])}\n")
        settings = {"input": str(train_path), "lr": config.lr, "dim": config.dim,
                    "epoch": config.epoch, "wordNgrams": config.word_ngrams,
                    "bucket": config.bucket, "minCount": 1, "loss": "softmax", "thread": 1,
                    "seed": seed, "verbose": 0}
        # A fresh interpreter: see _MIN_MATRIX_BYTES.
        result = subprocess.run([sys.executable, "-c", _TRAIN, json.dumps(settings),
                                 str(model_path)], capture_output=True, text=True)
        if result.returncode != 0:
            if "Encountered NaN" in result.stderr:
                raise FastTextDiverged(f"fastText diverged (NaN loss) with {config}")
            raise RuntimeError(f"fastText training failed:\n{result.stderr[-2000:]}")
        model = fasttext.load_model(str(model_path))
    return FastTextBaseline(model)


def fit_fasttext_on_validation(train_texts: list[str], train_labels: np.ndarray,
                               val_texts: list[str], val_labels: np.ndarray,
                               grid: tuple[FastTextConfig, ...] = GRID,
                               seed: int = SEED) -> tuple[FastTextBaseline, dict]:
    """Fit one model per grid point; keep the best on validation accuracy (the first on a tie).

    A point whose training diverges (fastText stops on a NaN loss, as a high learning rate can
    do on little data) is recorded with `val_accuracy` None and skipped.

    Returns:
        (the best model, {"config": its settings, "val_accuracy": its accuracy, "grid": every
        point's settings with its val_accuracy}).

    Raises:
        PipelineError: every point diverged.
    """
    best, tried = None, []
    for config in grid:
        try:
            model = fit_fasttext(train_texts, train_labels, config, seed)
        except FastTextDiverged:
            tried.append({**asdict(config), "val_accuracy": None})
            continue
        accuracy = float(((model.positive_probs(val_texts) >= 0.5) == val_labels).mean())
        tried.append({**asdict(config), "val_accuracy": accuracy})
        if best is None or accuracy > best[1]:
            best = (model, accuracy, config)
    if best is None:
        raise PipelineError(f"fastText diverged (NaN loss) at every grid point: {tried}")
    model, accuracy, config = best
    return model, {"config": asdict(config), "val_accuracy": accuracy, "grid": tried}


def save_fasttext(model: FastTextBaseline, path: str | Path) -> None:
    """Write the model in fastText's binary format."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    model.model.save_model(str(path))


def load_fasttext(path: str | Path) -> FastTextBaseline:
    """Load what `save_fasttext` wrote.

    Raises:
        PipelineError: the file is missing, is not a fastText model, is cut short, padded or
            otherwise corrupt, or is not a sentiment model of the baseline stage.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found: run `dvc repro baseline@fasttext`")
    _check_layout(path)
    try:
        model = fasttext.load_model(str(path))
    except (ValueError, RuntimeError, MemoryError) as error:
        raise PipelineError(f"{path} is corrupt ({error}); run `dvc repro baseline@fasttext`"
                            ) from error
    return FastTextBaseline(model)


def _check_layout(path: Path) -> None:
    """Walk the file as fastText 0.9's `saveModel` lays it out and check that every length adds
    up to the file's size. fastText's own loader reads past the end of a cut file without a
    word, keeping whatever its memory held, so this runs first.

    Layout: magic, version (int32); 12 settings (int32) and t (float64); the dictionary: entries,
    words, labels (int32), tokens, pruned (int64), then each entry (NUL-terminated UTF-8, count
    int64, type int8) and the pruned pairs; then the input and the output matrix, each as a
    quantized flag (bool), rows, columns (int64) and rows x columns float32.

    Raises:
        PipelineError: the file is not laid out so.
    """
    def corrupt(why: str) -> PipelineError:
        return PipelineError(f"{path} is not a whole fastText model file ({why}); run "
                             "`dvc repro baseline@fasttext`")

    size = path.stat().st_size
    if size < 92:  # the header, the settings and the dictionary's counts
        raise corrupt(f"{size} bytes")
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        magic, version = struct.unpack_from("<ii", data, 0)
        if (magic, version) != (_MAGIC, _VERSION):
            raise corrupt(f"no fastText format {_VERSION} header")
        dim, bucket = struct.unpack_from("<i", data, 8)[0], struct.unpack_from("<i", data, 40)[0]
        entries, words, labels, _, pruned = struct.unpack_from("<iiiqq", data, 64)
        if entries != words + labels or min(words, labels, dim, bucket) < 0:
            raise corrupt("its dictionary's counts disagree")
        offset = 92
        for _ in range(entries):
            end = data.find(b"\0", offset)
            if end < 0:
                raise corrupt("cut short in its dictionary")
            offset = end + 1 + 8 + 1  # the word, its count and its type
        offset += 8 * max(pruned, 0)
        for name, rows in (("input", words + bucket), ("output", labels)):
            if offset + 17 > size:
                raise corrupt(f"cut short before its {name} matrix")
            quantized = data[offset]
            shape = struct.unpack_from("<qq", data, offset + 1)
            if quantized or shape != (rows, dim):
                raise corrupt(f"its {name} matrix is {shape}, quantized={bool(quantized)}, not "
                              f"({rows}, {dim})")
            offset += 17 + rows * dim * 4
            if offset > size:
                raise corrupt(f"cut short in its {name} matrix")
    if offset != size:
        raise corrupt(f"{size} bytes where its layout takes {offset}")
