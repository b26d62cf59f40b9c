"""The student's word-piece option: the teacher's tokenizer and embeddings."""

import pytest
import torch

from distill import build_student
from kd.errors import PipelineError
from kd.model import project_embeddings, read_word_embeddings
from kd.params import parse_params
from kd.text import PAD_ID, max_len_of, teacher_tokenizer


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
    model = build_student(_params(tiny_teacher), vocab_size=teacher_embeddings.shape[0])
    assert torch.equal(model.embedding.weight[1:], teacher_embeddings[1:])
    assert torch.all(model.embedding.weight[PAD_ID] == 0)


def test_smaller_student_starts_from_the_teachers_principal_directions(tiny_teacher):
    teacher_embeddings = read_word_embeddings(tiny_teacher)  # (V, 16)
    model = build_student(_params(tiny_teacher, embed_dim=8),
                          vocab_size=teacher_embeddings.shape[0])
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
        build_student(_params(tiny_teacher, embed_dim=32), vocab_size=vocab_size)
    with pytest.raises(PipelineError, match="set vocab.source = teacher"):
        build_student(_params(tiny_teacher), vocab_size=vocab_size + 1)


def test_teacher_embeddings_need_the_teacher_vocabulary():
    with pytest.raises(ValueError, match="set vocab.source = teacher"):
        parse_params({"student": {"init_embeddings": "teacher"}})
