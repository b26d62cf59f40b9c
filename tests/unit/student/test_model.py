import json

import pytest
import torch
from safetensors import safe_open

from kd.student.models import (
    MULTI_LABEL,
    BiLSTM,
    BiLSTMConfig,
    Ensemble,
    TextCNN,
    TextCNNConfig,
    arch_of,
    build_model,
    count_parameters,
    load_checkpoint,
    safetensors_parameters,
    save_checkpoint,
    teacher_layers,
)


def test_forward_gives_one_logit_per_review():
    model = TextCNN(TextCNNConfig(vocab_size=50, embed_dim=8, num_filters=4)).eval()
    logits = model(torch.randint(0, 50, (3, 11)))
    assert logits.shape == (3,)
    assert model(torch.randint(0, 50, (2, 5))).shape == (2,)  # as short as the widest kernel


def test_parameter_count_matches_kim_architecture():
    config = TextCNNConfig(vocab_size=1000, embed_dim=300, num_filters=100, kernel_sizes=(3, 4, 5))
    expected = 1000 * 300 + sum(300 * 100 * width + 100 for width in (3, 4, 5)) + 300 + 1
    assert count_parameters(TextCNN(config)) == expected


def test_padding_embedding_is_zero_and_stays_out_of_gradients():
    model = TextCNN(TextCNNConfig(vocab_size=20, embed_dim=4, num_filters=2))
    assert torch.all(model.embedding.weight[0] == 0)
    model(torch.tensor([[0, 0, 3, 4, 5]])).sum().backward()
    assert torch.all(model.embedding.weight.grad[0] == 0)


def test_checkpoint_round_trip_keeps_config_weights_and_meta(tmp_path):
    model = TextCNN(TextCNNConfig(vocab_size=30, embed_dim=6, num_filters=3, kernel_sizes=(2, 3)))
    model.logit_scale.fill_(0.5)  # a calibrated student
    save_checkpoint(model, tmp_path / "student.safetensors", {"teacher_sha256": "abc"})
    loaded, meta = load_checkpoint(tmp_path / "student.safetensors")
    assert meta == {"teacher_sha256": "abc"}
    assert loaded.config == model.config
    input_ids = torch.randint(0, 30, (4, 7))
    assert torch.allclose(loaded(input_ids), model.eval()(input_ids))
    assert loaded.logit_scale.item() == 0.5
    # The file holds every parameter and the one-value logit_scale buffer.
    assert safetensors_parameters(tmp_path / "student.safetensors") == count_parameters(model) + 1


def test_score_does_not_depend_on_padding():
    torch.manual_seed(0)
    model = TextCNN(TextCNNConfig(vocab_size=50, embed_dim=8, num_filters=6)).eval()
    review = torch.randint(1, 50, (1, 9))
    alone = model(review)
    for extra in (1, 3, 20):
        padded = torch.cat([review, torch.zeros((1, extra), dtype=torch.long)], dim=1)
        assert torch.allclose(model(padded), alone, atol=1e-6)
    shorter_than_kernels = torch.tensor([[7, 8, 0, 0, 0]])  # no window fits: features are 0
    assert torch.allclose(model(shorter_than_kernels), model.output.bias)


def test_ngram_branch_is_a_normalised_bag_of_hashed_ngrams():
    config = TextCNNConfig(vocab_size=10, embed_dim=4, num_filters=2, kernel_sizes=(2,),
                           ngram_order=2, ngram_buckets=7)
    model = TextCNN(config).eval()
    assert torch.all(model.ngrams.weights.weight == 0)  # adds nothing until trained
    with torch.no_grad():
        model.ngrams.weights.weight.copy_(torch.arange(17, dtype=torch.float).unsqueeze(1))
    review = torch.tensor([[3, 4, 5, 0, 0]])  # 3 word pieces, 2 bigrams, then padding
    # unigram rows are the ids; bigram (a, b) goes to row 10 + (a * 10 + b) % 7.
    rows = [3, 4, 5, 10 + 34 % 7, 10 + 45 % 7]
    expected = sum(rows) / 5 ** 0.5
    assert model.ngrams(review).item() == pytest.approx(expected)
    cnn_only = model.output(torch.cat([(conv(model.embed(review).transpose(1, 2)).relu()
                                        * torch.tensor([1, 1, 0, 0.0])).amax(2)
                                       for conv in model.convs], 1)).squeeze(1)
    assert model(review).item() == pytest.approx((cnn_only + expected).item(), rel=1e-5)
    assert torch.allclose(model(review[:, :3]), model(review))  # padding changes nothing


