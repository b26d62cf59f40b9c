"""IMDb reviews: read Stanford's tarball, clean, split, save and load the prepared splits.

The prepared splits are Parquet files that `datasets` loads, one row per review, sorted by id:
`id` (e.g. "train/pos/123"), `text` (cleaned), `label` (1 positive, 0 negative, -1 unlabelled;
with `data.imdb_label = rating`, the rating's rank 0-7) and `rating` (1-10 stars, 0 when
unlabelled).

`prepare` reads the tarball twice so that its memory does not grow with the corpus: a first
pass (`index_tarball`) keeps only each review's id, label, rating and place in the archive,
enough to draw the samples and splits (`make_splits`); a second pass (`write_splits`) streams
the texts of the chosen reviews into sorted runs on disk and merges them into each split file,
one row group (ROW_GROUP_ROWS reviews) at a time.
"""

import hashlib
import heapq
import math
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset
from sklearn.model_selection import train_test_split

from kd.errors import PipelineError

SPLITS = ("train", "val", "test", "unsup")
SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.int64()),
                    ("rating", pa.int64())])
# What the first pass keeps of a review: no text. `position` is its place among the archive's
# reviews, which the second pass counts again to find it.
_INDEX_SCHEMA = pa.schema([("id", pa.string()), ("label", pa.int64()), ("rating", pa.int64()),
                           ("position", pa.int64())])
# Texts held at a time while reading the tarball: each such batch becomes sorted runs.
RUN_ROWS = 8192
# Rows per row group of a split file (the merge holds one). Every IMDb split (50,000 at most)
# is one row group, as when a split was written at once, so the files keep their bytes.
ROW_GROUP_ROWS = 65536
_MERGE_ROWS = 64  # rows read at a time from each sorted run while merging

# Folder in the tarball -> label. Ratings 1-4 are negative, 7-10 positive, unsup files are "_0".
_LABELS = {"pos": 1, "neg": 0, "unsup": -1}
_REVIEW_PATH = re.compile(r"^aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
_LINE_BREAK = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)
_SPACES = re.compile(r"\s+")


class DataError(PipelineError):
    """The raw data or a prepared split is missing, corrupt or not what the stage expects."""


def clean_text(text: str) -> str:
    """Drop the HTML line breaks (`<br />` is markup, not words) and squeeze whitespace."""
    return _SPACES.sub(" ", _LINE_BREAK.sub(" ", text)).strip()


def _iter_reviews(path: Path, with_text: bool) -> Iterator[tuple]:
    """(position, split, id, label, rating, cleaned text or None) of every review, in the
    archive's order.

    Raises:
        DataError: the file is missing, or is not a readable gzip tarball.
    """
    if not path.is_file():
        raise DataError(f"{path} not found: fetch the raw data with `dvc pull`")
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            position = 0
            for member in archive:
                match = _REVIEW_PATH.match(member.name)
                if not match or not member.isfile():
                    continue
                split, folder, number, rating = match.groups()
                text = None
                if with_text:
                    text = clean_text(archive.extractfile(member).read().decode("utf-8"))
                yield (position, "unsup" if folder == "unsup" else split,
                       f"{split}/{folder}/{number}", _LABELS[folder], int(rating), text)
                position += 1
    except (tarfile.TarError, EOFError, OSError, zlib.error, UnicodeDecodeError) as error:
        raise DataError(
            f"{path} is corrupt or truncated ({type(error).__name__}: {error}); "
            "fetch it again with `dvc pull --force`"
        ) from None


def read_tarball(path: str | Path) -> dict[str, list[dict]]:
    """Every review of Stanford's `aclImdb_v1.tar.gz`, texts included, read without extracting.

    It holds the whole corpus in memory: for checks and small data. `prepare` streams instead
    (`index_tarball`, `make_splits`, `write_splits`).

    Returns:
        {"train": [...], "test": [...], "unsup": [...]}, each review a dict with `id`, `text`,
        `label` and `rating`, sorted by id so the order never depends on the archive's.

    Raises:
        DataError: the file is missing (run `dvc pull`), is not a readable gzip tarball
            (corrupt or truncated), or lacks the IMDb layout.
    """
    path = Path(path)
    reviews = {"train": [], "test": [], "unsup": []}
    for _, split, review_id, label, rating, text in _iter_reviews(path, with_text=True):
        reviews[split].append({"id": review_id, "text": text, "label": label, "rating": rating})
    _check_layout(path, {split: {row["label"] for row in rows}
                         for split, rows in reviews.items()})
    return {split: sorted(rows, key=lambda row: row["id"]) for split, rows in reviews.items()}


