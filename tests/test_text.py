import pytest

from kd.errors import PipelineError
from kd.teacher import encode_head_tail, head_tail
from kd.text import PAD_ID, build_tokenizer, encode, load_tokenizer, max_len_of, pad_batch

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
