"""The training loop: repeatable to the bit, resumable after an interruption, and the
adversarial perturbation."""

import hashlib

import numpy as np
import pytest
import torch

from kd.student.examples import Examples
from kd.student.inference import logit_accuracy
from kd.student.models import TextCNN, TextCNNConfig
from kd.student.train import FitConfig, adversarial_perturbation, fit, parameter_groups


def _examples(count: int, seed: int) -> Examples:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    # Label-dependent word pieces, so there is something to learn.
    input_ids = [list(rng.integers(2, 30, rng.integers(5, 25)) + 30 * label)
                 for label in labels]
    teacher = np.stack([-(labels * 4.0 - 2.0), labels * 4.0 - 2.0], axis=1).astype(np.float32)
    return Examples([f"r{index}" for index in range(count)], [list(map(int, ids))
                                                              for ids in input_ids],
                    labels.astype(np.int64), teacher)


def _train(epochs: int, state_path=None, stop_after: int | None = None,
           adversarial: float = 0.0) -> tuple[str, list[dict]]:
    torch.manual_seed(0)
    model = TextCNN(TextCNNConfig(vocab_size=60, embed_dim=8, num_filters=4, ngram_order=2,
                                  ngram_buckets=13))
    config = FitConfig(epochs=epochs, batch_size=8, lr=0.01, alpha=0.5, seed=1,
                       precision="fp32", adversarial=adversarial)

    def on_epoch(epoch, row):
        if stop_after is not None and epoch == stop_after:
            raise KeyboardInterrupt  # killed before this epoch's state is saved

    history = fit(model, _examples(64, 0), _examples(16, 1), config, on_epoch, state_path)
    digest = hashlib.sha256(b"".join(tensor.numpy().tobytes()
                                     for tensor in model.state_dict().values())).hexdigest()
    return digest, history


def test_same_seed_same_bytes():
    assert _train(2) == _train(2)


def test_an_interrupted_training_resumes_to_the_same_bytes(tmp_path):
    state = tmp_path / "state.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _train(3, state, stop_after=3)  # killed in epoch 3: epochs 1-2 are in the state
    digest, history = _train(3, state)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert (digest, history) == _train(3)


def test_training_learns_and_adversarial_training_runs():
    _, history = _train(3, adversarial=0.5)
    assert history[-1]["val_accuracy"] > 0.8
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_adversarial_perturbation_has_the_asked_size_per_word_piece():
    embedded = torch.randn(2, 5, 3, requires_grad=True)
    input_ids = torch.tensor([[4, 5, 6, 7, 0], [4, 0, 0, 0, 0]])
    loss = (embedded * torch.arange(3.0)).sum()
    noise = adversarial_perturbation(loss, embedded, input_ids, epsilon=0.5)
    lengths = torch.tensor([4.0, 1.0])
    assert torch.allclose(noise.flatten(1).norm(dim=1), 0.5 * lengths.sqrt())
    # It points up the gradient: every word vector moves along (0, 1, 2).
    direction = torch.tensor([0.0, 1.0, 2.0]) / 5 ** 0.5
    assert torch.allclose(noise[0, 0] / noise[0, 0].norm(), direction, atol=1e-6)


def test_the_ngram_branch_gets_its_own_learning_rate():
    model = TextCNN(TextCNNConfig(vocab_size=60, embed_dim=8, num_filters=4, ngram_order=2,
                                  ngram_buckets=13))
    assert len(parameter_groups(model, 0.0)) == 1  # 0: one group at train.lr, as before
    rest, ngrams = parameter_groups(model, 0.05)
    assert ngrams["lr"] == 0.05 and "lr" not in rest
    assert [p.shape for p in ngrams["params"]] == [model.ngrams.weights.weight.shape]
    every = {id(p) for p in model.parameters()}
    assert {id(p) for p in rest["params"]} | {id(p) for p in ngrams["params"]} == every
    assert len(rest["params"]) + 1 == len(every)
    without = TextCNN(TextCNNConfig(vocab_size=60, embed_dim=8, num_filters=4))
    assert len(parameter_groups(without, 0.05)) == 1  # no branch, nothing to split


def test_logit_accuracy_counts_the_sign_and_a_zero_logit_as_negative():
    logits = np.array([2.0, -1.0, 0.0, 0.0, 3.0], dtype=np.float32)
    labels = np.array([1, 0, 0, 1, 0])
    # right, right, right (0 is negative), wrong (0 is not positive), wrong
    assert logit_accuracy(logits, labels) == pytest.approx(3 / 5)


# K > 2 labels: predictions, accuracy and calibration on (N, K) logits.
def test_k_label_logit_accuracy_takes_the_largest_logit():
    logits = np.array([[2.0, 0.1, -1.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0], [0.0, 5.0, 4.0]])
    labels = np.array([0, 2, 1, 2])  # right, right, wrong (the tie goes to 0), wrong
    assert logit_accuracy(logits, labels) == 0.5


def test_k_label_temperature_undoes_a_scale_and_matches_the_binary_fit():
    from kd.student.train import fit_temperature

    rng = np.random.default_rng(0)
    true_logits = rng.normal(scale=2.0, size=(4000, 4))  # (N, K)
    probs = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(4, p=row) for row in probs])  # drawn from softmax(logits)
    assert fit_temperature(3.0 * true_logits, labels) == pytest.approx(3.0, rel=0.05)
    assert fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.05)
    # Two labels as two logits (0, s): softmax((0, s) / T) = sigmoid(s / T), the same fit.
    margins = rng.normal(scale=3.0, size=500)
    binary = (rng.random(500) < 1 / (1 + np.exp(-margins / 2))).astype(int)
    two_way = np.stack([np.zeros(500), margins], axis=1)
    assert fit_temperature(two_way, binary) == pytest.approx(fit_temperature(margins, binary),
                                                           rel=1e-4)


def test_k_label_predict_logits_gives_k_per_review_in_order():
    from kd.student.inference import predict_logits
    from kd.student.models import build_model

    torch.manual_seed(0)
    model = build_model("textcnn", {"vocab_size": 30, "embed_dim": 6, "num_filters": 3,
                                    "kernel_sizes": (2,), "num_labels": 3}).eval()
    reviews = [[5, 6, 7, 8, 9], [3, 4], [10, 11, 12]]
    logits = predict_logits(model, reviews, batch_size=2)  # sorted by length, two batches
    assert logits.shape == (3, 3)
    for row, review in enumerate(reviews):
        with torch.no_grad():
            alone = model(torch.tensor([review])).numpy()[0]
        assert np.allclose(logits[row], alone, atol=1e-6)
