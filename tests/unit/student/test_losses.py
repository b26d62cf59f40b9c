import math

import pytest
import torch

from kd.student.losses import distillation_loss


def _bce(probability: float, target: float) -> float:
    return -(target * math.log(probability) + (1 - target) * math.log(1 - probability))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


STUDENT = torch.tensor([2.0, -1.0])
LABELS = torch.tensor([1, 0])
TEACHER = torch.tensor([[-1.0, 0.5], [0.2, -0.3]])  # margins 1.5 and -0.5


def test_temperature_one_is_bce_against_labels_and_teacher_probability():
    label_term = (_bce(_sigmoid(2.0), 1) + _bce(_sigmoid(-1.0), 0)) / 2
    teacher_term = (_bce(_sigmoid(2.0), _sigmoid(1.5)) + _bce(_sigmoid(-1.0), _sigmoid(-0.5))) / 2
    loss = distillation_loss(STUDENT, LABELS, TEACHER, alpha=0.3)
    assert loss.item() == pytest.approx(0.3 * label_term + 0.7 * teacher_term, rel=1e-6)


def test_temperature_softens_both_sides_and_scales_by_its_square():
    temperature = 2.0
    teacher_term = temperature ** 2 * (
        _bce(_sigmoid(1.0), _sigmoid(0.75)) + _bce(_sigmoid(-0.5), _sigmoid(-0.25))) / 2
    loss = distillation_loss(STUDENT, LABELS, TEACHER, alpha=0.0, temperature=temperature)
    assert loss.item() == pytest.approx(teacher_term, rel=1e-6)


def test_mse_on_logits_ignores_temperature():
    expected = ((2.0 - 1.5) ** 2 + (-1.0 + 0.5) ** 2) / 2
    for temperature in (1.0, 4.0):
        loss = distillation_loss(STUDENT, LABELS, TEACHER, alpha=0.0, temperature=temperature,
                                 kd_loss="mse")
        assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_alpha_one_is_the_label_loss_alone():
    label_term = (_bce(_sigmoid(2.0), 1) + _bce(_sigmoid(-1.0), 0)) / 2
    loss = distillation_loss(STUDENT, LABELS, TEACHER, alpha=1.0, temperature=3.0)
    assert loss.item() == pytest.approx(label_term, rel=1e-6)


def test_unlabelled_reviews_only_feed_the_teacher_term():
    labels = torch.tensor([1, -1])
    label_term = _bce(_sigmoid(2.0), 1)
    teacher_term = (_bce(_sigmoid(2.0), _sigmoid(1.5)) + _bce(_sigmoid(-1.0), _sigmoid(-0.5))) / 2
    loss = distillation_loss(STUDENT, labels, TEACHER, alpha=0.5)
    assert loss.item() == pytest.approx(0.5 * label_term + 0.5 * teacher_term, rel=1e-6)
    all_unlabelled = distillation_loss(STUDENT, torch.tensor([-1, -1]), TEACHER, alpha=0.5)
    assert all_unlabelled.item() == pytest.approx(0.5 * teacher_term, rel=1e-6)


def test_unknown_kd_loss_is_refused():
    with pytest.raises(ValueError, match="kd_loss"):
        distillation_loss(STUDENT, LABELS, TEACHER, alpha=0.5, kd_loss="kl")
