"""Where the reviews come from: every source becomes the same prepared splits.

`prepare` turns a source into `data/prepared/{train,val,test,unsup}.parquet` (`id`, `text`,
`label` 0 .. K-1 or -1 for unlabelled, `rating`: see `kd.data.splits`) and `source.json` (the label
names, the mapping and the rule that made it, and what the checks counted). The stages after it read
only those files: they never know where the reviews came from.

Sources (`data.source`):
- `imdb`, the default: Stanford's tarball at `data.path`, streamed by `kd.data.splits`; its
  files keep their bytes. `data.imdb_label = rating` makes the stars in the file names the label
  instead of the folder: 8 classes, "1" .. "4" and "7" .. "10" as labels 0 .. 7.
- `files`: your reviews in the folder `data.path`: a train file and a test file, and optionally
  an unlabelled one for the transfer set. Each is Parquet (`.parquet`), CSV (`.csv`, `.tsv`),
  JSON Lines (`.jsonl`, `.ndjson`, `.json`) or a folder written by `datasets`'
  `Dataset.save_to_disk` (a split folder of a saved `DatasetDict` is one), with a text column
  and a label column named by `data.text_column` and `data.label_column`. Ids name the file's
  row: `train/12` is the 12th review of the train file (rows count from 1, a CSV header not
  counted); ratings are 0 (unknown). Texts are cleaned as IMDb's (`kd.data.splits.clean_text`). The
  validation split is carved from train as for IMDb; the test file is kept whole.

Every file is read and checked before anything is written; bad data stops `prepare` with the
file, the row and what is wrong: a file that is not what its extension says, bytes that are not
UTF-8, a malformed row, a missing column, a review without a label, a label column with fewer
than two values or that looks like a regression target (`kd.data.labels.check_classes`), a
test label that train does not have, a class too small for the validation split (K > 2,
`kd.data.splits.check_class_sizes`), an empty or whitespace-only text, and test texts repeated
in train or unlabelled above `data.max_overlap`.

Empty texts are refused, not dropped: dropping them from the test file would change the test
split behind the user's back (it is promised untouched), and an empty text in a labelled file
nearly always means a broken export (a shifted column, a stray delimiter) that dropping would
hide. Fixing them is one line of pandas, in the user's own versioned data.
"""

import csv
import io
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kd.data.labels import (
    IMDB_LABELS,
    SOURCE_FILE,
    LabelError,
    check_classes,
    label_key,
    label_name,
    map_classes,
    map_labels,
)
from kd.data.splits import (
    ROW_GROUP_ROWS,
    SCHEMA,
    DataError,
    clean_text,
    index_tarball,
    make_splits,
    write_splits,
)
from kd.params import DataParams, Params

# Extension -> format. A `.json` file must hold JSON Lines too (one object per line).
FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".json": "jsonl"}
_SHOWN = 5  # rows an error message names; it counts the rest
_DESCRIBED = {
    "parquet": "a Parquet file",
    "gzip": "gzip-compressed data (decompress it first)",
    "zip": "a zip archive (an Excel workbook? save it as CSV)",
    "binary": "binary data",
    "empty": "nothing",
    "jsonl": "JSON",
    "json array": "a JSON array",
    "text": "plain text (CSV-like)",
}


@dataclass
class Reviews:
    """One file's reviews as read, before any check."""

    file: str  # as the user named it (data.path/name): every message starts with it
    texts: list  # the text column's values (None where missing)
    labels: list  # the label column's values ([] when not read)
    lines: list[int] | None = None  # text formats: the line each row starts on

    def row(self, index: int) -> str:
        """Row `index` (0-based) as messages name it: rows count from 1, and a text file's
        line is added where it differs."""
        row = index + 1
        if self.lines is not None and self.lines[index] != row:
            return f"row {row} (line {self.lines[index]})"
        return f"row {row}"

    def rows(self, indices: list[int]) -> str:
        """The first few rows of `indices`, and how many more."""
        named = ", ".join(self.row(index) for index in indices[:_SHOWN])
        more = len(indices) - _SHOWN
        return named + (f" and {more} more" if more > 0 else "")


