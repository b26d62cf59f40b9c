import math

import pytest
import torch

from kd.student.losses import class_distillation_loss, distillation_loss


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


# K > 2 classes (`class_distillation_loss`): references computed by hand with `math`.
STUDENT_K = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0]])  # (B=2, K=3)
LABELS_K = torch.tensor([0, 2])
TEACHER_K = torch.tensor([[1.0, 1.0, -2.0], [0.0, 2.0, 1.0]])  # (B=2, K=3)


def _softmax(logits: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(value / temperature) for value in logits]
    return [value / sum(exps) for value in exps]


def _kl(target: list[float], predicted: list[float]) -> float:
    return sum(p * math.log(p / q) for p, q in zip(target, predicted, strict=True))


def _ce(logits: list[float], label: int) -> float:
    return -math.log(_softmax(logits)[label])


def test_k_classes_cross_entropy_and_softened_kl_scaled_by_t_squared():
    temperature = 2.0
    student, teacher = STUDENT_K.tolist(), TEACHER_K.tolist()
    label_term = (_ce(student[0], 0) + _ce(student[1], 2)) / 2
    teacher_term = temperature ** 2 * sum(
        _kl(_softmax(t, temperature), _softmax(s, temperature))
        for s, t in zip(student, teacher, strict=True)) / 2
    loss = distillation_loss(STUDENT_K, LABELS_K, TEACHER_K, alpha=0.3, temperature=temperature)
    assert loss.item() == pytest.approx(0.3 * label_term + 0.7 * teacher_term, rel=1e-6)
    # Spelled out for the first review at T = 1: p_t = softmax(1, 1, -2), p_s = softmax(2, 0, -1).
    p_t = [math.e / (2 * math.e + math.e ** -2)] * 2 + [math.e ** -2 / (2 * math.e + math.e ** -2)]
    p_s = [math.e ** 2 / (math.e ** 2 + 1 + math.e ** -1), 1 / (math.e ** 2 + 1 + math.e ** -1),
           math.e ** -1 / (math.e ** 2 + 1 + math.e ** -1)]
    one = distillation_loss(STUDENT_K[:1], torch.tensor([-1]), TEACHER_K[:1], alpha=0.0)
    by_hand = sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))
    assert one.item() == pytest.approx(by_hand, rel=1e-6)


def test_k_classes_mse_on_logits_averages_over_reviews_and_classes():
    expected = ((2 - 1) ** 2 + (0 - 1) ** 2 + (-1 + 2) ** 2
                + (0.5 - 0) ** 2 + (1 - 2) ** 2 + (0 - 1) ** 2) / 6
    loss = distillation_loss(STUDENT_K, LABELS_K, TEACHER_K, alpha=0.0, temperature=4.0,
                             kd_loss="mse")
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_k_classes_unlabelled_reviews_only_feed_the_teacher_term():
    student = STUDENT_K.tolist()
    teacher_term = sum(_kl(_softmax(t), _softmax(s))
                       for s, t in zip(student, TEACHER_K.tolist(), strict=True)) / 2
    loss = distillation_loss(STUDENT_K, torch.tensor([-1, 2]), TEACHER_K, alpha=0.5)
    assert loss.item() == pytest.approx(0.5 * _ce(student[1], 2) + 0.5 * teacher_term, rel=1e-6)


def test_two_way_kl_has_the_binary_bce_terms_gradient():
    """For K = 2 the softened KL and the single-logit BCE differ by the teacher's entropy only:
    the student's gradient is the same (the reason one name, "bce", serves every K)."""
    margin_student = torch.tensor([0.7, -1.2], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.5], [0.0, -0.5]])
    binary = distillation_loss(margin_student, torch.tensor([-1, -1]), teacher, alpha=0.0,
                               temperature=2.0)
    binary.backward()
    two_way = torch.stack([torch.zeros(2), margin_student.detach()], dim=1).requires_grad_()
    kl = class_distillation_loss(two_way, torch.tensor([-1, -1]), teacher, alpha=0.0,
                                 temperature=2.0)
    kl.backward()
    # The two-way student (0, s) moves s as the binary one does; softmax is shift-invariant,
    # so the gradient on the other logit is its opposite.
    assert torch.allclose(two_way.grad[:, 1], margin_student.grad, atol=1e-6)
    assert torch.allclose(two_way.grad[:, 0], -margin_student.grad, atol=1e-6)


def test_k_classes_refuse_mismatched_shapes_and_unknown_losses():
    with pytest.raises(ValueError, match=r"student logits \(2, 3\) and teacher logits \(2, 2\)"):
        distillation_loss(STUDENT_K, LABELS_K, TEACHER_K[:, :2], alpha=0.5)
    with pytest.raises(ValueError, match="kd_loss"):
        distillation_loss(STUDENT_K, LABELS_K, TEACHER_K, alpha=0.5, kd_loss="kl")
