import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from kd.errors import PipelineError
from kd.serving.runtime import length_groups
from kd.teacher.scoring import encode_head_tail, head_tail
from kd.text import (
    PAD_ID,
    Encoder,
    build_tokenizer,
    encode,
    load_tokenizer,
    max_len_of,
    pad_batch,
)

TRAIN = ["A great movie!", "A boring movie.", "Great, GREAT acting", "boring plot <br /> rare"]


def test_tokenizer_learns_words_from_training_text_only(tmp_path):
    tokenizer = build_tokenizer(TRAIN, max_size=100, min_freq=2, max_len=8)
    vocab = tokenizer.get_vocab()
    assert vocab["[PAD]"] == PAD_ID and "[UNK]" in vocab
    assert {"great", "boring", "movie", "a"} <= set(vocab)
    assert "rare" not in vocab and "acting" not in vocab  # seen once < min_freq
    tokens = tokenizer.encode("Great!! Unseen words").tokens
    assert tokens == ["great", "[UNK]", "[UNK]", "[UNK]", "[UNK]"]  # "!" seen once in TRAIN

    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert max_len_of(loaded) == 8
    assert len(encode(loaded, ["movie " * 20])[0]) == 8


def test_vocabulary_size_limit_keeps_the_most_frequent_words():
    tokenizer = build_tokenizer(TRAIN, max_size=4, min_freq=1, max_len=8)
    assert set(tokenizer.get_vocab()) == {"[PAD]", "[UNK]", "great", "a"}


def test_missing_tokenizer_says_which_stage(tmp_path):
    with pytest.raises(PipelineError, match="dvc repro vocab"):
        load_tokenizer(tmp_path / "tokenizer.json")


def test_pad_batch_pads_to_the_longest_and_to_the_widest_kernel():
    batch = pad_batch([[5, 6], [7]], min_len=3)
    assert batch.tolist() == [[5, 6, 0], [7, 0, 0]]
    assert pad_batch([list(range(1, 6))], min_len=3).shape == (1, 5)


def test_head_tail_keeps_start_and_end():
    ids = list(range(10))
    assert head_tail(ids, head=3, budget=6) == [0, 1, 2, 7, 8, 9]
    assert head_tail(ids, head=0, budget=4) == [6, 7, 8, 9]
    assert head_tail(ids, head=4, budget=4) == [0, 1, 2, 3]
    assert head_tail(ids, head=3, budget=10) == ids


def test_teacher_encoding_adds_cls_and_sep_around_head_and_tail(tiny_teacher):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher, local_files_only=True)
    words = "great awful " * 10 + "boring"  # 21 words, one word piece each
    [ids] = encode_head_tail(tokenizer, [words], max_len=8, head_tokens=2)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["[CLS]", "great", "awful", "awful", "great", "awful", "boring", "[SEP]"]


# What a BERT tokenizer meets in user text: accents, CJK (one piece per character), emoji,
# control characters (dropped), odd whitespace, a word over 100 characters ([UNK]).
HARD_TEXTS = [
    "Café naïve RÉSUMÉ, ÅNGSTRÖM İstanbul ﬁne ǅ", "東京タワー is 高い! 한국어", "emoji 😀👍🏽 fun",
    "ctrl\x00a\x07b\x0bc\x0cd\x1fe\x7ff\ufffdg", "tab\tnew\nline\rcr\u00a0nbsp\u2028x\u3000y",
    "zero\u200bwidth\u200djoin\ufeffbom", "com\u0301bining \u0301", "x" + "é" * 120,
    "a" * 300 + " word", "mixed—dashes…and “quotes” <br /><br />", "", "   ", "unaffable!!",
]


def _word_pieces() -> Tokenizer:
    """A small BERT-style WordPiece tokenizer (the teacher's kind), built in memory."""
    pieces = ["[PAD]", "[UNK]", "a", "b", "c", "d", "e", "f", "g", "x", "y", "cafe", "naive",
              "resume", "un", "##aff", "##able", "!", "word", "emoji", "fun", "tab", "new",
              "line", "cr", "東", "京", "高", "is", "##s", ",", ".", "-", "—", "<", ">", "/"]
    tokenizer = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(pieces)},
                                           unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.enable_truncation(max_length=12)
    return tokenizer


def test_fast_encoder_gives_the_ids_of_tokenizers():
    tokenizer = _word_pieces()
    encoder = Encoder(tokenizer)
    assert encoder.fast is not None  # the fast path is what this checks
    expected = [encoding.ids for encoding in tokenizer.encode_batch(HARD_TEXTS)]
    assert encoder(HARD_TEXTS) == expected
    assert max(len(ids) for ids in expected) == 12  # the truncation is kept
    ids, offsets = encoder.ragged(HARD_TEXTS)
    assert [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(HARD_TEXTS))] == expected


def test_encoder_runs_a_word_vocabulary_in_tokenizers():
    tokenizer = build_tokenizer(TRAIN, max_size=100, min_freq=1, max_len=8)
    encoder = Encoder(tokenizer)
    assert encoder.fast is None  # nanotoken implements WordPiece only
    expected = [encoding.ids for encoding in tokenizer.encode_batch(TRAIN + HARD_TEXTS)]
    assert encoder(TRAIN + HARD_TEXTS) == expected
    ids, offsets = encoder.ragged(TRAIN)
    assert ids.dtype == np.int64 and offsets.tolist()[-1] == sum(map(len, expected[:4]))


def test_length_groups_pad_each_group_to_its_own_longest():
    sequences = [[1] * n for n in (5, 1, 9, 2, 3, 7, 4, 8, 6, 0)]
    ids = np.array([i for seq in sequences for i in seq], dtype=np.int64)
    offsets = np.cumsum([0] + [len(seq) for seq in sequences])
    groups = length_groups(ids, offsets, min_len=2, length_multiple=4)
    assert [rows.tolist() for rows, _ in groups] == [[9, 1, 3, 4, 6, 0, 8, 5], [7, 2]]
    assert [batch.shape for _, batch in groups] == [(8, 8), (2, 12)]
    for rows, batch in groups:
        for row, padded in zip(rows, batch, strict=True):
            length = len(sequences[row])
            assert padded.tolist() == sequences[row] + [PAD_ID] * (len(padded) - length)
