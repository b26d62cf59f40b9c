"""Sources of reviews: the IMDb tarball and your own files, into the same prepared splits."""

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import REPO, make_rows, write_rows, write_tarball
from kd.data.labels import (
    LabelError,
    label_key,
    label_name,
    map_classes,
    map_labels,
    read_label_names,
)
from kd.data.sources import prepare
from kd.data.splits import SPLITS, DataError, index_tarball, make_splits, write_splits
from kd.params import parse_params

FORMATS = {"parquet": "train.parquet", "csv": "train.csv", "tsv": "train.tsv",
           "jsonl": "train.jsonl", "datasets": "train_saved"}


def params_for(folder: Path, **data):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update({"source": "files", "path": str(folder), "train": "train.csv",
                        "test": "test.csv", "text_column": "review",
                        "label_column": "sentiment", **data})
    return parse_params(raw)


def read_split(folder: Path, name: str) -> list[dict]:
    return pq.read_table(folder / f"{name}.parquet").to_pylist()


@pytest.fixture
def files(tmp_path) -> Path:
    """A folder with train.csv (40 reviews), test.csv (20) and unlabelled.csv (10)."""
    folder = tmp_path / "reviews"
    write_rows(folder / "train.csv", make_rows(40, seed=1), "csv")
    write_rows(folder / "test.csv", make_rows(20, seed=2), "csv")
    write_rows(folder / "unlabelled.csv", [{"review": row["review"]}
                                           for row in make_rows(10, seed=3)], "csv")
    return folder


def test_files_become_the_prepared_splits(files, tmp_path):
    out = tmp_path / "prepared"
    description = prepare(params_for(files, unlabelled="unlabelled.csv"), out)
    train_rows = list(csv.DictReader(open(files / "train.csv", encoding="utf-8")))
    test_rows = list(csv.DictReader(open(files / "test.csv", encoding="utf-8")))
    splits = {name: read_split(out, name) for name in SPLITS}
    assert description["reviews"] == {"train": 36, "val": 4, "test": 20, "unsup": 10}
    # Validation is carved from train; the test file is kept whole; ids name the file's rows.
    assert sorted(row["id"] for row in splits["train"] + splits["val"]) == sorted(
        f"train/{row}" for row in range(1, 41))
    assert [row["id"] for row in splits["test"]] == sorted(f"test/{row}" for row in range(1, 21))
    for name in ("train", "val", "test"):
        source = train_rows if name != "test" else test_rows
        for row in splits[name]:
            original = source[int(row["id"].split("/")[1]) - 1]
            assert row["text"] == " ".join(original["review"].replace("<br />", " ").split())
            assert row["label"] == {"neg": 0, "pos": 1}[original["sentiment"]]
            assert row["rating"] == 0
        ids = [row["id"] for row in splits[name]]
        assert ids == sorted(ids)
    assert {row["label"] for row in splits["unsup"]} == {-1}
    assert {label for label in (row["label"] for row in splits["val"])} == {0, 1}  # stratified
    stored = json.loads((out / "source.json").read_text())
    assert stored == description
    assert stored["labels"] == ["neg", "pos"] and stored["label_values"] == {"neg": 0, "pos": 1}
    assert "by name" in stored["label_rule"]
    assert stored["files"] == {"train": "train.csv", "test": "test.csv",
                               "unlabelled": "unlabelled.csv"}
    assert str(tmp_path) not in (out / "source.json").read_text()  # no paths of this machine
    assert read_label_names(out / "source.json") == ("neg", "pos")


@pytest.mark.parametrize("fmt", ["parquet", "tsv", "jsonl", "datasets"])
def test_every_format_gives_the_same_bytes_as_csv(fmt, tmp_path):
    rows, test_rows = make_rows(30, seed=4), make_rows(10, seed=5)
    for folder, kind in ((tmp_path / "csv", "csv"), (tmp_path / fmt, fmt)):
        write_rows(folder / FORMATS[kind], rows, kind)
        write_rows(folder / FORMATS[kind].replace("train", "test"), test_rows, kind)
        prepare(params_for(folder, train=FORMATS[kind],
                           test=FORMATS[kind].replace("train", "test")), folder / "out")
    for name in SPLITS:
        assert ((tmp_path / fmt / "out" / f"{name}.parquet").read_bytes()
                == (tmp_path / "csv" / "out" / f"{name}.parquet").read_bytes())


