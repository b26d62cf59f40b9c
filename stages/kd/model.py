"""The TextCNN student (Kim 2014). Pure model code: token ids in, logits out."""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from kd.errors import PipelineError


@dataclass(frozen=True)
class TextCNNConfig:
    vocab_size: int  # rows of the embedding table, special tokens included
    embed_dim: int = 300  # word vector size
    num_filters: int = 100  # feature maps per kernel size
    kernel_sizes: tuple[int, ...] = (3, 4, 5)  # n-gram widths, one convolution each
    dropout: float = 0.5  # on the pooled features, before the output layer
    pad_id: int = 0  # its embedding stays zero

    def __post_init__(self):
        object.__setattr__(self, "kernel_sizes", tuple(self.kernel_sizes))


class TextCNN(nn.Module):
    """Embeddings -> parallel 1-D convolutions -> ReLU -> max over time -> dropout -> 1 logit."""

    def __init__(self, config: TextCNNConfig):
        super().__init__()
        self.config = config
        self.pad_id = config.pad_id  # a plain attribute, so TorchScript can read it
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim,
                                      padding_idx=config.pad_id)
        self.convs = nn.ModuleList(
            nn.Conv1d(config.embed_dim, config.num_filters, kernel_size=width)
            for width in config.kernel_sizes
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.num_filters * len(config.kernel_sizes), 1)
        # 1 / the calibration temperature fitted on validation after training (1 until then).
        # A buffer, not a parameter: training leaves it alone, checkpoints and exports carry it.
        self.register_buffer("logit_scale", torch.ones(()))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Args: input_ids (B, L), right-padded, L >= the widest kernel. Returns: logits (B,).

        Max-over-time pooling only sees windows that lie inside the review: a window that
        reaches into the padding is zeroed (after ReLU every feature is >= 0, so zero never
        wins over a real window). Without this a review's score would depend on how much
        padding its batch happened to give it.
        """
        lengths = (input_ids != self.pad_id).sum(dim=1, keepdim=True)  # (B, 1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (L,)
        embedded = self.embedding(input_ids).transpose(1, 2)  # (B, E, L): Conv1d wants channels
        pooled = []
        for conv in self.convs:
            width = conv.kernel_size[0]
            features = conv(embedded).relu()  # (B, F, L - width + 1)
            inside = positions[:features.shape[2]] + width <= lengths  # (B, L - width + 1)
            pooled.append((features * inside.unsqueeze(1)).amax(dim=2))  # (B, F)
        features = self.dropout(torch.cat(pooled, dim=1))  # (B, K * F)
        return self.output(features).squeeze(1) * self.logit_scale  # (B,)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def safetensors_parameters(path: str | Path) -> int:
    """How many parameters a safetensors file holds, read from its header only."""
    with safe_open(str(path), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())


def read_word_embeddings(weights_dir: str | Path) -> torch.Tensor:
    """A transformer's input word embeddings, (vocab, hidden), read from its safetensors.

    Raises:
        PipelineError: no tensor named *word_embeddings.weight in the folder's safetensors.
    """
    for path in sorted(Path(weights_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                if name.endswith("word_embeddings.weight"):
                    return handle.get_tensor(name).float()
    raise PipelineError(f"no *word_embeddings.weight tensor in {weights_dir}/*.safetensors; "
                        "use student.init_embeddings = random")


def project_embeddings(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """Embeddings (V, H) cut to `dim` <= H dimensions by PCA: centred, then projected onto
    their `dim` leading principal directions, so the student keeps as much of the teacher's
    word-piece geometry as `dim` numbers per token can hold. With dim == H, unchanged.

    Returns:
        (V, dim) float32.
    """
    if dim == embeddings.shape[1]:
        return embeddings
    centred = embeddings - embeddings.mean(dim=0)
    _, _, directions = torch.linalg.svd(centred.double(), full_matrices=False)  # (H, H) rows
    return (centred.double() @ directions[:dim].T).float()  # (V, dim)


def save_checkpoint(model: TextCNN, path: str | Path, meta: dict) -> None:
    """Save weights as safetensors, with the model config and `meta` in the file's header."""
    header = {"config": json.dumps(asdict(model.config)), "meta": json.dumps(meta, sort_keys=True)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()},
              str(path), metadata=header)


def load_checkpoint(path: str | Path) -> tuple[TextCNN, dict]:
    """Rebuild a TextCNN from a checkpoint written by `save_checkpoint` (no pickle involved).

    Returns:
        (model in eval mode, meta dict).

    Raises:
        PipelineError: the file is missing or is not a TextCNN checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found: run `dvc repro distill` first")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
        if "config" not in header:
            raise PipelineError(f"{path} is not a TextCNN checkpoint: no config in its header")
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    model = TextCNN(TextCNNConfig(**json.loads(header["config"])))
    model.load_state_dict(state)
    return model.eval(), json.loads(header.get("meta", "{}"))
