"""The students: TextCNN (Kim 2014), BiLSTM (Tang et al. 2019) and a small transformer cut from
the teacher (DistilBERT's recipe). Pure model code: token ids in, logits out: one per review
for two labels (label 1's log-odds), K per review for K > 2 labels (`num_labels` in each config).

Every student reads the same input: the student tokenizer's ids, right-padded with PAD_ID = 0,
without [CLS]/[SEP]. Each splits its forward pass in two, `embed` (ids -> word vectors) and
`classify` (word vectors -> logit), so adversarial training can perturb the word vectors.
`ARCHS` maps `student.arch` to a model class; nothing else branches on the arch name.

K > 2 labels are built beside the two-label students, never through them: `build_model` picks
a subclass (`MULTI_LABEL`) whose `classify` returns (B, K); the two-label classes and their
single-logit head are untouched, so their checkpoints and exports stay as they were.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from kd.errors import PipelineError


def head_width(num_labels: int) -> int:
    """Logits per review: 1 for two labels (label 1's log-odds), K for K > 2 labels.

    Raises:
        ValueError: fewer than two labels.
    """
    if num_labels < 2:
        raise ValueError(f"num_labels = {num_labels}: a classifier needs at least two labels")
    return 1 if num_labels == 2 else num_labels


def _check_two_label_class(model: nn.Module, config, base: type) -> None:
    """A K > 2 config must come through `build_model` (its `classify` returns (B, K)).

    Raises:
        ValueError: fewer than two labels, or K > 2 labels in the two-label class.
    """
    if head_width(config.num_labels) > 1 and type(model).classify is base.classify:
        raise ValueError(f"{base.__name__} with num_labels = {config.num_labels}: build it with "
                         f"build_model, which picks {MULTI_LABEL[base].__name__}")


class Student(nn.Module):
    """What every student shares: `forward = classify(embed(ids), ids) * logit_scale`."""

    min_len: int = 1  # the shortest input the model accepts (TextCNN: its widest kernel)
    scriptable: bool = True  # TorchScript can compile it (fp32 and bf16 exports)
    int8_ops: tuple[str, ...] = ("Gather",)  # what the int8 export quantizes (ONNX op types)

    def __init__(self):
        super().__init__()
        # 1 / the calibration temperature fitted on validation after training (1 until then).
        # A buffer, not a parameter: training leaves it alone, checkpoints and exports carry it.
        self.register_buffer("logit_scale", torch.ones(()))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Args: input_ids (B, L). Returns: word vectors (B, L, E)."""
        raise NotImplementedError

    def classify(self, embedded: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Args: embedded (B, L, E), input_ids (B, L) for the padding mask. Returns: (B,)."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Args: input_ids (B, L), right-padded with 0. Returns: logits (B,)."""
        return self.classify(self.embed(input_ids), input_ids) * self.logit_scale


@dataclass(frozen=True)
class TextCNNConfig:
    vocab_size: int  # rows of the embedding table, special tokens included
    embed_dim: int = 128  # word vector size
    num_filters: int = 100  # feature maps per kernel size
    kernel_sizes: tuple[int, ...] = (3, 4, 5)  # n-gram widths, one convolution each; none:
    # the n-gram branch alone (fastText-like), which reads no word vectors
    dropout: float = 0.5  # on the pooled features, before the output layer
    ngram_order: int = 0  # linear n-gram branch over 1..ngram_order-grams; 0 = none
    ngram_buckets: int = 1 << 20  # hashed rows for the 2..ngram_order-grams
    pad_id: int = 0  # its embedding stays zero
    num_labels: int = 2  # 2: one logit; K > 2: K logits (TextCNNMulti)

    def __post_init__(self):
        object.__setattr__(self, "kernel_sizes", tuple(self.kernel_sizes))


class TextCNN(Student):
    """Embeddings -> parallel 1-D convolutions -> ReLU -> max over time -> dropout -> 1 logit,
    plus, with `ngram_order` > 0, a linear term over the review's hashed n-grams. With no
    kernel sizes it is that linear term alone, plus a bias."""

    def __init__(self, config: TextCNNConfig):
        super().__init__()
        self.config = config
        self.pad_id = config.pad_id  # plain attributes, so TorchScript can read them
        self.min_len = max(config.kernel_sizes, default=1)
        # No convolution reads word vectors without kernels: the table is empty, not unused.
        embed_dim = config.embed_dim if config.kernel_sizes else 0
        self.embedding = nn.Embedding(config.vocab_size, embed_dim, padding_idx=config.pad_id)
        self.convs = nn.ModuleList(
            nn.Conv1d(embed_dim, config.num_filters, kernel_size=width)
            for width in config.kernel_sizes
        )
        self.dropout = nn.Dropout(config.dropout)
        _check_two_label_class(self, config, TextCNN)
        width = head_width(config.num_labels)
        self.output = nn.Linear(config.num_filters * len(config.kernel_sizes), width)
        if width == 1:
            self.ngrams = (NgramBag(config.vocab_size, config.ngram_order, config.ngram_buckets,
                                    config.pad_id) if config.ngram_order > 0 else NoNgrams())
        else:
            self.ngrams = (NgramBagMulti(config.vocab_size, config.ngram_order,
                                         config.ngram_buckets, config.pad_id, width)
                           if config.ngram_order > 0 else NoNgramsMulti(width))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(input_ids)

    def classify(self, embedded: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Max-over-time pooling only sees windows that lie inside the review: a window that
        reaches into the padding is zeroed (after ReLU every feature is >= 0, so zero never
        wins over a real window). Without this a review's score would depend on how much
        padding its batch happened to give it.
        """
        if len(self.convs) == 0:  # the n-gram branch alone
            return self.output.bias + self.ngrams(input_ids)  # (B,)
        lengths = (input_ids != self.pad_id).sum(dim=1, keepdim=True)  # (B, 1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (L,)
        channels = embedded.transpose(1, 2)  # (B, E, L): Conv1d wants channels first
        pooled = []
        for conv in self.convs:
            width = conv.kernel_size[0]
            features = conv(channels).relu()  # (B, F, L - width + 1)
            inside = positions[:features.shape[2]] + width <= lengths  # (B, L - width + 1)
            pooled.append((features * inside.unsqueeze(1)).amax(dim=2))  # (B, F)
        features = self.dropout(torch.cat(pooled, dim=1))  # (B, K * F)
        return self.output(features).squeeze(1) + self.ngrams(input_ids)  # (B,)


class NgramBag(nn.Module):
    """A linear model on the review's bag of 1..order-grams, L2-normalised as TF-IDF or NB-SVM
    features are: sum of the n-grams' weights / sqrt(their count).

    A word piece is its own row; a longer n-gram is hashed into one of `buckets` rows after
    them. An n-gram that reaches into the padding counts for nothing. The weights start at
    zero: the branch adds nothing until training finds n-grams worth a weight.
    """

    def __init__(self, vocab_size: int, order: int, buckets: int, pad_id: int = 0,
                 width: int = 1):
        super().__init__()
        self.vocab_size, self.order, self.buckets, self.pad_id = vocab_size, order, buckets, pad_id
        # A prime well above the vocabulary: n-gram indices are reduced modulo it at each step,
        # so the int64 arithmetic never overflows, whatever the order.
        self.prime = 2_147_483_647
        self.weights = nn.Embedding(vocab_size + buckets, width)  # width: NgramBagMulti's K
        nn.init.zeros_(self.weights.weight)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Args: input_ids (B, L). Returns: (B,)."""
        valid = input_ids != self.pad_id  # (B, L)
        total = (self.weights(input_ids).squeeze(2) * valid).sum(dim=1)  # (B,)
        count = valid.sum(dim=1)  # (B,)
        index = input_ids
        for order in range(2, self.order + 1):  # a review shorter than `order` adds nothing
            index = (index[:, :-1] * self.vocab_size + input_ids[:, order - 1:]) % self.prime
            valid = valid[:, :-1] & (input_ids[:, order - 1:] != self.pad_id)  # (B, L-order+1)
            rows = self.vocab_size + index % self.buckets
            total = total + (self.weights(rows).squeeze(2) * valid).sum(dim=1)
            count = count + valid.sum(dim=1)
        return total / count.clamp(min=1).float().sqrt()


class NoNgrams(nn.Module):
    """The TextCNN without its n-gram branch: adds zero."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(input_ids.shape[0], device=input_ids.device)


class NgramBagMulti(NgramBag):
    """`NgramBag` for K > 2 labels: K weights per word piece and per bucket, (B, K) out."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Args: input_ids (B, L). Returns: (B, K)."""
        valid = input_ids != self.pad_id  # (B, L)
        total = (self.weights(input_ids) * valid.unsqueeze(2)).sum(dim=1)  # (B, K)
        count = valid.sum(dim=1, keepdim=True)  # (B, 1)
        index = input_ids
        for order in range(2, self.order + 1):
            index = (index[:, :-1] * self.vocab_size + input_ids[:, order - 1:]) % self.prime
            valid = valid[:, :-1] & (input_ids[:, order - 1:] != self.pad_id)  # (B, L-order+1)
            rows = self.vocab_size + index % self.buckets
            total = total + (self.weights(rows) * valid.unsqueeze(2)).sum(dim=1)  # (B, K)
            count = count + valid.sum(dim=1, keepdim=True)
        return total / count.clamp(min=1).float().sqrt()


class NoNgramsMulti(nn.Module):
    """The K-label TextCNN without its n-gram branch: adds zeros (B, K)."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(input_ids.shape[0], self.width, device=input_ids.device)


class TextCNNMulti(TextCNN):
    """TextCNN for K > 2 labels: the same features, K logits (B, K)."""

    def classify(self, embedded: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """As `TextCNN.classify` (windows inside the review only), without the squeeze."""
        if len(self.convs) == 0:  # the n-gram branch alone
            return self.output.bias + self.ngrams(input_ids)  # (B, K)
        lengths = (input_ids != self.pad_id).sum(dim=1, keepdim=True)  # (B, 1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (L,)
        channels = embedded.transpose(1, 2)  # (B, E, L)
        pooled = []
        for conv in self.convs:
            width = conv.kernel_size[0]
            features = conv(channels).relu()  # (B, F, L - width + 1)
            inside = positions[:features.shape[2]] + width <= lengths  # (B, L - width + 1)
            pooled.append((features * inside.unsqueeze(1)).amax(dim=2))  # (B, F)
        features = self.dropout(torch.cat(pooled, dim=1))  # (B, kernels * F)
        return self.output(features) + self.ngrams(input_ids)  # (B, K)


@dataclass(frozen=True)
class BiLSTMConfig:
    vocab_size: int
    embed_dim: int = 128
    hidden_size: int = 128  # per direction
    dropout: float = 0.5  # on the pooled features and on the hidden layer
    pad_id: int = 0
    num_labels: int = 2  # 2: one logit; K > 2: K logits (BiLSTMMulti)


class BiLSTM(Student):
    """Embeddings -> BiLSTM -> max over time -> ReLU hidden layer -> 1 logit (Tang et al. 2019,
    with max pooling instead of the last states: IMDb reviews are long).

    The backward direction runs as a second forward LSTM over each review reversed within its
    own length, so it starts at the review's last word, never in the padding: a review's score
    does not depend on its batch.
    """

    def __init__(self, config: BiLSTMConfig):
        super().__init__()
        self.config = config
        self.pad_id = config.pad_id
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim,
                                      padding_idx=config.pad_id)
        self.forward_lstm = nn.LSTM(config.embed_dim, config.hidden_size, batch_first=True)
        self.backward_lstm = nn.LSTM(config.embed_dim, config.hidden_size, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.hidden = nn.Linear(2 * config.hidden_size, config.hidden_size)
        _check_two_label_class(self, config, BiLSTM)
        self.output = nn.Linear(config.hidden_size, head_width(config.num_labels))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(input_ids)

    def classify(self, embedded: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        valid = input_ids != self.pad_id  # (B, L)
        lengths = valid.sum(dim=1, keepdim=True)  # (B, 1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (L,)
        reverse = (lengths - 1 - positions).clamp(min=0)  # (B, L): position t reads len-1-t
        reversed_embedded = embedded.gather(
            1, reverse.unsqueeze(2).expand(-1, -1, embedded.shape[2]))  # (B, L, E)
        forward_states, _ = self.forward_lstm(embedded)  # (B, L, H)
        backward_states, _ = self.backward_lstm(reversed_embedded)  # (B, L, H)
        # Both are valid at t < len (the backward one at the mirrored position); max pooling
        # does not care about the order.
        states = torch.cat([forward_states, backward_states], dim=2)  # (B, L, 2H)
        states = states.masked_fill(~valid.unsqueeze(2), -1e4)
        pooled = self.dropout(states.amax(dim=1))  # (B, 2H)
        return self.output(self.dropout(self.hidden(pooled).relu())).squeeze(1)  # (B,)


class BiLSTMMulti(BiLSTM):
    """BiLSTM for K > 2 labels: the same features, K logits (B, K)."""

    def classify(self, embedded: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """As `BiLSTM.classify`, without the squeeze."""
        valid = input_ids != self.pad_id  # (B, L)
        lengths = valid.sum(dim=1, keepdim=True)  # (B, 1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (L,)
        reverse = (lengths - 1 - positions).clamp(min=0)  # (B, L)
        reversed_embedded = embedded.gather(
            1, reverse.unsqueeze(2).expand(-1, -1, embedded.shape[2]))  # (B, L, E)
        forward_states, _ = self.forward_lstm(embedded)  # (B, L, H)
        backward_states, _ = self.backward_lstm(reversed_embedded)  # (B, L, H)
        states = torch.cat([forward_states, backward_states], dim=2)  # (B, L, 2H)
        states = states.masked_fill(~valid.unsqueeze(2), -1e4)
        pooled = self.dropout(states.amax(dim=1))  # (B, 2H)
        return self.output(self.dropout(self.hidden(pooled).relu()))  # (B, K)


@dataclass(frozen=True)
class TransformerConfig:
    bert: dict = field(default_factory=dict)  # the teacher's BertConfig, cut to `layers`
    max_len: int = 256  # word pieces seen, [CLS] and [SEP] included
    head_tokens: int = 96  # head+tail truncation, as the teacher reads a review
    cls_id: int = 101
    sep_id: int = 102
    pad_id: int = 0
    num_labels: int = 2  # 2: one logit; K > 2: K logits (TransformerMulti)


class TransformerStudent(Student):
    """A BERT encoder with fewer layers than the teacher, started from its embeddings, some of
    its layers, its pooler and its classifier (DistilBERT's recipe), -> 1 logit.

    It truncates like the teacher (first `head_tokens` and the last word pieces of a review
    longer than max_len - 2) and adds [CLS] and [SEP] itself, so it reads the same ids as the
    other students.
    """

    scriptable = False  # Hugging Face's BERT does not compile to TorchScript; ONNX it is
    int8_ops = ("Gather", "MatMul")  # the encoder's weights are most of its bytes and time

    def __init__(self, config: TransformerConfig):
        from transformers import BertConfig, BertModel

        super().__init__()
        self.config = config
        self.max_len = config.max_len
        self.head_tokens = config.head_tokens
        self.cls_id, self.sep_id, self.pad_id = config.cls_id, config.sep_id, config.pad_id
        self.bert = BertModel(BertConfig(**config.bert), add_pooling_layer=True)
        self.dropout = nn.Dropout(self.bert.config.hidden_dropout_prob)
        _check_two_label_class(self, config, TransformerStudent)
        self.output = nn.Linear(self.bert.config.hidden_size, head_width(config.num_labels))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert.embeddings.word_embeddings(input_ids)

    def classify(self, embedded: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        # Shapes come from tensor ops only (no Python min or if), so an ONNX export keeps the
        # batch and length dynamic.
        budget = self.max_len - 2
        lengths = (input_ids != self.pad_id).sum(dim=1, keepdim=True)  # (B, 1)
        kept = lengths.clamp(max=budget)  # (B, 1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[:budget]  # (W,)
        positions = positions.unsqueeze(0)  # (1, W), W = min(L, budget)
        # Head + tail: position j reads j, or, past the head of a long review, j + the cut.
        cut = lengths - kept  # (B, 1)
        source = positions + (positions >= self.head_tokens).long() * cut  # (B, W)
        words = embedded.gather(1, source.unsqueeze(2).expand(-1, -1, embedded.shape[2]))
        words = words * (positions < kept).unsqueeze(2).to(words.dtype)  # (B, W, E)
        table = self.bert.embeddings.word_embeddings.weight  # (V, E)
        cls = table[self.cls_id].to(words.dtype).expand(words.shape[0], 1, -1)  # (B, 1, E)
        words = torch.cat([cls, words, torch.zeros_like(cls)], dim=1)  # (B, W + 2, E)
        # [SEP] goes right after the last kept word piece, at slot kept + 1.
        slots = torch.arange(words.shape[1], device=input_ids.device).unsqueeze(0)  # (1, W + 2)
        words = torch.where((slots == kept + 1).unsqueeze(2), table[self.sep_id].to(words.dtype),
                            words)
        mask = (slots <= kept + 1).long()  # (B, W + 2)
        hidden = self.bert(inputs_embeds=words, attention_mask=mask).pooler_output  # (B, H)
        return self.output(self.dropout(hidden)).squeeze(1)  # (B,)


class TransformerMulti(TransformerStudent):
    """The transformer student for K > 2 labels: K logits (B, K). Its head has the shape of
    the teacher's classifier, so `seed_transformer` copies it row by row."""

    def classify(self, embedded: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        logits = super().classify(embedded, input_ids)  # (B, K): squeeze(1) leaves K > 1 be
        return logits


# student.arch -> (config class, model class). The one place that knows the architectures.
ARCHS = {
    "textcnn": (TextCNNConfig, TextCNN),
    "bilstm": (BiLSTMConfig, BiLSTM),
    "transformer": (TransformerConfig, TransformerStudent),
}


# A two-label class -> its K > 2 labels twin; `build_model` picks it from the config.
MULTI_LABEL = {TextCNN: TextCNNMulti, BiLSTM: BiLSTMMulti, TransformerStudent: TransformerMulti}


class Ensemble(Student):
    """Students of one arch and shape trained with different seeds, served as one model: the
    mean of their logits, times the ensemble's own calibration (`logit_scale`)."""

    __jit_ignored_attributes__ = ["int8_ops", "scriptable"]  # what exports read, not forward

    def __init__(self, members: list[Student]):
        super().__init__()
        self.members = nn.ModuleList(members)
        first = members[0]
        self.config = first.config  # the members' (checkpoints record it with their count)
        self.min_len, self.scriptable, self.int8_ops = first.min_len, first.scriptable, \
            first.int8_ops

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Args: input_ids (B, L), right-padded with 0. Returns: logits (B,)."""
        logits = [member(input_ids) for member in self.members]  # each (B,)
        return torch.stack(logits).mean(dim=0) * self.logit_scale


def arch_of(model: Student) -> str:
    """The `student.arch` of a student, or of an ensemble's members."""
    member = model.members[0] if isinstance(model, Ensemble) else model
    return next(name for name, (_, cls) in ARCHS.items() if isinstance(member, cls))


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def safetensors_parameters(path: str | Path) -> int:
    """How many parameters a safetensors file holds, read from its header only."""
    with safe_open(str(path), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())


def read_teacher_tensors(weights_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a teacher's safetensors files, by name (float32)."""
    tensors = {}
    for path in sorted(Path(weights_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name).float() for name in handle.keys()})
    return tensors


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
    centred = (embeddings - embeddings.mean(dim=0)).double()
    _, _, directions = torch.linalg.svd(centred, full_matrices=False)  # (H, H) rows
    return (centred @ directions[:dim].T).float()  # (V, dim)


def teacher_layers(total: int, keep: int) -> list[int]:
    """Which of the teacher's `total` layers a `keep`-layer student starts from: evenly spread,
    the first included (DistilBERT keeps every other layer: 0, 2, 4 of 6)."""
    return [index * total // keep for index in range(keep)]


def seed_transformer(model: TransformerStudent, teacher: dict[str, torch.Tensor],
                     layers: list[int], positive: int = 1, rows: list[int] | None = None) -> None:
    """Copy the teacher's embeddings, the chosen layers (in order), pooler and classifier.

    The teacher's two-way classifier becomes the student's one logit: the positive-class
    log-odds of a softmax is (w_pos - w_neg) . h + (b_pos - b_neg). A K > 2 label student
    (`TransformerMulti`) takes the teacher's K rows as they are, in the order `rows` gives
    (the teacher's row of each of the data's labels; None: the teacher's own order).

    Raises:
        PipelineError: a K-label student and a teacher classifier of another size.
    """
    prefix = next(name.split("embeddings.")[0] for name in teacher if "embeddings." in name)
    state = {}
    for name in model.bert.state_dict():
        source = name
        if name.startswith("encoder.layer."):
            index = int(name.split(".")[2])
            source = name.replace(f"encoder.layer.{index}.", f"encoder.layer.{layers[index]}.", 1)
        state[name] = teacher[prefix + source]
    model.bert.load_state_dict(state)
    weight, bias = teacher["classifier.weight"], teacher["classifier.bias"]  # (2, H), (2,)
    if model.output.out_features > 1:  # K > 2 labels: (K, H), (K,)
        if weight.shape[0] != model.output.out_features:
            raise PipelineError(f"the teacher's classifier has {weight.shape[0]} rows; this "
                                f"student has {model.output.out_features} labels")
        order = list(range(weight.shape[0])) if rows is None else rows
        model.output.weight.data.copy_(weight[order])
        model.output.bias.data.copy_(bias[order])
        return
    negative = 1 - positive
    model.output.weight.data.copy_((weight[positive] - weight[negative]).unsqueeze(0))
    model.output.bias.data.fill_(float(bias[positive] - bias[negative]))


def save_checkpoint(model: Student, path: str | Path, meta: dict) -> None:
    """Save weights as safetensors, with the arch, its config and `meta` in the file's header
    (an ensemble: its members' arch and config, and how many there are).

    The header holds one key: safetensors writes its metadata map in no fixed order, so
    several keys would give different bytes for the same checkpoint from run to run.
    """
    config = asdict(model.config)
    if config["num_labels"] == 2:  # the default: two-label checkpoints keep their bytes
        del config["num_labels"]
    student = {"arch": arch_of(model), "config": config, "meta": meta}
    if isinstance(model, Ensemble):
        student["members"] = len(model.members)
    header = {"student": json.dumps(student, sort_keys=True)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()},
              str(path), metadata=header)


def build_model(arch: str, config: dict) -> Student:
    """A randomly initialised student of `arch` from its config's fields; with
    `num_labels` > 2, the arch's K-label twin (`MULTI_LABEL`)."""
    config_class, model_class = ARCHS[arch]
    config = config_class(**config)
    if config.num_labels > 2:
        model_class = MULTI_LABEL[model_class]
    return model_class(config)


def load_checkpoint(path: str | Path) -> tuple[Student, dict]:
    """Rebuild a student from a checkpoint written by `save_checkpoint` (no pickle involved).

    Returns:
        (model in eval mode, meta dict).

    Raises:
        PipelineError: the file is missing or is not a student checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found: run `dvc repro distill` first")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
        if "student" not in header:
            raise PipelineError(f"{path} is not a student checkpoint: no config in its header "
                                "(retrain it with `dvc repro distill`)")
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    student = json.loads(header["student"])
    if student["arch"] not in ARCHS:
        raise PipelineError(f"{path} holds a {student['arch']!r} student; this code knows "
                            f"{list(ARCHS)}")
    members = [build_model(student["arch"], student["config"])
               for _ in range(student.get("members", 1))]
    model = members[0] if "members" not in student else Ensemble(members)
    model.load_state_dict(state)
    return model.eval(), student["meta"]