def _content_kind(path: Path) -> str:
    """What a file's first bytes look like, whatever its name says."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if b"\x00" in head:
        return "binary"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        return "empty"
    if text[:1] == b"{":
        return "jsonl"
    if text[:1] == b"[":
        return "json array"
    return "text"


def _read_utf8(path: Path, shown: str) -> str:
    """The file's text, or the line and bytes where it is not UTF-8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataError(f"{shown} line {line}: bytes that are not UTF-8 "
                        f"({raw[error.start:error.end]!r} at byte {error.start}); save the file "
                        "as UTF-8") from None
    return text.removeprefix("\ufeff")  # a byte-order mark is not part of the first column


def _missing_column(shown: str, name: str, key: str, columns) -> DataError:
    return DataError(f"{shown} has no column {name!r} (data.{key}); its columns: "
                     f"{', '.join(repr(column) for column in columns) or 'none'}")


def _read_csv(text: str, shown: str, delimiter: str, text_column: str,
              label_column: str | None) -> Reviews:
    csv.field_size_limit(1 << 30)  # reviews can be long; the default stops at 131,072 chars
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    texts, labels, lines = [], [], []
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{shown} is empty: a CSV file needs a header row, then reviews")
        header = [name.strip() for name in header]
        if text_column not in header:
            raise _missing_column(shown, text_column, "text_column", header)
        if label_column is not None and label_column not in header:
            raise _missing_column(shown, label_column, "label_column", header)
        text_at = header.index(text_column)
        label_at = header.index(label_column) if label_column is not None else None
        start = reader.line_num + 1
        for record in reader:
            if record:  # a blank line is no record
                if len(record) != len(header):
                    raise DataError(
                        f"{shown} row {len(texts) + 1} (line {start}): {len(record)} fields where "
                        f"the header has {len(header)}: a stray {delimiter!r} or an unclosed "
                        "quote? Quote texts that hold the delimiter")
                texts.append(record[text_at])
                if label_at is not None:
                    labels.append(record[label_at])
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as error:
        raise DataError(f"{shown} line {reader.line_num}: not valid CSV ({error})") from None
    return Reviews(shown, texts, labels, lines)


def _read_jsonl(text: str, shown: str, text_column: str, label_column: str | None) -> Reviews:
    texts, labels, lines, keys = [], [], [], set()
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{shown} line {number}: not valid JSON ({error.msg} at column "
                            f"{error.colno}); JSON Lines holds one object per line") from None
        if not isinstance(record, dict):
            raise DataError(f"{shown} line {number}: a JSON {type(record).__name__}, not an "
                            "object; JSON Lines holds one object {...} per line")
        keys.update(record)
        texts.append(record.get(text_column))
        if label_column is not None:
            labels.append(record.get(label_column))
        lines.append(number)
    if texts and text_column not in keys:
        raise _missing_column(shown, text_column, "text_column", sorted(keys))
    if texts and label_column is not None and label_column not in keys:
        raise _missing_column(shown, label_column, "label_column", sorted(keys))
    return Reviews(shown, texts, labels, lines)