def test_ngram_only_student_is_a_bias_plus_the_ngram_branch(tmp_path):
    model = TextCNN(TextCNNConfig(vocab_size=10, embed_dim=4, kernel_sizes=(), ngram_order=2,
                                  ngram_buckets=7)).eval()
    assert model.embedding.weight.shape == (10, 0)  # no convolution, no word vectors
    assert count_parameters(model) == 10 + 7 + 1  # the n-gram rows and the bias
    with torch.no_grad():
        model.ngrams.weights.weight.normal_()
        model.output.bias.fill_(0.25)
    review = torch.tensor([[3, 4, 5, 0, 0]])
    assert model(review).item() == pytest.approx(0.25 + model.ngrams(review).item())
    assert torch.allclose(torch.jit.script(model)(review), model(review))
    save_checkpoint(model, tmp_path / "ngrams.safetensors", {})
    assert torch.equal(load_checkpoint(tmp_path / "ngrams.safetensors")[0](review), model(review))


def test_bilstm_score_does_not_depend_on_padding_and_reads_both_ways():
    torch.manual_seed(0)
    model = BiLSTM(BiLSTMConfig(vocab_size=30, embed_dim=6, hidden_size=5)).eval()
    review = torch.randint(1, 30, (1, 8))
    alone = model(review)
    for extra in (1, 4):
        padded = torch.cat([review, torch.zeros((1, extra), dtype=torch.long)], dim=1)
        assert torch.allclose(model(padded), alone, atol=1e-6)
    # The backward LSTM reads the review reversed: reversing the review swaps the two
    # directions' roles, so with the two LSTMs' weights swapped the score is the same.
    swapped = BiLSTM(model.config).eval()
    state = model.state_dict()
    state = {name.replace("forward_lstm", "tmp").replace("backward_lstm", "forward_lstm")
             .replace("tmp", "backward_lstm"): tensor for name, tensor in state.items()}
    swapped.load_state_dict(state)
    hidden = model.config.hidden_size
    with torch.no_grad():  # and the pooled halves swapped at the hidden layer's input
        swapped.hidden.weight.copy_(torch.cat([model.hidden.weight[:, hidden:],
                                               model.hidden.weight[:, :hidden]], dim=1))
    assert torch.allclose(swapped(review.flip(1)), alone, atol=1e-5)


@pytest.mark.parametrize("arch", ["textcnn", "bilstm"])
def test_checkpoint_round_trip_for_every_arch(tmp_path, arch):
    config = {"vocab_size": 40, "embed_dim": 6}
    if arch == "textcnn":
        config.update(ngram_order=3, ngram_buckets=11)
    model = build_model(arch, config)
    save_checkpoint(model, tmp_path / "student.safetensors", {})
    loaded, _ = load_checkpoint(tmp_path / "student.safetensors")
    assert type(loaded) is type(model) and loaded.config == model.config
    input_ids = torch.randint(1, 40, (3, 9))
    assert torch.equal(loaded(input_ids), model.eval()(input_ids))


def test_teacher_layers_are_spread_from_the_first():
    assert teacher_layers(6, 3) == [0, 2, 4]  # DistilBERT's choice
    assert teacher_layers(6, 2) == [0, 3]
    assert teacher_layers(6, 6) == list(range(6))


def test_an_ensemble_serves_its_members_mean_logit_and_round_trips(tmp_path):
    torch.manual_seed(0)
    members = [TextCNN(TextCNNConfig(vocab_size=30, embed_dim=6, num_filters=3)).eval()
               for _ in range(3)]
    ensemble = Ensemble(members).eval()
    ensemble.logit_scale.fill_(0.5)  # the ensemble's own calibration, after the mean
    input_ids = torch.randint(1, 30, (4, 8))
    expected = (members[0](input_ids) + members[1](input_ids) + members[2](input_ids)) / 3 * 0.5
    assert torch.allclose(ensemble(input_ids), expected, atol=1e-6)
    assert arch_of(ensemble) == "textcnn" and ensemble.min_len == 5
    save_checkpoint(ensemble, tmp_path / "ensemble.safetensors", {"seeds": [13, 1013, 2013]})
    loaded, meta = load_checkpoint(tmp_path / "ensemble.safetensors")
    assert type(loaded) is Ensemble and len(loaded.members) == 3
    assert meta == {"seeds": [13, 1013, 2013]}
    assert torch.equal(loaded(input_ids), ensemble(input_ids))


