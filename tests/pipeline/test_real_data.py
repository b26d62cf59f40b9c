"""Checks on the DVC-pulled IMDb tarball and teacher. Run on purpose: `pytest -m real_data`."""

from collections import Counter

import numpy as np
import pytest
from tokenizers import Tokenizer

from helpers import REPO
from kd.data.splits import read_tarball
from kd.teacher.scoring import load_teacher, score
from kd.text import Encoder, teacher_tokenizer

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def reviews():
    return read_tarball(REPO / "data/raw/aclImdb_v1.tar.gz")


def test_tarball_has_the_documented_counts(reviews):
    assert {split: len(rows) for split, rows in reviews.items()} == {
        "train": 25000, "test": 25000, "unsup": 50000}
    for split in ("train", "test"):
        assert Counter(row["label"] for row in reviews[split]) == {0: 12500, 1: 12500}
        assert all((row["rating"] >= 7) == (row["label"] == 1) for row in reviews[split])
    assert all(row["text"] and "<br" not in row["text"] for rows in reviews.values()
               for row in rows)


def test_teacher_is_accurate_on_a_sample_of_real_reviews(reviews):
    model, tokenizer, _ = load_teacher(REPO / "models/teacher")
    sample = [reviews["test"][index] for index in
              np.random.default_rng(0).choice(25000, size=300, replace=False)]
    logits = score(model, tokenizer, [row["text"] for row in sample], max_len=256,
                   head_tokens=96, batch_size=64)
    accuracy = np.mean(logits.argmax(1) == np.array([row["label"] for row in sample]))
    assert accuracy > 0.88  # the card: 92.94% on all 25,000; a 300-review sample varies ~1.5pt


def test_fast_encoder_gives_the_ids_of_tokenizers_on_every_review(reviews):
    # The student's tokenizer is the teacher's word pieces cut to vocab.max_len; the teacher
    # reads the same pieces uncut (head+tail is cut after). Both must match `tokenizers`.
    texts = [row["text"] for rows in reviews.values() for row in rows]
    assert len(texts) == 100_000
    student = teacher_tokenizer(REPO / "models/teacher", max_len=4096)
    teacher = Tokenizer.from_file(str(REPO / "models/teacher/tokenizer.json"))
    teacher.post_processor = None
    for tokenizer in (student, teacher):
        encoder = Encoder(tokenizer)
        assert encoder.fast is not None  # nanotoken reads it: the fast path is what is checked
        for start in range(0, len(texts), 5000):
            part = texts[start:start + 5000]
            expected = [encoding.ids for encoding in tokenizer.encode_batch_fast(part)]
            got = encoder(part)
            differ = [start + row for row in range(len(part)) if got[row] != expected[row]]
            assert not differ, f"{len(differ)} review(s) differ, e.g. #{differ[0]}"