def _arrow_texts(column: pa.ChunkedArray, shown: str, name: str) -> list:
    """A text column as Python strings, or the row whose bytes are not UTF-8."""
    if pa.types.is_dictionary(column.type):  # pandas categoricals
        column = pa.chunked_array([chunk.dictionary_decode() for chunk in column.chunks],
                                  type=column.type.value_type)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            column.validate(full=True)  # Parquet strings should be UTF-8; writers can lie
            return column.to_pylist()
        except (pa.ArrowInvalid, UnicodeDecodeError):
            column = column.cast(pa.large_binary())
    elif not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise DataError(f"{shown}: column {name!r} holds {column.type} values, not text")
    texts = []
    for index, value in enumerate(column.to_pylist()):
        try:
            texts.append(None if value is None else value.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise DataError(f"{shown} row {index + 1}: the text holds bytes that are not UTF-8 "
                            f"({value[error.start:error.end]!r} at byte {error.start})") from None
    return texts


def _from_arrow(table: pa.Table, shown: str, text_column: str, label_column: str | None,
                class_names: list[str] | None = None) -> Reviews:
    texts = _arrow_texts(table.column(text_column), shown, text_column)
    labels = table.column(label_column).to_pylist() if label_column is not None else []
    if class_names is not None:  # a datasets ClassLabel: integers that have names
        labels = [None if label is None or label < 0 else class_names[label] for label in labels]
    return Reviews(shown, texts, labels)


def _read_parquet(path: Path, shown: str, text_column: str, label_column: str | None) -> Reviews:
    with open(path, "rb") as handle:
        handle.seek(max(path.stat().st_size - 4, 0))
        tail = handle.read(4)
    if _content_kind(path) != "parquet" or tail != b"PAR1":
        kind = _content_kind(path)
        raise DataError(f"{shown} is not a Parquet file: it holds "
                        f"{_DESCRIBED[kind] if kind != 'parquet' else 'a truncated Parquet file'}"
                        "; give it the extension of what it is (.csv, .jsonl), or write it again")
    try:
        names = pq.read_schema(path).names
        for name, key in ((text_column, "text_column"), (label_column, "label_column")):
            if name is not None and name not in names:
                raise _missing_column(shown, name, key, names)
        table = pq.read_table(path, columns=[text_column] + [label_column] * bool(label_column))
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{shown} is not a readable Parquet file ({error})") from None
    return _from_arrow(table, shown, text_column, label_column)


def _read_saved(path: Path, shown: str, key: str, text_column: str,
                label_column: str | None) -> Reviews:
    """A folder written by `Dataset.save_to_disk`."""
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        raise DataError(f"{shown} is a DatasetDict saved with save_to_disk (splits: "
                        f"{', '.join(splits)}): name one split's folder, e.g. data.{key} = "
                        f"{Path(shown).name}/{splits[0] if splits else 'train'}")
    if not (path / "state.json").is_file():
        raise DataError(f"{shown} is a folder, but not one written by datasets' save_to_disk "
                        "(it has no state.json); name a file (.parquet, .csv, .tsv, .jsonl) "
                        "instead")
    from datasets import ClassLabel, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except Exception as error:  # datasets raises many kinds for a damaged folder
        raise DataError(f"{shown}: datasets cannot load it ({type(error).__name__}: "
                        f"{error})") from None
    for name, column_key in ((text_column, "text_column"), (label_column, "label_column")):
        if name is not None and name not in dataset.column_names:
            raise _missing_column(shown, name, column_key, dataset.column_names)
    columns = [text_column] + [label_column] * bool(label_column)
    feature = dataset.features.get(label_column) if label_column else None
    class_names = feature.names if isinstance(feature, ClassLabel) else None
    table = dataset.select_columns(columns).with_format("arrow")[:]
    return _from_arrow(table, shown, text_column, label_column, class_names)


def read_reviews(folder: str | Path, name: str, key: str, text_column: str,
                 label_column: str | None) -> Reviews:
    """Read one of `data.train`, `data.test`, `data.unlabelled`: its text column and, if
    `label_column` is given, its label column.

    Args:
        folder: `data.path`.
        name: the file's name in it (`data.<key>`).
        key: train, test or unlabelled, for messages.

    Raises:
        DataError: the file is missing, has an unknown extension, is not what its extension
            says, is not UTF-8, is malformed, or lacks a column.
    """
    path = Path(folder) / name
    shown = f"{folder}/{name}"
    if not path.exists():
        raise DataError(f"{shown} not found (data.path = {str(folder)!r}, data.{key} = "
                        f"{name!r})")
    if path.is_dir():
        return _read_saved(path, shown, key, text_column, label_column)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{shown}: unknown format {path.suffix or '(no extension)'!r}; use "
                        ".parquet, .csv, .tsv, .jsonl or a folder written by datasets' "
                        "save_to_disk")
    if kind == "parquet":
        return _read_parquet(path, shown, text_column, label_column)
    content = _content_kind(path)
    if content == "empty":
        raise DataError(f"{shown} is empty")
    if kind in ("csv", "tsv") and content != "text":
        raise DataError(f"{shown} is not {kind.upper()}: it holds {_DESCRIBED[content]}; give it "
                        "the extension of what it is (.parquet, .jsonl), or export it as CSV")
    if kind == "jsonl" and content == "json array":
        raise DataError(f"{shown} is a JSON array, not JSON Lines: write one object per line "
                        "(pandas: df.to_json(path, orient='records', lines=True))")
    if kind == "jsonl" and content != "jsonl":
        raise DataError(f"{shown} is not JSON Lines: it holds {_DESCRIBED[content]}; give it "
                        "the extension of what it is (.csv, .parquet)")
    text = _read_utf8(path, shown)
    if kind == "jsonl":
        return _read_jsonl(text, shown, text_column, label_column)
    return _read_csv(text, shown, "\t" if kind == "tsv" else ",", text_column, label_column)