# K > 2 labels: K logits per review, built beside the two-label students (MULTI_LABEL).
def test_two_label_checkpoints_do_not_record_num_labels(tmp_path):
    """The default (two labels) stays out of the header: two-label checkpoints keep their
    bytes; a K-label one records K and comes back as the K-label twin."""
    two = build_model("textcnn", {"vocab_size": 30, "embed_dim": 6, "num_filters": 3})
    assert type(two) is TextCNN and two.output.out_features == 1
    save_checkpoint(two, tmp_path / "two.safetensors", {})
    with safe_open(str(tmp_path / "two.safetensors"), framework="pt") as handle:
        assert "num_labels" not in json.loads(handle.metadata()["student"])["config"]
    assert type(load_checkpoint(tmp_path / "two.safetensors")[0]) is TextCNN


@pytest.mark.parametrize("arch", ["textcnn", "bilstm"])
def test_k_labels_give_k_logits_and_round_trip(tmp_path, arch):
    torch.manual_seed(0)
    config = {"vocab_size": 40, "embed_dim": 6, "num_labels": 4}
    if arch == "textcnn":
        config.update(ngram_order=2, ngram_buckets=11)
    model = build_model(arch, config).eval()
    assert type(model) is MULTI_LABEL[type(model).__mro__[1]]
    review = torch.randint(1, 40, (1, 9))
    logits = model(torch.cat([review, torch.randint(1, 40, (2, 9))]))
    assert logits.shape == (3, 4)
    padded = torch.cat([review, torch.zeros((1, 5), dtype=torch.long)], dim=1)
    assert torch.allclose(model(padded), logits[:1], atol=1e-6)  # padding changes nothing
    model.logit_scale.fill_(0.5)
    save_checkpoint(model, tmp_path / "k.safetensors", {})
    loaded, _ = load_checkpoint(tmp_path / "k.safetensors")
    assert type(loaded) is type(model) and loaded.config.num_labels == 4
    assert torch.equal(loaded(review), model(review))
    assert torch.allclose(torch.jit.script(model)(review), model(review))  # exports script it


def test_k_label_ngram_branch_is_k_binary_branches_side_by_side():
    """Each of the K columns of the n-gram rows is a single-logit NgramBag of its own."""
    multi = build_model("textcnn", {"vocab_size": 10, "embed_dim": 4, "kernel_sizes": (),
                                    "ngram_order": 2, "ngram_buckets": 7,
                                    "num_labels": 3}).eval()
    assert multi.ngrams.weights.weight.shape == (17, 3)  # K weights per row and bucket
    assert count_parameters(multi) == 17 * 3 + 3
    single = TextCNN(TextCNNConfig(vocab_size=10, embed_dim=4, kernel_sizes=(), ngram_order=2,
                                   ngram_buckets=7)).eval()
    review = torch.tensor([[3, 4, 5, 0, 0], [9, 1, 0, 0, 0]])
    with torch.no_grad():
        multi.ngrams.weights.weight.copy_(torch.arange(51, dtype=torch.float).view(17, 3))
        multi.output.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    for label in range(3):
        with torch.no_grad():
            single.ngrams.weights.weight.copy_(multi.ngrams.weights.weight[:, label:label + 1])
            single.output.bias.fill_(float(multi.output.bias[label]))
        assert torch.allclose(multi(review)[:, label], single(review))
    # By hand for the first review, label 0: rows 3, 4, 5 and bigrams 34, 45 -> buckets.
    rows = [3, 4, 5, 10 + 34 % 7, 10 + 45 % 7]
    assert multi(review)[0, 0].item() == pytest.approx(0.5 + sum(3 * row for row in rows)
                                                       / 5 ** 0.5)


def test_a_k_label_config_needs_build_model():
    with pytest.raises(ValueError, match="TextCNN with num_labels = 3: build it with "
                                         "build_model, which picks TextCNNMulti"):
        TextCNN(TextCNNConfig(vocab_size=10, num_labels=3))
    with pytest.raises(ValueError, match="a classifier needs at least two labels"):
        build_model("bilstm", {"vocab_size": 10, "num_labels": 1})
