"""The augmented transfer set: noisy copies of train + unsup reviews, seeded."""

import numpy as np

from kd.data.augment import MASK, augment_reviews, augment_text

SOURCES = [{"id": f"train/pos/{index}", "text": " ".join(f"w{index}_{word}" for word in range(40))}
           for index in range(5)]


def test_copies_are_seeded_and_name_their_source():
    first = augment_reviews(SOURCES, 12, seed=1, mask_prob=0.1, window_prob=0.25,
                            window_min=0.3)
    assert first == augment_reviews(SOURCES, 12, seed=1, mask_prob=0.1, window_prob=0.25,
                                    window_min=0.3)
    assert first != augment_reviews(SOURCES, 12, seed=2, mask_prob=0.1, window_prob=0.25,
                                    window_min=0.3)
    assert [row["id"] for row in first] == [f"augment/{index}" for index in range(12)]
    assert all(row["label"] == -1 and row["rating"] == 0 for row in first)
    # Every source once before any twice: 12 copies of 5 reviews -> counts 3, 3, 2, 2, 2.
    counts = sorted(sum(row["source_id"] == source["id"] for row in first) for source in SOURCES)
    assert counts == [2, 2, 2, 3, 3]
    for row in first:  # a copy only holds words of its own source (or masks)
        number = row["source_id"].split("/")[-1]
        assert all(word == MASK or word.startswith(f"w{number}_")
                   for word in row["text"].split(" "))


def test_masking_rate_and_windows():
    rng = np.random.default_rng(0)
    text = " ".join(str(word) for word in range(1000))
    masked = augment_text(text, rng, mask_prob=0.1, window_prob=0.0, window_min=0.3).split(" ")
    assert len(masked) == 1000
    assert 0.07 < masked.count(MASK) / 1000 < 0.13
    kept = [word for word, original in zip(masked, range(1000), strict=True)
            if word != MASK]
    assert all(word == str(original) for word, original in zip(masked, range(1000), strict=True)
               if word != MASK) and kept
    for _ in range(20):
        window = augment_text(text, rng, mask_prob=0.0, window_prob=1.0,
                              window_min=0.3).split(" ")
        assert 300 <= len(window) <= 1000
        start = int(window[0])
        assert window == [str(word) for word in range(start, start + len(window))]


def test_no_copies_when_size_is_zero():
    assert augment_reviews(SOURCES, 0, seed=1, mask_prob=0.1, window_prob=0.25,
                           window_min=0.3) == []