def index_tarball(path: str | Path) -> dict[str, pa.Table]:
    """First pass over the tarball: each review's id, label, rating and place, but no text.

    Under 50 bytes a review (its id and three integers): what `make_splits` needs to draw samples
    and splits, whatever the texts weigh.

    Returns:
        {"train", "test", "unsup"} -> table (id, label, rating, position), sorted by id.

    Raises:
        DataError: as `read_tarball`.
    """
    path = Path(path)
    columns = {split: {name: [] for name in _INDEX_SCHEMA.names}
               for split in ("train", "test", "unsup")}
    batches = {split: [] for split in columns}

    def flush(split: str) -> None:
        batches[split].append(pa.record_batch(columns[split], schema=_INDEX_SCHEMA))
        columns[split] = {name: [] for name in _INDEX_SCHEMA.names}

    for position, split, review_id, label, rating, _ in _iter_reviews(path, with_text=False):
        row = columns[split]
        row["id"].append(review_id)
        row["label"].append(label)
        row["rating"].append(rating)
        row["position"].append(position)
        if len(row["id"]) == RUN_ROWS:  # as Arrow arrays, ids weigh a third of Python's
            flush(split)
    for split in columns:
        flush(split)
    index = {split: pa.Table.from_batches(parts, schema=_INDEX_SCHEMA).sort_by("id")
             for split, parts in batches.items()}
    _check_layout(path, {split: set(pc.unique(table["label"]).to_pylist())
                         for split, table in index.items()})
    return index


def _check_layout(path: Path, labels: dict[str, set[int]]) -> None:
    missing = []
    for split in ("train", "test"):
        for label, folder in ((1, "pos"), (0, "neg")):
            if label not in labels[split]:
                missing.append(f"aclImdb/{split}/{folder}/")
    if missing:
        raise DataError(
            f"{path} does not have the IMDb layout: no reviews under {', '.join(missing)} "
            "(expected aclImdb/{train,test}/{pos,neg}/ID_RATING.txt)"
        )


def sample_stratified(reviews: pa.Table, size: int, seed: int, what: str) -> pa.Table:
    """A stratified (by label), seeded sample of `size` reviews; `size` 0 keeps them all.

    Args:
        reviews: sorted by id; the sample keeps that order.

    Raises:
        DataError: `size` is larger than the number of reviews.
    """
    if size == 0 or size == reviews.num_rows:
        return reviews
    if size > reviews.num_rows:
        raise DataError(f"{what} = {size} is larger than the data: only {reviews.num_rows} "
                        "reviews")
    kept, _ = train_test_split(np.arange(reviews.num_rows), train_size=size, random_state=seed,
                               stratify=reviews["label"].to_numpy())
    return reviews.take(np.sort(kept))


def check_class_sizes(train: pa.Table, val_fraction: float, label_names: list[str],
                      labels_from: str) -> None:
    """Refuse K > 2 classes that the validation split cannot hold: each class needs at least
    one review in validation and one left in train.

    The split (sklearn's stratified split) holds out ceil(val_fraction * n) of n reviews and
    gives a class of c reviews floor(c * share) or one more on each side, so c * n_val >= n and
    c * n_train >= n put it on both.

    Args:
        train: the (sampled) training reviews' index rows, `label` in 0 .. K-1.
        label_names: the names of labels 0 .. K-1, for the message.
        labels_from: where the labels come from (file and column), for the message.

    Raises:
        DataError: a class with fewer reviews than that, with the count needed.
    """
    total = train.num_rows
    held_out = math.ceil(val_fraction * total - 1e-9)
    kept = total - held_out
    needed = max(math.ceil(total / max(held_out, 1)), math.ceil(total / max(kept, 1)))
    counts = dict(zip(*np.unique(train["label"].to_numpy(), return_counts=True), strict=True))
    few = [(name, int(counts.get(label, 0))) for label, name in enumerate(label_names)
           if counts.get(label, 0) < needed]
    if few:
        listing = "; ".join(f"{name!r}: {count}" for name, count in few)
        raise DataError(
            f"{labels_from}: {len(few)} class(es) with too few training reviews ({listing}) for "
            f"prepare.val_fraction = {val_fraction} of {total}: each class needs at least "
            f"{needed}, so that validation holds one and train keeps one. Allowed: classes "
            "with that many reviews; add reviews, merge or drop the class, or raise "
            "subset_size or prepare.val_fraction")


