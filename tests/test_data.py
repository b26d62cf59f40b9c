import gzip
import shutil
from collections import Counter

import pytest

from conftest import write_tarball
from kd.data import (
    DataError,
    clean_text,
    fingerprint,
    load_split,
    make_splits,
    read_tarball,
    save_split,
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


def test_splits_are_stratified_seeded_and_val_comes_from_train(tarball):
    reviews = read_tarball(tarball)
    splits = make_splits(reviews, subset_size=20, test_size=10, val_fraction=0.2, seed=1)
    assert len(splits["train"]) + len(splits["val"]) == 20
    assert len(splits["test"]) == 10
    assert all(row["id"].startswith("train/") for row in splits["val"])
    assert Counter(row["label"] for row in splits["train"]) == {0: 8, 1: 8}
    again = make_splits(reviews, subset_size=20, test_size=10, val_fraction=0.2, seed=1)
    assert [row["id"] for row in again["val"]] == [row["id"] for row in splits["val"]]
    assert splits["unsup"] == reviews["unsup"]  # unsup_size 0: all of them, as read
    everything = make_splits(reviews, subset_size=0, test_size=0, val_fraction=0.25, seed=1)
    assert len(everything["train"]) + len(everything["val"]) == 40
    assert len(everything["test"]) == 40


def test_transfer_set_can_be_sampled(tarball):
    reviews = read_tarball(tarball)
    few = make_splits(reviews, subset_size=0, test_size=0, val_fraction=0.2, seed=1,
                      unsup_size=5)["unsup"]
    assert len(few) == 5 and {row["id"] for row in few} <= {row["id"] for row in reviews["unsup"]}
    with pytest.raises(DataError, match="unsup_size = 999 is larger than the data"):
        make_splits(reviews, subset_size=0, test_size=0, val_fraction=0.2, seed=1,
                    unsup_size=999)


def test_subset_larger_than_the_data_is_reported(tarball):
    with pytest.raises(DataError, match="subset_size = 41 is larger than the data: only 40"):
        make_splits(read_tarball(tarball), subset_size=41, test_size=0, val_fraction=0.1, seed=0)


def test_saved_split_round_trips_and_fingerprint_tracks_content(tarball, tmp_path):
    rows = read_tarball(tarball)["test"]
    save_split(rows, tmp_path / "test.parquet")
    dataset = load_split(tmp_path / "test.parquet")
    assert dataset.column_names == ["id", "text", "label", "rating"]
    assert list(dataset["id"]) == [row["id"] for row in rows]
    changed = [dict(rows[0], text=rows[0]["text"] + " extra")] + rows[1:]
    save_split(changed, tmp_path / "changed.parquet")
    assert fingerprint(dataset) != fingerprint(load_split(tmp_path / "changed.parquet"))
