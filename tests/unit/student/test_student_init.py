"""Students seeded from the teacher: its tokenizer and embeddings, and the transformer cut
from its layers."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kd.errors import PipelineError
from kd.params import parse_params
from kd.student.models import project_embeddings, read_word_embeddings
from kd.student.registry import build_student
from kd.teacher.scoring import encode_head_tail
from kd.text import PAD_ID, encode, max_len_of, pad_batch, teacher_tokenizer


class _Vocab:
    """Stands in for a tokenizer of a given size."""

    def __init__(self, size: int):
        self.size = size

    def get_vocab_size(self) -> int:
        return self.size


def _params(tiny_teacher, **student):
    return parse_params({
        "vocab": {"source": "teacher", "max_len": 12},
        "teacher": {"path": str(tiny_teacher)},
        "student": {"embed_dim": 16, "num_filters": 4, "init_embeddings": "teacher", **student},
    })


def test_teacher_tokenizer_drops_cls_sep_and_cuts_to_max_len(tiny_teacher):
    tokenizer = teacher_tokenizer(tiny_teacher, max_len=5)
    assert tokenizer.encode("great movie").tokens == ["great", "movie"]
    assert len(tokenizer.encode("great " * 20).ids) == 5 == max_len_of(tokenizer)
    assert tokenizer.token_to_id("[PAD]") == PAD_ID


def test_student_starts_from_the_teacher_word_embeddings(tiny_teacher):
    teacher_embeddings = read_word_embeddings(tiny_teacher)  # (V, 16)
    model = build_student(_params(tiny_teacher), _Vocab(teacher_embeddings.shape[0]))
    assert torch.equal(model.embedding.weight[1:], teacher_embeddings[1:])
    assert torch.all(model.embedding.weight[PAD_ID] == 0)


def test_smaller_student_starts_from_the_teachers_principal_directions(tiny_teacher):
    teacher_embeddings = read_word_embeddings(tiny_teacher)  # (V, 16)
    model = build_student(_params(tiny_teacher, embed_dim=8), _Vocab(teacher_embeddings.shape[0]))
    assert torch.equal(model.embedding.weight[1:],
                       project_embeddings(teacher_embeddings, 8)[1:])
    assert torch.all(model.embedding.weight[PAD_ID] == 0)


def test_projection_keeps_distances_of_embeddings_that_span_few_directions():
    generator = torch.Generator().manual_seed(0)
    # 200 vectors in 32 dimensions that vary along 5 directions only (plus an offset).
    embeddings = (torch.randn(200, 5, generator=generator) @ torch.randn(5, 32, generator=generator)
                  + torch.randn(32, generator=generator))
    projected = project_embeddings(embeddings, 5)  # (200, 5)
    assert projected.shape == (200, 5)
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.allclose(torch.cdist(projected, projected, compute_mode=exact),
                          torch.cdist(embeddings, embeddings, compute_mode=exact), atol=1e-3)
    variances = projected.var(dim=0)
    assert torch.all(variances[:-1] >= variances[1:])  # leading direction first
    assert torch.equal(project_embeddings(embeddings, 32), embeddings)


def test_embedding_size_mismatch_names_the_fix(tiny_teacher):
    vocab_size = read_word_embeddings(tiny_teacher).shape[0]
    with pytest.raises(PipelineError, match="student.embed_dim <= 16"):
        build_student(_params(tiny_teacher, embed_dim=32), _Vocab(vocab_size))
    with pytest.raises(PipelineError, match="set vocab.source = teacher"):
        build_student(_params(tiny_teacher), _Vocab(vocab_size + 1))


def test_teacher_embeddings_need_the_teacher_vocabulary():
    with pytest.raises(ValueError, match="set vocab.source = teacher"):
        parse_params({"vocab": {"source": "words"}, "student": {"init_embeddings": "teacher"}})


def _transformer(tiny_teacher, **student):
    return parse_params({"teacher": {"path": str(tiny_teacher)}, "student": {
        "arch": "transformer", "layers": 1, "max_len": 12, "head_tokens": 4, **student}})


def test_transformer_with_every_teacher_layer_scores_like_the_teacher(tiny_teacher):
    """Cut to all of the teacher's layers, the student is the teacher: same head+tail
    truncation, same [CLS]/[SEP], its classifier folded into one logit."""
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_teacher).eval()
    teacher_tokens = AutoTokenizer.from_pretrained(tiny_teacher)
    tokenizer = teacher_tokenizer(tiny_teacher, max_len=40)
    student = build_student(_transformer(tiny_teacher), tokenizer).eval()
    texts = ["great movie ! the plot was dull and boring and the actor was awful", "dull",
             "a wonderful , moving film"]
    with torch.no_grad():
        margins = [teacher(input_ids=torch.tensor([ids])).logits[0]
                   for ids in encode_head_tail(teacher_tokens, texts, max_len=12, head_tokens=4)]
        expected = torch.stack([logits[1] - logits[0] for logits in margins])
        got = student(torch.from_numpy(pad_batch(encode(tokenizer, texts), 1)))
    assert torch.allclose(got, expected, atol=1e-5)


def test_transformer_cannot_have_more_layers_than_the_teacher(tiny_teacher):
    tokenizer = teacher_tokenizer(tiny_teacher, max_len=40)
    with pytest.raises(PipelineError, match="`student.layers` = 2 is not allowed; the teacher "
                                            "has 1 layers"):
        build_student(_transformer(tiny_teacher, layers=2), tokenizer)


def test_transformer_is_cut_from_the_teacher():
    with pytest.raises(ValueError, match="`student.init_embeddings` = 'random'"):
        parse_params({"student": {"arch": "transformer", "init_embeddings": "random"}})


def test_k_label_transformer_with_every_teacher_layer_scores_like_a_k_label_teacher(tmp_path):
    """A 3-label teacher's classifier becomes the student's three logits, row for row (or in
    the order `rows` gives): cut to all its layers, the student gives the teacher's logits."""
    from transformers import AutoConfig

    from helpers import write_tiny_teacher
    from kd.student.models import (
        TransformerMulti,
        build_model,
        read_teacher_tensors,
        seed_transformer,
        teacher_layers,
    )
    from kd.student.registry import _BERT_FIELDS

    path = write_tiny_teacher(tmp_path / "teacher3", num_labels=3)
    config = AutoConfig.from_pretrained(path)
    teacher = AutoModelForSequenceClassification.from_pretrained(path).eval()
    teacher_tokens = AutoTokenizer.from_pretrained(path)
    tokenizer = teacher_tokenizer(path, max_len=40)
    bert = {key: value for key, value in config.to_dict().items() if key in _BERT_FIELDS}
    student = build_model("transformer", {
        "bert": bert, "max_len": 12, "head_tokens": 4, "num_labels": 3,
        "cls_id": tokenizer.token_to_id("[CLS]"), "sep_id": tokenizer.token_to_id("[SEP]")})
    assert type(student) is TransformerMulti
    total = config.num_hidden_layers
    seed_transformer(student, read_teacher_tensors(path), teacher_layers(total, total))
    texts = ["great movie ! the plot was dull and boring and the actor was awful", "dull"]
    with torch.no_grad():
        expected = torch.stack([teacher(input_ids=torch.tensor([ids])).logits[0] for ids in
                                encode_head_tail(teacher_tokens, texts, max_len=12,
                                                 head_tokens=4)])  # (2, 3)
        got = student.eval()(torch.from_numpy(pad_batch(encode(tokenizer, texts), 1)))
    assert got.shape == (2, 3) and torch.allclose(got, expected, atol=1e-5)
    seed_transformer(student, read_teacher_tensors(path), teacher_layers(total, total),
                     rows=[2, 0, 1])  # the data's label 0 is the teacher's row 2, and so on
    with torch.no_grad():
        reordered = student(torch.from_numpy(pad_batch(encode(tokenizer, texts), 1)))
    assert torch.allclose(reordered, expected[:, [2, 0, 1]], atol=1e-5)
