"""IMDb reviews: read Stanford's tarball, clean, split, save and load the prepared splits.

The prepared splits are Parquet files that `datasets` loads, one row per review:
`id` (e.g. "train/pos/123"), `text` (cleaned), `label` (1 positive, 0 negative, -1 unlabelled)
and `rating` (1-10 stars, 0 when unlabelled).
"""

import hashlib
import re
import tarfile
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from sklearn.model_selection import train_test_split

from kd.errors import PipelineError

SPLITS = ("train", "val", "test", "unsup")

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


def read_tarball(path: str | Path) -> dict[str, list[dict]]:
    """Read the reviews straight from Stanford's `aclImdb_v1.tar.gz`, without extracting it.

    Args:
        path: the tarball.

    Returns:
        {"train": [...], "test": [...], "unsup": [...]}, each review a dict with `id`, `text`,
        `label` and `rating`, sorted by id so the order never depends on the archive's.

    Raises:
        DataError: the file is missing (run `dvc pull`), is not a readable gzip tarball
            (corrupt or truncated), or lacks the IMDb layout.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: fetch the raw data with `dvc pull`")
    reviews = {"train": [], "test": [], "unsup": []}
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for member in archive:
                match = _REVIEW_PATH.match(member.name)
                if not match or not member.isfile():
                    continue
                split, folder, number, rating = match.groups()
                text = archive.extractfile(member).read().decode("utf-8")
                reviews["unsup" if folder == "unsup" else split].append({
                    "id": f"{split}/{folder}/{number}",
                    "text": clean_text(text),
                    "label": _LABELS[folder],
                    "rating": int(rating),
                })
    except (tarfile.TarError, EOFError, OSError, zlib.error, UnicodeDecodeError) as error:
        raise DataError(
            f"{path} is corrupt or truncated ({type(error).__name__}: {error}); "
            "fetch it again with `dvc pull --force`"
        ) from None
    _check_layout(path, reviews)
    return {split: sorted(rows, key=lambda row: row["id"]) for split, rows in reviews.items()}


def _check_layout(path: Path, reviews: dict[str, list[dict]]) -> None:
    missing = []
    for split in ("train", "test"):
        for label, folder in ((1, "pos"), (0, "neg")):
            if not any(row["label"] == label for row in reviews[split]):
                missing.append(f"aclImdb/{split}/{folder}/")
    if missing:
        raise DataError(
            f"{path} does not have the IMDb layout: no reviews under {', '.join(missing)} "
            "(expected aclImdb/{train,test}/{pos,neg}/ID_RATING.txt)"
        )


def sample_stratified(rows: list[dict], size: int, seed: int, what: str) -> list[dict]:
    """A stratified (by label), seeded sample of `size` rows; `size` 0 keeps them all.

    Raises:
        DataError: `size` is larger than the number of rows.
    """
    if size == 0 or size == len(rows):
        return rows
    if size > len(rows):
        raise DataError(f"{what} = {size} is larger than the data: only {len(rows)} reviews")
    kept, _ = train_test_split(rows, train_size=size, random_state=seed,
                               stratify=[row["label"] for row in rows])
    return sorted(kept, key=lambda row: row["id"])


def make_splits(reviews: dict[str, list[dict]], subset_size: int, test_size: int,
                val_fraction: float, seed: int, unsup_size: int = 0) -> dict[str, list[dict]]:
    """Sample train, test and unsup, then carve the validation split out of train (never out
    of test).

    Returns:
        {"train", "val", "test", "unsup"} -> rows.

    Raises:
        DataError: a requested size is larger than the data, or too small to split.
    """
    train = sample_stratified(reviews["train"], subset_size, seed, "subset_size")
    test = sample_stratified(reviews["test"], test_size, seed, "test_size")
    unsup = sample_stratified(reviews["unsup"], unsup_size, seed, "unsup_size")
    try:
        train, val = train_test_split(train, test_size=val_fraction, random_state=seed,
                                      stratify=[row["label"] for row in train])
    except ValueError as error:
        raise DataError(f"cannot carve a validation split out of {len(train)} training "
                        f"reviews with prepare.val_fraction = {val_fraction}: {error}") from None
    by_id = lambda row: row["id"]  # noqa: E731
    return {"train": sorted(train, key=by_id), "val": sorted(val, key=by_id),
            "test": test, "unsup": unsup}


def fingerprint(dataset: Dataset) -> str:
    """sha256 over every review's id and text: what soft labels and checkpoints are tied to."""
    digest = hashlib.sha256()
    for review_id, text in zip(dataset["id"], dataset["text"], strict=True):
        digest.update(review_id.encode())
        digest.update(b"\0")
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def save_split(rows: list[dict], path: str | Path) -> None:
    """Write one split as Parquet (columns id, text, label, rating)."""
    columns = {key: [row[key] for row in rows] for key in ("id", "text", "label", "rating")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def load_split(path: str | Path) -> Dataset:
    """Load one prepared split.

    Raises:
        DataError: the file is missing (run `dvc repro prepare`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: run `dvc repro prepare` first")
    return Dataset(pq.read_table(path))
