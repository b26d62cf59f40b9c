"""The distillation loss, kept apart from the training loop so it can be tested alone."""

import torch
import torch.nn.functional as F

from kd.params import KD_LOSSES  # the names live with the params: they need not import the loss


def teacher_margin(teacher_logits: torch.Tensor) -> torch.Tensor:
    """The teacher's positive-class log-odds: a 2-way softmax is the sigmoid of l_pos - l_neg.

    Args: teacher_logits (B, 2) as [negative, positive]. Returns: (B,).
    """
    return teacher_logits[:, 1] - teacher_logits[:, 0]


def distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                      teacher_logits: torch.Tensor, alpha: float, temperature: float = 1.0,
                      kd_loss: str = "bce") -> torch.Tensor:
    """L = alpha * L_labels + (1 - alpha) * L_teacher.

    With s the student's logit, y the label, t = teacher margin (see `teacher_margin`),
    sigma the sigmoid and T the temperature:

        L_labels  = BCE(sigma(s), y), averaged over the labelled reviews (y >= 0) only
        L_teacher = T^2 * BCE(sigma(s / T), sigma(t / T))       kd_loss = "bce" (Hinton et al.)
        L_teacher = (s - t)^2                                    kd_loss = "mse" (Tang et al.)

    The T^2 factor keeps the teacher term's gradient on the same scale whatever T is, so
    `alpha` keeps its meaning; at T = 1 the "bce" loss is plain BCE against the teacher's
    probability. MSE on logits ignores T (T^2 * ((s - t) / T)^2 = (s - t)^2).
    Unlabelled reviews (y = -1, the transfer set) contribute to the teacher term only.

    Args:
        student_logits: (B,) the student's logits.
        labels: (B,) 1 positive, 0 negative, -1 unlabelled.
        teacher_logits: (B, 2) the teacher's [negative, positive] logits.
        alpha: weight of the label term, in [0, 1].
        temperature: T > 0.
        kd_loss: "bce" or "mse".

    Returns:
        The scalar loss.

    K > 2 classes: `student_logits` (B, K) selects `class_distillation_loss`; a (B,) student
    keeps the single-logit loss above, unchanged.
    """
    if student_logits.dim() == 2:
        return class_distillation_loss(student_logits, labels, teacher_logits, alpha,
                                       temperature, kd_loss)
    margin = teacher_margin(teacher_logits)  # (B,)
    if kd_loss == "bce":
        soft_targets = torch.sigmoid(margin / temperature)
        teacher_term = temperature ** 2 * F.binary_cross_entropy_with_logits(
            student_logits / temperature, soft_targets)
    elif kd_loss == "mse":
        teacher_term = F.mse_loss(student_logits, margin)
    else:
        raise ValueError(f"kd_loss must be one of {KD_LOSSES}, got {kd_loss!r}")
    labelled = labels >= 0  # (B,)
    if labelled.any():
        label_term = F.binary_cross_entropy_with_logits(student_logits[labelled],
                                                        labels[labelled].float())
    else:
        label_term = student_logits.new_zeros(())
    return alpha * label_term + (1 - alpha) * teacher_term


def class_distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                            teacher_logits: torch.Tensor, alpha: float, temperature: float = 1.0,
                            kd_loss: str = "bce") -> torch.Tensor:
    """L = alpha * L_labels + (1 - alpha) * L_teacher, for K > 2 classes (one logit each).

    With s and t the student's and the teacher's K logits of a review, y its label, p_T(x) =
    softmax(x / T) and T the temperature:

        L_labels  = CE(s, y) = -log softmax(s)_y, averaged over the labelled reviews (y >= 0)
        L_teacher = T^2 * KL(p_T(t) || p_T(s)), averaged over the reviews   kd_loss = "bce"
        L_teacher = mean over reviews and classes of (s - t)^2               kd_loss = "mse"

    "bce" names the term on softened probabilities whatever K is: for K = 2 the KL above equals
    `distillation_loss`'s BCE term less the teacher's entropy (a constant), so the gradients
    are the same; Hinton et al.'s T^2 keeps the gradient's scale as T changes. Unlabelled
    reviews (y = -1) feed the teacher term only.

    Args:
        student_logits: (B, K) the student's logits.
        labels: (B,) in 0 .. K-1, or -1 unlabelled.
        teacher_logits: (B, K) the teacher's logits, in the data's label order.
        alpha: weight of the label term, in [0, 1].
        temperature: T > 0.
        kd_loss: "bce" (softened KL) or "mse" (on logits).

    Returns:
        The scalar loss.

    Raises:
        ValueError: the logits' shapes differ, or an unknown `kd_loss`.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same (B, K) shape")
    if kd_loss == "bce":
        teacher_term = temperature ** 2 * F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),  # (B, K)
            F.log_softmax(teacher_logits / temperature, dim=1),  # (B, K)
            log_target=True, reduction="batchmean")
    elif kd_loss == "mse":
        teacher_term = F.mse_loss(student_logits, teacher_logits)
    else:
        raise ValueError(f"kd_loss must be one of {KD_LOSSES}, got {kd_loss!r}")
    labelled = labels >= 0  # (B,)
    if labelled.any():
        label_term = F.cross_entropy(student_logits[labelled], labels[labelled].long())
    else:
        label_term = student_logits.new_zeros(())
    return alpha * label_term + (1 - alpha) * teacher_term