def make_splits(index: dict[str, pa.Table], subset_size: int, test_size: int,
                val_fraction: float, seed: int, unsup_size: int = 0,
                label_names: list[str] | None = None,
                labels_from: str = "the training reviews") -> dict[str, pa.Table]:
    """Sample train, test and unsup, then carve the validation split out of train (never out
    of test). Only ids, labels and ratings are needed; the texts come in `write_splits`.

    Args:
        index: from `index_tarball`.
        label_names: the names of labels 0 .. K-1; with K > 2, `check_class_sizes` runs on
            the sampled train before the split (two labels are split as they always were).
        labels_from: where the labels come from, for `check_class_sizes`' message.

    Returns:
        {"train", "val", "test", "unsup"} -> the chosen reviews' index rows, sorted by id.

    Raises:
        DataError: a requested size is larger than the data, or too small to split; a class
            too small for the validation split (K > 2).
    """
    train = sample_stratified(index["train"], subset_size, seed, "subset_size")
    if label_names is not None and len(label_names) > 2:
        check_class_sizes(train, val_fraction, label_names, labels_from)
    test = sample_stratified(index["test"], test_size, seed, "test_size")
    unsup = sample_stratified(index["unsup"], unsup_size, seed, "unsup_size")
    try:
        kept, held_out = train_test_split(np.arange(train.num_rows), test_size=val_fraction,
                                          random_state=seed, stratify=train["label"].to_numpy())
    except ValueError as error:
        raise DataError(f"cannot carve a validation split out of {train.num_rows} training "
                        f"reviews with prepare.val_fraction = {val_fraction}: {error}") from None
    return {"train": train.take(np.sort(kept)), "val": train.take(np.sort(held_out)),
            "test": test, "unsup": unsup}


def _rows_table(rows: list[tuple]) -> pa.Table:
    """(id, text, label, rating) tuples as a table of the prepared splits' schema."""
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in SCHEMA.names]
    return pa.table(dict(zip(SCHEMA.names, columns, strict=True)), schema=SCHEMA)


def _write_run(rows: list[tuple], path: Path) -> Path:
    pq.write_table(_rows_table(sorted(rows, key=itemgetter(0))), path,
                   row_group_size=_MERGE_ROWS)
    return path


def _read_run(path: Path) -> Iterator[tuple]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_MERGE_ROWS):
        yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)


def _write_merged(runs: list[Path], path: Path) -> int:
    """Merge sorted runs into one Parquet file of ROW_GROUP_ROWS-row groups; returns its
    rows."""
    written = 0
    with pq.ParquetWriter(path, SCHEMA) as writer:
        rows = []
        for row in heapq.merge(*(_read_run(run) for run in runs), key=itemgetter(0)):
            rows.append(row)
            if len(rows) == ROW_GROUP_ROWS:
                writer.write_table(_rows_table(rows))
                written, rows = written + len(rows), []
        if rows:
            writer.write_table(_rows_table(rows))
            written += len(rows)
    return written


