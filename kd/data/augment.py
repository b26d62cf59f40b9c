"""The augmented transfer set (Tang et al. 2019): noisy copies of training and unlabelled
reviews, for the teacher to score once, so the student sees more of the teacher's judgement.

A copy keeps a random window of its review (with `window_prob`; Tang et al.'s n-gram sampling,
sized for reviews of hundreds of words) and then replaces each word by [MASK] with `mask_prob`.
The sources are the training and unlabelled splits only: never a test or validation review.
"""

import numpy as np
import pyarrow as pa

MASK = "[MASK]"  # BERT-family tokenizers read it as their mask token

SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.int64()),
                    ("rating", pa.int64()), ("source_id", pa.string())])


def augment_text(text: str, rng: np.random.Generator, mask_prob: float, window_prob: float,
                 window_min: float) -> str:
    """One noisy copy of `text` (words are the space-separated pieces of the cleaned text)."""
    words = text.split(" ")
    if rng.random() < window_prob and len(words) > 1:
        size = int(rng.integers(max(1, round(window_min * len(words))), len(words) + 1))
        start = int(rng.integers(0, len(words) - size + 1))
        words = words[start:start + size]
    masked = rng.random(len(words)) < mask_prob
    return " ".join(MASK if hide else word for word, hide in zip(words, masked, strict=True))


def augment_reviews(sources: list[dict], size: int, seed: int, mask_prob: float,
                    window_prob: float, window_min: float) -> list[dict]:
    """`size` noisy copies of reviews drawn from `sources` (each at most once while there are
    reviews left, then again).

    Returns:
        Rows with id "augment/<n>", the copy's text, label -1 (the teacher labels it), rating 0,
        and the id of the review it was made from.
    """
    if size == 0 or not sources:
        return []
    rng = np.random.default_rng(seed)
    rounds = -(-size // len(sources))
    picks = np.concatenate([rng.permutation(len(sources)) for _ in range(rounds)])[:size]
    return [{"id": f"augment/{number}",
             "text": augment_text(sources[index]["text"], rng, mask_prob, window_prob,
                                  window_min),
             "label": -1, "rating": 0, "source_id": sources[index]["id"]}
            for number, index in enumerate(picks)]