def clean_texts(reviews: Reviews) -> list[str]:
    """The reviews' texts, cleaned (`kd.data.splits.clean_text`).

    Raises:
        DataError: a text is not a string, or is empty or whitespace-only (HTML line breaks
            count as whitespace): every such row is counted and the first few named.
    """
    cleaned, empty = [], []
    for index, text in enumerate(reviews.texts):
        if text is not None and not isinstance(text, str):
            raise DataError(f"{reviews.file} {reviews.row(index)}: the text is {text!r} "
                            f"({type(text).__name__}), not a string")
        cleaned.append(clean_text(text or ""))
        if not cleaned[-1]:
            empty.append(index)
    if not reviews.texts:
        raise DataError(f"{reviews.file} holds no reviews")
    if empty:
        raise DataError(
            f"{reviews.file}: {len(empty)} review(s) with an empty or whitespace-only text, at "
            f"{reviews.rows(empty)}. They are refused, not dropped (docs/own-data.md): "
            "remove or fill those rows in your file")
    return cleaned


def label_keys(reviews: Reviews, label_column: str) -> list:
    """The reviews' labels as `kd.data.labels.label_key` values.

    Raises:
        DataError: a review has no label, or a label that is not one value.
    """
    keys, missing = [], []
    for index, value in enumerate(reviews.labels):
        key = label_key(value)
        if key is None:
            missing.append(index)
        elif not isinstance(key, (str, int, float)):
            raise DataError(f"{reviews.file} {reviews.row(index)}: the label is {value!r}, not a "
                            "single value")
        keys.append(key)
    if missing:
        raise DataError(
            f"{reviews.file}: {len(missing)} review(s) without a label ({label_column!r} empty) "
            f"at {reviews.rows(missing)}; every train and test review needs one (reviews "
            "without labels go in data.unlabelled)")
    return keys


def check_label_values(reviews: Reviews, keys: list, label_column: str) -> list:
    """The K >= 2 label values of the training file, sorted by name.

    Raises:
        DataError: fewer than two values (each listed with its count and first row); more than
            two that look like a regression target (`kd.data.labels.check_classes`).
    """
    counts = Counter(keys)
    if len(counts) < 2:
        listing = "; ".join(f"{label_name(key)!r}: {count} review(s), first at "
                            f"{reviews.row(keys.index(key))}"
                            for key, count in counts.most_common())
        raise DataError(f"{reviews.file}: the label column {label_column!r} holds "
                        f"{len(counts)} value(s) ({listing}); the pipeline needs at least two")
    if len(counts) > 2:
        try:
            check_classes(counts)
        except LabelError as error:
            raise DataError(f"{reviews.file}: the label column {label_column!r} {error}") from None
    return sorted(counts, key=label_name)