def write_splits(path: str | Path, splits: dict[str, pa.Table], out_dir: str | Path,
                 label_of_rating: dict[int, int] | None = None) -> dict[str, int]:
    """Second pass over the tarball: write each split's reviews, texts included, to
    `out_dir/<split>.parquet`, sorted by id, holding a bounded number of texts in memory
    (RUN_ROWS while reading, one row group of ROW_GROUP_ROWS while merging).

    Texts come in the archive's order; every RUN_ROWS of them are sorted and written as runs
    in a temporary folder inside `out_dir`, which are then merged. The files appear only once
    all are complete; the same tarball and splits give the same bytes.

    Args:
        path: the tarball `splits` was drawn from.
        splits: from `make_splits`.
        label_of_rating: {rating: label} when the rating is the label (`data.imdb_label`);
            None keeps the folder's label (neg 0, pos 1).

    Returns:
        {split: reviews written}.

    Raises:
        DataError: the tarball is corrupt, or no longer holds the reviews indexed.
    """
    path, out_dir = Path(path), Path(out_dir)
    names = list(splits)
    size = 1 + max((pc.max(table["position"]).as_py() for table in splits.values()
                    if table.num_rows), default=-1)
    destination = np.full(size, -1, dtype=np.int8)  # archive position -> split, -1: not kept
    for code, name in enumerate(names):
        destination[splits[name]["position"].to_numpy()] = code
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".prepare-") as work:
        runs = {name: [] for name in names}
        buffers = {name: [] for name in names}

        def flush() -> None:
            for name, rows in buffers.items():
                if rows:
                    runs[name].append(_write_run(rows, Path(work) / f"{name}-{len(runs[name])}"))
                    rows.clear()

        buffered = 0
        for position, _, review_id, label, rating, text in _iter_reviews(path, with_text=True):
            if position >= size or destination[position] < 0:
                continue
            if label_of_rating is not None and label >= 0:
                label = label_of_rating[rating]
            buffers[names[destination[position]]].append((review_id, text, label, rating))
            buffered += 1
            if buffered == RUN_ROWS:
                flush()
                buffered = 0
        flush()
        written = {}
        for name in names:
            merged = Path(work) / f"{name}.parquet"
            written[name] = _write_merged(runs[name], merged)
            if not pq.read_table(merged, columns=["id"])["id"].equals(splits[name]["id"]):
                raise DataError(f"{path} changed while it was read: the {name} reviews found "
                                "are not the ones indexed; run `dvc repro prepare` again")
        for name in names:
            os.replace(Path(work) / f"{name}.parquet", out_dir / f"{name}.parquet")
    return written


def _digest(pairs: Iterable[tuple[str, str]], digest=None):
    digest = digest or hashlib.sha256()
    for review_id, text in pairs:
        digest.update(review_id.encode())
        digest.update(b"\0")
        digest.update(text.encode())
        digest.update(b"\0")
    return digest


def fingerprint(dataset: Dataset) -> str:
    """sha256 over every review's id and text: what soft labels and checkpoints are tied to."""
    return _digest(zip(dataset["id"], dataset["text"], strict=True)).hexdigest()


def fingerprint_file(path: str | Path) -> str:
    """`fingerprint` of a prepared split, read a chunk at a time instead of all at once.

    Raises:
        DataError: the file is missing (run `dvc repro prepare`).
    """
    digest = hashlib.sha256()
    for batch in _split_file(path).iter_batches(batch_size=1024, columns=["id", "text"]):
        _digest(zip(batch.column("id").to_pylist(), batch.column("text").to_pylist(),
                    strict=True), digest)
    return digest.hexdigest()


def count_reviews(path: str | Path) -> int:
    """The number of reviews in a prepared split, from its metadata alone.

    Raises:
        DataError: the file is missing (run `dvc repro prepare`).
    """
    return _split_file(path).metadata.num_rows


def _split_file(path: str | Path) -> pq.ParquetFile:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: run `dvc repro prepare` first")
    return pq.ParquetFile(path)


def require_two_labels(path: str | Path, stage: str) -> None:
    """Stop a stage that handles two labels so far on a split prepared with K > 2 (issue 28),
    before it does any work; reads the label column alone.

    Raises:
        DataError: the file is missing, or holds a label above 1 (-1 marks unlabelled reviews).
    """
    path = Path(path)
    labels = _split_file(path).read(columns=["label"])["label"]
    top = pc.max(labels).as_py() if len(labels) else None
    if top is not None and top > 1:
        raise DataError(
            f"{path} holds labels 0 .. {top} ({top + 1} classes; their names in "
            f"{path.parent}/source.json): `{stage}` handles two labels so far, K classes are "
            "being built (issue 28); prepare two labels (data.imdb_label = sentiment, or a "
            "two-value data.label_column) to run it")


def load_split(path: str | Path) -> Dataset:
    """Load one prepared split.

    Raises:
        DataError: the file is missing (run `dvc repro prepare`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: run `dvc repro prepare` first")
    return Dataset(pq.read_table(path))
