import torch

from kd.model import (
    TextCNN,
    TextCNNConfig,
    count_parameters,
    load_checkpoint,
    safetensors_parameters,
    save_checkpoint,
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
