"""The student's tokenizer (Hugging Face `tokenizers`): the teacher's word pieces, or words
learned from training text only; and `Encoder`, which turns many texts into ids fast.

It is saved as one `tokenizer.json` that carries its own normalisation, vocabulary and the
fixed `max_len` (as its truncation setting), so later stages and serving need nothing else.
This module imports neither torch nor the data loaders: a server without torch uses it.
"""

import functools
from pathlib import Path

import nanotoken
import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from kd.errors import PipelineError

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
PAD_ID = 0  # the first special token; TextCNN's embedding keeps it at zero


def build_tokenizer(texts, max_size: int, min_freq: int, max_len: int) -> Tokenizer:
    """Learn a word vocabulary from `texts`.

    Words are lower-cased, accents stripped, and punctuation split off (BERT's rules), so
    "Great!" gives "great" and "!"; only the `max_size - 2` most frequent words seen at least
    `min_freq` times are kept, the rest map to [UNK].

    Args:
        texts: an iterable of training reviews.
        max_size: vocabulary size, [PAD] and [UNK] included.
        min_freq: the fewest occurrences for a word to be kept.
        max_len: the most tokens a review is encoded to; the rest is cut.
    """
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(vocab_size=max_size, min_frequency=min_freq,
                                        special_tokens=[PAD_TOKEN, UNK_TOKEN], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.enable_truncation(max_length=max_len)
    return tokenizer


def teacher_tokenizer(teacher_path: str | Path, max_len: int) -> Tokenizer:
    """The teacher's own word-piece tokenizer, without [CLS]/[SEP], cut to `max_len`.

    With it the student's embedding rows line up with the teacher's, so they can start from
    the teacher's word-piece embeddings.

    Raises:
        PipelineError: the teacher folder has no `tokenizer.json` or no [PAD] at id 0.
    """
    path = Path(teacher_path) / "tokenizer.json"
    if not path.is_file():
        raise PipelineError(f"{path} not found: vocab.source = teacher needs the teacher's fast "
                            "tokenizer (run `dvc pull`, or use vocab.source = words)")
    tokenizer = Tokenizer.from_file(str(path))
    if tokenizer.token_to_id(PAD_TOKEN) != PAD_ID:
        raise PipelineError(f"{path} has no {PAD_TOKEN} at id {PAD_ID}; use vocab.source = words")
    tokenizer.post_processor = None  # a CNN has no use for [CLS]/[SEP]
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_len)
    return tokenizer


def make_tokenizer(vocab, teacher_path: str | Path, train_path: str | Path) -> Tokenizer:
    """The student's tokenizer for `vocab` (`kd.params.VocabParams`), as the `vocab` stage
    makes it: the teacher's word pieces, or words learned from the training split."""
    if vocab.source == "teacher":
        return teacher_tokenizer(teacher_path, max_len=vocab.max_len)
    from kd.data.splits import load_split  # here only: serving imports this module, never the data

    return build_tokenizer(load_split(train_path)["text"], max_size=vocab.max_size,
                           min_freq=vocab.min_freq, max_len=vocab.max_len)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer saved by the `vocab` stage.

    Raises:
        PipelineError: the file is missing, or has no truncation (max_len) or [PAD] at id 0.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found: run `dvc repro vocab` first")
    tokenizer = Tokenizer.from_file(str(path))
    if tokenizer.truncation is None or tokenizer.token_to_id(PAD_TOKEN) != PAD_ID:
        raise PipelineError(f"{path} was not made by the vocab stage (no max_len or no [PAD] "
                            f"at id {PAD_ID}); run `dvc repro vocab`")
    return tokenizer


def max_len_of(tokenizer: Tokenizer) -> int:
    """The fixed number of tokens a review is cut to."""
    return tokenizer.truncation["max_length"]


class Encoder:
    """Token ids of many texts at once: exactly what `tokenizer.encode_batch` gives, faster.

    nanotoken (WordPiece in Rust) reads the same tokenizer.json and gives the same ids, about
    20x faster than `tokenizers` on IMDb reviews here, where normalisation and pre-tokenization
    were most of the student's serving time; the `real_data` tests check every IMDb review. A
    tokenizer it does not implement (vocab.source = words: a word-level model) runs in
    `tokenizers` itself. The tokenizer's truncation (the student's max_len) is kept.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.max_len = (tokenizer.truncation or {}).get("max_length")
        try:
            self.fast = nanotoken.Tokenizer.from_json(tokenizer.to_str())
        except nanotoken.UnsupportedTokenizerError:
            self.fast = None

    def __call__(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, cut to max_len, without special tokens or padding."""
        if self.fast is None:
            # encode_batch_fast skips the character offsets, which a classifier never reads.
            return [encoding.ids for encoding in self.tokenizer.encode_batch_fast(list(texts))]
        return self.fast.encode_batch_list(list(texts), add_special_tokens=False,
                                           max_length=self.max_len)

    def ragged(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's ids one after another, and where each starts.

        Returns:
            (ids (T,) int64, offsets (N + 1,) int64): text i is ids[offsets[i]:offsets[i + 1]].
        """
        if self.fast is None:
            sequences = self(texts)
            offsets = np.cumsum([0] + [len(ids) for ids in sequences], dtype=np.int64)
            return np.fromiter((i for ids in sequences for i in ids), np.int64), offsets
        ragged = self.fast.encode_batch(list(texts), add_special_tokens=False,
                                        max_length=self.max_len)
        return ragged.ids.astype(np.int64), ragged.offsets.astype(np.int64)


@functools.lru_cache(maxsize=4)
def encoder_of(tokenizer: Tokenizer) -> Encoder:
    """The `Encoder` of a tokenizer, made once (reading a vocabulary takes a fraction of a
    second). Keyed by the object: a tokenizer is not changed after it is loaded."""
    return Encoder(tokenizer)


def encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, cut to the tokenizer's max_len, without padding."""
    return encoder_of(tokenizer)(texts)


def pad_batch(sequences: list[list[int]], min_len: int) -> np.ndarray:
    """Right-pad id lists with [PAD] to the longest one, and to at least `min_len`.

    A convolution needs at least as many positions as its kernel is wide, so `min_len` is the
    widest kernel: an empty or two-word review still gives every filter a value.

    Returns:
        int64 array (B, L).
    """
    width = max(min_len, max((len(ids) for ids in sequences), default=0))
    batch = np.full((len(sequences), width), PAD_ID, dtype=np.int64)
    for row, ids in enumerate(sequences):
        batch[row, :len(ids)] = ids
    return batch