@dataclass
class Overlap:
    """Test reviews whose cleaned text is also in train or unlabelled (leakage)."""

    in_train: list[int]  # test rows (0-based) found in train
    in_unlabelled: list[int]  # test rows found in unlabelled (and not in train)
    example: str  # one pair, for messages

    def share(self, test_reviews: int) -> float:
        return (len(self.in_train) + len(self.in_unlabelled)) / max(test_reviews, 1)


def find_overlap(test: Reviews, test_texts: list[str], train: Reviews, train_texts: list[str],
                 unlabelled: Reviews | None = None,
                 unlabelled_texts: list[str] | None = None) -> Overlap:
    """Which test reviews repeat a train or unlabelled review's text (cleaned, exact)."""
    train_row = {}
    for index, text in enumerate(train_texts):
        train_row.setdefault(text, index)
    unlabelled_row = {}
    for index, text in enumerate(unlabelled_texts or []):
        unlabelled_row.setdefault(text, index)
    in_train, in_unlabelled, example = [], [], ""
    for index, text in enumerate(test_texts):
        if text in train_row:
            in_train.append(index)
            example = example or (f"{test.file} {test.row(index)} = {train.file} "
                                  f"{train.row(train_row[text])}")
        elif text in unlabelled_row:
            in_unlabelled.append(index)
            example = example or (f"{test.file} {test.row(index)} = {unlabelled.file} "
                                  f"{unlabelled.row(unlabelled_row[text])}")
    return Overlap(in_train, in_unlabelled, example)


IMDB_RATINGS = (1, 2, 3, 4, 7, 8, 9, 10)  # the stars in Stanford's file names (5 and 6: none)


class ImdbSource:
    """Stanford's tarball (`kd.data.splits`): indexed, then streamed into the splits. The label
    is the folder (neg 0, pos 1), or with `data.imdb_label = rating` the rating's rank among
    IMDB_RATINGS (1 star is 0, 10 stars 7)."""

    def __init__(self, params: DataParams):
        self.path = Path(params.path)
        self.by_rating = params.imdb_label == "rating"
        self.names = ([str(rating) for rating in IMDB_RATINGS] if self.by_rating
                      else list(IMDB_LABELS))
        self.labels_from = f"{params.path} (its ratings, data.imdb_label = rating)"
        self._label_of_rating = {rating: label for label, rating in enumerate(IMDB_RATINGS)}

    def index(self) -> dict[str, pa.Table]:
        index = index_tarball(self.path)
        if not self.by_rating:
            return index
        lookup = np.full(max(IMDB_RATINGS) + 1, -2, dtype=np.int64)
        lookup[list(IMDB_RATINGS)] = range(len(IMDB_RATINGS))
        for split in ("train", "test"):
            ratings = index[split]["rating"].to_numpy()
            outside = (ratings < 0) | (ratings > max(IMDB_RATINGS))
            labels = np.where(outside, -2, lookup[np.clip(ratings, 0, max(IMDB_RATINGS))])
            if (labels < 0).any():
                at = int(np.flatnonzero(labels < 0)[0])
                raise DataError(
                    f"{self.path}: review {index[split]['id'][at].as_py()} has rating "
                    f"{int(ratings[at])}; data.imdb_label = rating allows "
                    f"{', '.join(map(str, IMDB_RATINGS))}")
            index[split] = index[split].set_column(
                index[split].schema.get_field_index("label"), "label",
                pa.array(labels, pa.int64()))
        return index

    def write(self, splits: dict[str, pa.Table], out_dir: str | Path) -> dict[str, int]:
        if self.by_rating:
            return write_splits(self.path, splits, out_dir, self._label_of_rating)
        return write_splits(self.path, splits, out_dir)

    def describe(self) -> dict:
        if self.by_rating:
            return {"source": "imdb", "imdb_label": "rating", "labels": self.names,
                    "label_values": {name: label for label, name in enumerate(self.names)},
                    "label_rule": "IMDb's ratings in the file names (ID_RATING.txt), ascending: "
                                  "1 star is 0, ..., 10 stars is 7 (there are no 5 or 6)"}
        return {"source": "imdb", "labels": list(IMDB_LABELS),
                "label_values": {"neg": 0, "pos": 1},
                "label_rule": "IMDb's folders: neg/ (1-4 stars) is 0, pos/ (7-10 stars) is 1"}


