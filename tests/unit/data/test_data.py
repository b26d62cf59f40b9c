import gzip
import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import write_tarball
from kd.data import splits as data
from kd.data.splits import (
    SPLITS,
    DataError,
    clean_text,
    fingerprint,
    fingerprint_file,
    index_tarball,
    load_split,
    make_splits,
    read_tarball,
    write_splits,
)


def test_reads_ids_labels_ratings_and_cleans_text(tarball):
    reviews = read_tarball(tarball)
    assert {split: len(rows) for split, rows in reviews.items()} == {
        "train": 40, "test": 40, "unsup": 10}
    first = reviews["train"][0]
    assert first["id"].startswith("train/neg/")
    assert "<br" not in first["text"] and "  " not in first["text"]
    for row in reviews["train"] + reviews["test"]:
        assert (row["label"] == 1) == (row["rating"] >= 7)
    assert all(row["label"] == -1 and row["rating"] == 0 for row in reviews["unsup"])
    assert all(row["id"].startswith("train/unsup/") for row in reviews["unsup"])


def test_clean_text_turns_line_breaks_into_spaces():
    assert clean_text("Great.<br /><br />Loved it<BR/>!") == "Great. Loved it !"


def test_missing_tarball_says_dvc_pull(tmp_path):
    with pytest.raises(DataError, match="dvc pull"):
        read_tarball(tmp_path / "aclImdb_v1.tar.gz")


def test_truncated_tarball_is_reported(tarball, tmp_path):
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_tarball(truncated)


def test_not_a_gzip_is_reported(tmp_path):
    bogus = tmp_path / "aclImdb_v1.tar.gz"
    bogus.write_text("<html>404 not found</html>")
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_tarball(bogus)


def test_tarball_without_imdb_layout_is_reported(tmp_path):
    path = write_tarball(tmp_path / "x.tar.gz", folders=("train/pos", "train/neg"))
    with pytest.raises(DataError, match=r"IMDb layout.*aclImdb/test/pos/"):
        read_tarball(path)
    plain = tmp_path / "plain.tar.gz"
    with gzip.open(plain, "wb") as handle, open(path, "rb") as source:
        shutil.copyfileobj(gzip.GzipFile(fileobj=source), handle)
    with pytest.raises(DataError, match="IMDb layout"):
        read_tarball(plain)


def test_index_holds_what_the_reviews_hold_but_the_texts(tarball):
    reviews = read_tarball(tarball)
    index = index_tarball(tarball)
    for split, rows in reviews.items():
        assert index[split].column_names == ["id", "label", "rating", "position"]
        assert index[split]["id"].to_pylist() == [row["id"] for row in rows]  # sorted by id
        assert index[split]["label"].to_pylist() == [row["label"] for row in rows]
        assert index[split]["rating"].to_pylist() == [row["rating"] for row in rows]


def test_splits_are_stratified_seeded_and_val_comes_from_train(tarball):
    index = index_tarball(tarball)
    splits = make_splits(index, subset_size=20, test_size=10, val_fraction=0.2, seed=1)
    assert splits["train"].num_rows + splits["val"].num_rows == 20
    assert splits["test"].num_rows == 10
    assert all(review_id.startswith("train/") for review_id in splits["val"]["id"].to_pylist())
    assert Counter(splits["train"]["label"].to_pylist()) == {0: 8, 1: 8}
    again = make_splits(index, subset_size=20, test_size=10, val_fraction=0.2, seed=1)
    assert again["val"]["id"].equals(splits["val"]["id"])
    assert splits["unsup"].equals(index["unsup"])  # unsup_size 0: all of them, as read
    everything = make_splits(index, subset_size=0, test_size=0, val_fraction=0.25, seed=1)
    assert everything["train"].num_rows + everything["val"].num_rows == 40
    assert everything["test"].num_rows == 40


def test_transfer_set_can_be_sampled(tarball):
    index = index_tarball(tarball)
    few = make_splits(index, subset_size=0, test_size=0, val_fraction=0.2, seed=1,
                      unsup_size=5)["unsup"]
    assert few.num_rows == 5
    assert set(few["id"].to_pylist()) <= set(index["unsup"]["id"].to_pylist())
    with pytest.raises(DataError, match="unsup_size = 999 is larger than the data"):
        make_splits(index, subset_size=0, test_size=0, val_fraction=0.2, seed=1,
                    unsup_size=999)


def test_subset_larger_than_the_data_is_reported(tarball):
    with pytest.raises(DataError, match="subset_size = 41 is larger than the data: only 40"):
        make_splits(index_tarball(tarball), subset_size=41, test_size=0, val_fraction=0.1,
                    seed=0)


def test_written_splits_hold_the_chosen_reviews_sorted_by_id(tarball, tmp_path, monkeypatch):
    """Small runs and row groups, so the texts go through several sorted runs and a merge."""
    monkeypatch.setattr(data, "RUN_ROWS", 7)
    monkeypatch.setattr(data, "ROW_GROUP_ROWS", 5)
    monkeypatch.setattr(data, "_MERGE_ROWS", 3)
    reviews = {row["id"]: row for rows in read_tarball(tarball).values() for row in rows}
    splits = make_splits(index_tarball(tarball), subset_size=30, test_size=20,
                         val_fraction=0.2, seed=3, unsup_size=6)
    written = write_splits(tarball, splits, tmp_path / "a")
    assert written == {name: splits[name].num_rows for name in SPLITS}
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == sorted(
        f"{name}.parquet" for name in SPLITS)  # the work folder is gone
    for name in SPLITS:
        table = pq.read_table(tmp_path / "a" / f"{name}.parquet")
        assert table.schema.equals(data.SCHEMA)
        assert table["id"].equals(splits[name]["id"])
        assert table.to_pylist() == [reviews[review_id] for review_id in table["id"].to_pylist()]
    assert pq.ParquetFile(tmp_path / "a/train.parquet").metadata.row_group(0).num_rows == 5
    write_splits(tarball, splits, tmp_path / "b")
    for name in SPLITS:  # the same tarball and splits give the same bytes
        assert ((tmp_path / "a" / f"{name}.parquet").read_bytes()
                == (tmp_path / "b" / f"{name}.parquet").read_bytes())


def test_a_tarball_that_breaks_while_writing_leaves_no_split(tarball, tmp_path, monkeypatch):
    splits = make_splits(index_tarball(tarball), subset_size=0, test_size=0, val_fraction=0.2,
                         seed=1)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        write_splits(truncated, splits, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_saved_split_round_trips_and_fingerprint_tracks_content(tarball, tmp_path):
    splits = make_splits(index_tarball(tarball), subset_size=0, test_size=0, val_fraction=0.2,
                         seed=1)
    write_splits(tarball, splits, tmp_path)
    dataset = load_split(tmp_path / "test.parquet")
    assert dataset.column_names == ["id", "text", "label", "rating"]
    assert list(dataset["id"]) == splits["test"]["id"].to_pylist()
    assert fingerprint_file(tmp_path / "test.parquet") == fingerprint(dataset)
    rows = dataset.to_list()
    changed = [dict(rows[0], text=rows[0]["text"] + " extra")] + rows[1:]
    pq.write_table(pa.Table.from_pylist(changed, schema=data.SCHEMA), tmp_path / "changed.parquet")
    assert fingerprint(dataset) != fingerprint(load_split(tmp_path / "changed.parquet"))
    assert fingerprint_file(tmp_path / "changed.parquet") != fingerprint(dataset)