def test_a_saved_class_label_gives_its_names(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"review": Value("string"),
                         "sentiment": ClassLabel(names=["bad", "good"])})
    for name, count in (("train", 20), ("test", 6)):
        rows = [{"review": row["review"], "sentiment": index % 2}
                for index, row in enumerate(make_rows(count, seed=count))]
        Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "saved" / name))
    description = prepare(params_for(tmp_path / "saved", train="train", test="test"),
                          tmp_path / "out")
    assert description["labels"] == ["bad", "good"]
    assert [row["label"] for row in read_split(tmp_path / "out", "test")] == [
        0, 1, 0, 1, 0, 1]


def test_the_imdb_default_writes_what_the_tarball_stages_wrote(tarball, tmp_path):
    """The default source is the tarball, through the same code: the same bytes."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["path"] = str(tarball)
    params = parse_params(raw)
    assert params.data.source == "imdb"
    description = prepare(params, tmp_path / "new")
    index = index_tarball(tarball)
    write_splits(tarball, make_splits(index, 0, 0, params.prepare.val_fraction, params.seed),
                 tmp_path / "old")
    for name in SPLITS:
        assert ((tmp_path / "new" / f"{name}.parquet").read_bytes()
                == (tmp_path / "old" / f"{name}.parquet").read_bytes())
    assert description["labels"] == ["negative", "positive"]
    assert description["reviews"] == {"train": 36, "val": 4, "test": 40, "unsup": 10}


@pytest.mark.parametrize(("values", "names", "rule"), [
    (["pos", "neg"], ["neg", "pos"], "by name"),
    (["Negative", "Positive"], ["Negative", "Positive"], "by name"),
    (["good", "bad"], ["bad", "good"], "by name"),
    (["positive", "mixed"], ["mixed", "positive"], "by name"),  # one name is enough
    (["1", "0"], ["0", "1"], "numbers"),
    ([2, 1], ["1", "2"], "numbers"),  # 1/2 stars: the smaller is 0
    (["-1", "1"], ["-1", "1"], "numbers"),
    ([True, False], ["false", "true"], "numbers"),
    (["spam", "ham"], ["ham", "spam"], "sorted as text"),
])
def test_two_label_values_are_mapped_by_the_stated_rule(values, names, rule):
    mapping, stated = map_labels([label_key(value) for value in values])
    assert [str(key).lower() if isinstance(key, bool) else str(key)
            for key, _ in sorted(mapping.items(), key=lambda item: item[1])] == names
    assert rule in stated


def test_positive_label_chooses_and_may_not_contradict_the_names():
    mapping, rule = map_labels(["ham", "spam"], positive_label="ham")
    assert mapping == {"ham": 1, "spam": 0} and "data.positive_label" in rule
    assert map_labels([0, 1], positive_label="0")[0] == {0: 1, 1: 0}
    with pytest.raises(LabelError, match="contradicts the label names"):
        map_labels(["negative", "positive"], positive_label="negative")
    with pytest.raises(LabelError, match="is not one of the label values 'ham', 'spam'"):
        map_labels(["ham", "spam"], positive_label="eggs")
    with pytest.raises(LabelError, match="both label values read as positive"):
        map_labels(["pos", "positive"])


def test_label_strings_and_integers_are_one_value():
    assert label_key(" 1 ") == label_key(1) == label_key(1.0) == 1
    assert label_key("") is None and label_key(None) is None
    assert label_key(" pos ") == "pos"


# Bad data: each case writes its files, then `prepare` must stop with the file, the row and
# what is wrong, before writing anything.
def _csv(text: str) -> bytes:
    return text.encode("utf-8")


def _unchecked_strings(values: list[bytes]) -> pa.Array:
    """A string array holding whatever bytes it is given, as a careless writer makes one."""
    offsets = [0]
    for value in values:
        offsets.append(offsets[-1] + len(value))
    return pa.Array.from_buffers(pa.string(), len(values), [
        None, pa.py_buffer(pa.array(offsets, pa.int32()).buffers()[1]),
        pa.py_buffer(b"".join(values))])


GOOD_TEST = "review,sentiment\nsplendid film,pos\nawful film,neg\n"
GOOD_TRAIN = "review,sentiment\n" + "".join(
    f"review number {index} {'great' if index % 2 else 'awful'},{'pos' if index % 2 else 'neg'}\n"
    for index in range(20))



def _labelled(labels, per_label: int, start: int = 0) -> str:
    """A CSV header, then `per_label` distinct reviews for each label, round robin."""
    rows = [(label, index) for index in range(per_label) for label in labels]
    return "review,sentiment\n" + "".join(
        f"review number {start + at} about {label},{label}\n" for at, (label, _) in
        enumerate(rows))


THREE_TRAIN = _labelled(["neg", "neutral", "pos"], 10)

BAD_DATA = {
    "missing text column": (
        {"train.csv": _csv(GOOD_TRAIN.replace("review,", "text,", 1))}, {},
        "reviews/train.csv has no column 'review' (data.text_column); its columns: 'text', "
        "'sentiment'"),
    "missing label column": (
        {"test.csv": _csv(GOOD_TEST.replace(",sentiment", ",stars", 1))}, {},
        "reviews/test.csv has no column 'sentiment' (data.label_column)"),
    "missing column in Parquet": (
        {"train.parquet": pa.table({"review": ["a", "b"]})}, {"train": "train.parquet"},
        "reviews/train.parquet has no column 'sentiment' (data.label_column); its columns: "
        "'review'"),
    "one label value": (
        {"train.csv": _csv("review,sentiment\ngood,pos\nfine,pos\n")}, {},
        "reviews/train.csv: the label column 'sentiment' holds 1 value(s) ('pos': 2 review(s), "
        "first at row 1 (line 2)); the pipeline needs at least two"),
    "a regression target: fractions": (
        {"train.csv": _csv(_labelled([0.5, 1.5, 2.5, 3], 10))}, {},
        "reviews/train.csv: the label column 'sentiment' holds numbers that are not integral "
        "('0.5', '1.5', '2.5'): a regression target? The pipeline classifies; allowed: 2 to 50 "
        "classes, named by text or by integers"),
    "a regression target: too many values": (
        {"train.csv": _csv(_labelled(range(51), 2))}, {},
        "reviews/train.csv: the label column 'sentiment' holds 51 distinct values: a "
        "regression target or an id? The pipeline classifies; allowed: 2 to 50 classes"),
    "a class too small for the validation split": (
        {"train.csv": _csv(_labelled(["neg", "pos"], 12) + _labelled(["neutral"], 6, 24)
                           .split("\n", 1)[1])}, {},
        "reviews/train.csv, column 'sentiment': 1 class(es) with too few training reviews "
        "('neutral': 6) for prepare.val_fraction = 0.1 of 30: each class needs at least 10, "
        "so that validation holds one and train keeps one. Allowed: classes with that many"),
    "a test label train lacks, three classes": (
        {"train.csv": _csv(THREE_TRAIN), "test.csv": _csv(GOOD_TEST + "meh,mixed\n")}, {},
        "reviews/test.csv: 1 review(s) with a label train does not have in column "
        "'sentiment', e.g. 'mixed' at row 3 (line 4); allowed: train's labels 'neg', "
        "'neutral', 'pos'"),
    "positive_label with three classes": (
        {"train.csv": _csv(THREE_TRAIN)}, {"positive_label": "pos"},
        "reviews/train.csv: the label column 'sentiment' holds 3 values; data.positive_label = "
        "'pos' applies to two labels only: leave it empty"),
    "a test label train lacks": (
        {"test.csv": _csv(GOOD_TEST + "meh,neutral\n")}, {},
        "reviews/test.csv: 1 review(s) with a label train does not have, e.g. 'neutral' at "
        "row 3 (line 4); train's labels are 'neg' and 'pos'"),
    "a review without a label": (
        {"train.csv": _csv(GOOD_TRAIN + "a film,\n")}, {},
        "reviews/train.csv: 1 review(s) without a label ('sentiment' empty) at row 21 "
        "(line 22)"),
    "empty texts": (
        {"train.csv": _csv(GOOD_TRAIN + ",pos\n   ,neg\n<br /><br />,pos\n")}, {},
        "reviews/train.csv: 3 review(s) with an empty or whitespace-only text, at row 21 "
        "(line 22), row 22 (line 23), row 23 (line 24). They are refused, not dropped"),
    "empty texts in JSON Lines": (
        {"unlabelled.jsonl": _csv('{"review": "fine"}\n\n{"review": " "}\n{"other": 1}\n')},
        {"unlabelled": "unlabelled.jsonl"},
        "reviews/unlabelled.jsonl: 2 review(s) with an empty or whitespace-only text, at row 2 "
        "(line 3), row 3 (line 4)"),
    "bytes that are not UTF-8": (
        {"train.csv": GOOD_TRAIN.encode() + b"caf\xe9 society,pos\n"}, {},
        "reviews/train.csv line 22: bytes that are not UTF-8 (b'\\xe9' at byte"),
    "bytes that are not UTF-8 in JSON Lines": (
        {"test.jsonl": b'{"review": "ok", "sentiment": "pos"}\n{"review": "\xff"}\n'},
        {"test": "test.jsonl"}, "reviews/test.jsonl line 2: bytes that are not UTF-8"),
    "bytes that are not UTF-8 in Parquet": (
        {"test.parquet": pa.table({"review": pa.array([b"fine", b"\xc3\x28"], pa.binary()),
                                   "sentiment": ["pos", "neg"]})}, {"test": "test.parquet"},
        "reviews/test.parquet row 2: the text holds bytes that are not UTF-8 (b'\\xc3' at "
        "byte 0)"),
    "bytes that are not UTF-8 in a Parquet string column": (
        {"test.parquet": pa.table({"review": _unchecked_strings([b"fine", b"caf\xe9"]),
                                   "sentiment": ["pos", "neg"]})}, {"test": "test.parquet"},
        "reviews/test.parquet row 2: the text holds bytes that are not UTF-8 (b'\\xe9' at "
        "byte 3)"),
    "leakage above the threshold": (
        {"test.csv": _csv("review,sentiment\nreview number 3 great,pos\nnew film,neg\n")}, {},
        "reviews/test.csv: 1 of 2 test reviews (50.00%) repeat a text of train (1) or "
        "unlabelled (0), e.g. reviews/test.csv row 1 (line 2) = reviews/train.csv row 4 "
        "(line 5); above data.max_overlap = 2.00%"),
    "CSV named Parquet": (
        {"train.parquet": _csv(GOOD_TRAIN)}, {"train": "train.parquet"},
        "reviews/train.parquet is not a Parquet file: it holds plain text (CSV-like)"),
    "Parquet named CSV": (
        {"test.csv": pa.table({"review": ["a"], "sentiment": ["pos"]})}, {},
        "reviews/test.csv is not CSV: it holds a Parquet file"),
    "CSV named JSON Lines": (
        {"train.jsonl": _csv(GOOD_TRAIN)}, {"train": "train.jsonl"},
        "reviews/train.jsonl is not JSON Lines: it holds plain text (CSV-like)"),
    "a JSON array": (
        {"train.json": _csv('[{"review": "a", "sentiment": "pos"}]')}, {"train": "train.json"},
        "reviews/train.json is a JSON array, not JSON Lines"),
    "gzip named CSV": (
        {"train.csv": b"\x1f\x8b\x08\x00rest"}, {}, "is not CSV: it holds gzip-compressed data"),
    "an unknown extension": (
        {"train.xlsx": b"PK\x03\x04"}, {"train": "train.xlsx"},
        "reviews/train.xlsx: unknown format '.xlsx'; use .parquet, .csv, .tsv, .jsonl"),
    "a malformed CSV row": (
        {"train.csv": _csv(GOOD_TRAIN + "too,many,fields\n")}, {},
        "reviews/train.csv row 21 (line 22): 3 fields where the header has 2"),
    "a malformed JSON line": (
        {"train.jsonl": _csv('{"review": "a", "sentiment": "pos"}\n{"review": \n')},
        {"train": "train.jsonl"}, "reviews/train.jsonl line 2: not valid JSON"),
    "a missing file": ({}, {"test": "nope.csv"}, "reviews/nope.csv not found"),
    "a folder datasets did not write": (
        {"plain/readme.txt": b"hello"}, {"train": "plain"},
        "reviews/plain is a folder, but not one written by datasets' save_to_disk"),
}


def _write_case(folder: Path, files: dict) -> None:
    (folder / "train.csv").write_bytes(_csv(GOOD_TRAIN))
    (folder / "test.csv").write_bytes(_csv(GOOD_TEST))
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, pa.Table):
            pq.write_table(content, path)
        else:
            path.write_bytes(content)


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_stops_before_any_work(case, tmp_path, monkeypatch):
    files, data, message = BAD_DATA[case]
    monkeypatch.chdir(tmp_path)  # messages name files as data.path does: relative here
    (tmp_path / "reviews").mkdir()
    _write_case(tmp_path / "reviews", files)
    with pytest.raises(DataError) as error:
        prepare(params_for(Path("reviews"), **data), tmp_path / "prepared")
    assert message in str(error.value)
    assert not (tmp_path / "prepared").exists()  # nothing written


def test_leakage_under_the_threshold_is_counted(tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    _write_case(folder, {"test.csv": _csv(GOOD_TEST + "review number 3 great,pos\n")})
    description = prepare(params_for(folder, max_overlap=0.5), tmp_path / "prepared")
    assert description["test_overlap"] == {"in_train": 1, "in_unlabelled": 0,
                                           "share": round(1 / 3, 6), "max_overlap": 0.5}
    assert description["reviews"]["test"] == 3  # counted, not removed: test stays whole


def test_a_datasetdict_folder_names_its_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = make_rows(4, seed=0)
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "saved"))
    with pytest.raises(DataError, match=r"saved is a DatasetDict saved with save_to_disk "
                                        r"\(splits: train, test\): name one split's folder, "
                                        r"e.g. data.train = saved/train"):
        prepare(params_for(tmp_path, train="saved", test="saved/test"), tmp_path / "out")


# K > 2 classes: the names kept, mapped by the rule in kd.data.labels, every class in both
# train and validation.
@pytest.mark.parametrize(("values", "names", "rule"), [
    (["10", "9", "1", "2"], ["1", "2", "9", "10"], "4 numbers, ascending"),  # not "10" < "9"
    ([3, -1, 0], ["-1", "0", "3"], "3 numbers, ascending"),
    (["positive", "Neutral", "negative"], ["negative", "Neutral", "positive"],
     "3 values sorted as text"),
    (["b", 2, "a"], ["2", "a", "b"], "3 values sorted as text"),  # mixed: as text
])
def test_more_than_two_values_are_mapped_by_the_stated_rule(values, names, rule):
    mapping, stated = map_classes([label_key(value) for value in values])
    assert [label_name(key) for key, _ in sorted(mapping.items(), key=lambda kv: kv[1])] == names
    assert sorted(mapping.values()) == list(range(len(values)))
    assert stated.startswith(rule)


def test_three_classes_become_the_prepared_splits(tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    _write_case(folder, {"train.csv": _csv(THREE_TRAIN),
                         "test.csv": _csv(GOOD_TEST + "a so-so film,neutral\n")})
    out = tmp_path / "prepared"
    description = prepare(params_for(folder), out)
    assert description["labels"] == ["neg", "neutral", "pos"]
    assert description["label_values"] == {"neg": 0, "neutral": 1, "pos": 2}
    assert description["label_rule"].startswith("3 values sorted as text")
    assert json.loads((out / "source.json").read_text())["labels"] == ["neg", "neutral", "pos"]
    assert description["reviews"] == {"train": 27, "val": 3, "test": 3, "unsup": 0}
    # Each review's label is its class's place: the text names the class it was written with.
    for name in ("train", "val"):
        rows = read_split(out, name)
        assert all(row["text"].endswith(["neg", "neutral", "pos"][row["label"]]) for row in rows)
    assert sorted(row["label"] for row in read_split(out, "val")) == [0, 1, 2]
    assert [row["label"] for row in read_split(out, "test")] == [2, 0, 1]


def test_imdb_rating_is_an_eight_class_label(tmp_path):
    tarball = write_tarball(tmp_path / "aclImdb_v1.tar.gz", reviews_per_folder=100)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update({"path": str(tarball), "imdb_label": "rating"})
    description = prepare(parse_params(raw), tmp_path / "prepared")
    assert description["labels"] == ["1", "2", "3", "4", "7", "8", "9", "10"]
    assert description["label_values"]["10"] == 7
    assert description["imdb_label"] == "rating"
    rank = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 9: 6, 10: 7}
    for name in ("train", "val", "test"):
        rows = read_split(tmp_path / "prepared", name)
        assert all(row["label"] == rank[row["rating"]] for row in rows)
        # The rating is the one in the file name, and the folder agrees with it.
        assert all((row["rating"] >= 7) == ("/pos/" in row["id"]) for row in rows)
    assert sorted({row["label"] for row in read_split(tmp_path / "prepared", "val")}) == list(
        range(8))
    assert {row["label"] for row in read_split(tmp_path / "prepared", "unsup")} == {-1}


def test_imdb_rating_with_too_few_reviews_per_star_stops(tmp_path):
    tarball = write_tarball(tmp_path / "aclImdb_v1.tar.gz", reviews_per_folder=20)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update({"path": str(tarball), "imdb_label": "rating"})
    with pytest.raises(DataError) as error:
        prepare(parse_params(raw), tmp_path / "prepared")
    assert (f"{tarball} (its ratings, data.imdb_label = rating): 8 class(es) with too few "
            "training reviews ('1': ") in str(error.value)
    assert "each class needs at least 10" in str(error.value)
    assert not (tmp_path / "prepared").exists()