class FilesSource:
    """Your files in the folder `data.path`, read and checked whole when opened."""

    _ID_PREFIX = {"train": "train", "test": "test", "unsup": "unsup"}

    def __init__(self, params: DataParams):
        """Read and check every file: nothing is written before all of them pass.

        Raises:
            DataError: see `read_reviews`, `clean_texts`, `label_keys`, `check_label_values`;
                a test label that train lacks; too many test texts also in train or unlabelled.
        """
        folder = Path(params.path)
        if not folder.is_dir():
            raise DataError(f"data.path = {params.path!r} is not a folder: with data.source = "
                            "files it is the folder that holds data.train and data.test")
        self.params = params
        text, label = params.text_column, params.label_column
        train = read_reviews(params.path, params.train, "train", text, label)
        test = read_reviews(params.path, params.test, "test", text, label)
        unlabelled = (read_reviews(params.path, params.unlabelled, "unlabelled", text, None)
                      if params.unlabelled else None)
        train_texts, test_texts = clean_texts(train), clean_texts(test)
        unlabelled_texts = clean_texts(unlabelled) if unlabelled is not None else []
        train_keys, test_keys = label_keys(train, label), label_keys(test, label)
        values = check_label_values(train, train_keys, label)
        foreign = [index for index, key in enumerate(test_keys) if key not in values]
        if foreign and len(values) == 2:
            raise DataError(
                f"{test.file}: {len(foreign)} review(s) with a label train does not have, e.g. "
                f"{label_name(test_keys[foreign[0]])!r} at {test.rows(foreign)}; train's labels "
                f"are {' and '.join(repr(label_name(value)) for value in values)}")
        if foreign:
            raise DataError(
                f"{test.file}: {len(foreign)} review(s) with a label train does not have in "
                f"column {label!r}, e.g. {label_name(test_keys[foreign[0]])!r} at "
                f"{test.rows(foreign)}; allowed: train's labels "
                f"{', '.join(repr(label_name(value)) for value in values)}")
        try:
            if len(values) == 2:
                mapping, self.rule = map_labels(values, params.positive_label)
            elif params.positive_label != "":
                raise LabelError(
                    f"the label column {label!r} holds {len(values)} values; "
                    f"data.positive_label = {params.positive_label!r} applies to two labels "
                    "only: leave it empty (K > 2 values are mapped by the rule in "
                    "docs/own-data.md)")
            else:
                mapping, self.rule = map_classes(values)
        except LabelError as error:
            raise DataError(f"{train.file}: {error}") from None
        self.labels_from = f"{train.file}, column {label!r}"
        self.names = [label_name(key) for key, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
        self.overlap = find_overlap(test, test_texts, train, train_texts, unlabelled,
                                    unlabelled_texts)
        share = self.overlap.share(len(test_texts))
        if share > params.max_overlap:
            raise DataError(
                f"{test.file}: {len(self.overlap.in_train) + len(self.overlap.in_unlabelled)} of "
                f"{len(test_texts)} test reviews ({share:.2%}) repeat a text of train "
                f"({len(self.overlap.in_train)}) or unlabelled ({len(self.overlap.in_unlabelled)})"
                f", e.g. {self.overlap.example}; above data.max_overlap = "
                f"{params.max_overlap:.2%}, the test split would score what the models trained "
                "on. Remove them from one side, or raise data.max_overlap")
        self.test_reviews = len(test_texts)
        self.reviews = {
            "train": (train_texts, [mapping[key] for key in train_keys]),
            "test": (test_texts, [mapping[key] for key in test_keys]),
            "unsup": (unlabelled_texts, [-1] * len(unlabelled_texts)),
        }

    def index(self) -> dict[str, pa.Table]:
        """{"train", "test", "unsup"} -> (id, label, rating, position), sorted by id."""
        index = {}
        for split, (texts, labels) in self.reviews.items():
            prefix = self._ID_PREFIX[split]
            index[split] = pa.table({
                "id": pa.array([f"{prefix}/{row + 1}" for row in range(len(texts))], pa.string()),
                "label": pa.array(labels, pa.int64()),
                "rating": pa.array([0] * len(texts), pa.int64()),
                "position": pa.array(range(len(texts)), pa.int64()),
            }).sort_by("id")
        return index

    def write(self, splits: dict[str, pa.Table], out_dir: str | Path) -> dict[str, int]:
        """Write each split's reviews to `out_dir/<split>.parquet` (sorted by id); the files
        appear only once all are written.

        Returns:
            {split: reviews written}.
        """
        origin = {"train": "train", "val": "train", "test": "test", "unsup": "unsup"}
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {}
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".prepare-") as work:
            for name, chosen in splits.items():
                texts, _ = self.reviews[origin[name]]
                table = pa.table({
                    "id": chosen["id"],
                    "text": pa.array([texts[at] for at in chosen["position"].to_pylist()],
                                     pa.string()),
                    "label": chosen["label"],
                    "rating": chosen["rating"],
                }, schema=SCHEMA)
                pq.write_table(table, Path(work) / f"{name}.parquet",
                               row_group_size=ROW_GROUP_ROWS)
                written[name] = table.num_rows
            for name in splits:
                os.replace(Path(work) / f"{name}.parquet", out_dir / f"{name}.parquet")
        return written

    def describe(self) -> dict:
        params = self.params
        return {
            "source": "files",
            "files": {"train": params.train, "test": params.test,
                      "unlabelled": params.unlabelled or None},
            "text_column": params.text_column,
            "label_column": params.label_column,
            "labels": self.names,
            "label_values": {name: value for value, name in enumerate(self.names)},
            "label_rule": self.rule,
            "test_overlap": {
                "in_train": len(self.overlap.in_train),
                "in_unlabelled": len(self.overlap.in_unlabelled),
                "share": round(self.overlap.share(self.test_reviews), 6),
                "max_overlap": params.max_overlap,
            },
        }


def open_source(params: DataParams) -> ImdbSource | FilesSource:
    """The source `data.source` names; a files source is read and checked whole here.

    Raises:
        DataError: see `FilesSource`.
    """
    return FilesSource(params) if params.source == "files" else ImdbSource(params)


def prepare(params: Params, out_dir: str | Path) -> dict:
    """Turn the source into the prepared splits and `source.json` in `out_dir`.

    Samples (`subset_size`, `test_size`, `unsup_size`) and the validation split are drawn the
    same way for every source (`kd.data.splits.make_splits`).

    Returns:
        What `source.json` holds: the source, label names and rule, checks, reviews per split.

    Raises:
        DataError: bad data (nothing is written), or sizes larger than the data.
    """
    source = open_source(params.data)
    splits = make_splits(source.index(), subset_size=params.subset_size,
                         test_size=params.test_size, val_fraction=params.prepare.val_fraction,
                         seed=params.seed, unsup_size=params.unsup_size,
                         label_names=source.names, labels_from=source.labels_from)
    written = source.write(splits, out_dir)
    description = {**source.describe(), "reviews": written}
    path = Path(out_dir) / SOURCE_FILE
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
    return description
