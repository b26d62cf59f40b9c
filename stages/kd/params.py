"""One typed, validated view of `params.yaml`.

Every stage calls `load_params()` first, so a bad value stops the pipeline before any work
starts, with a message that names the key, the value and what is allowed.
"""

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from kd.errors import PipelineError
from kd.losses import KD_LOSSES

PRECISIONS = ("auto", "bf16", "fp32")
SOURCES = ("imdb", "files")  # kd.sources reads them
ENGINES = ("local", "ray")  # kd.engines runs them
DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"


class ParamsError(PipelineError, ValueError):
    """`params.yaml` is missing, malformed, or holds a value out of range."""


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ParamsError(f"params.yaml: `{key}` = {value!r} is not allowed; {allowed}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_device(name: str) -> bool:
    kind, _, index = name.partition(":")
    return name in ("auto", "cpu", "mps", "cuda") or (kind == "cuda" and index.isdigit())


@dataclass(frozen=True)
class PrepareParams:
    val_fraction: float = 0.1  # share of the sampled training reviews held out for validation

    def __post_init__(self):
        _require(
            _is_number(self.val_fraction) and 0 < self.val_fraction < 1,
            "prepare.val_fraction", self.val_fraction, "it must be a number in (0, 1)",
        )


@dataclass(frozen=True)
class DataParams:
    """Where `prepare` takes the reviews from (kd.sources); the stages after it never know."""

    source: str = "imdb"  # imdb: the tarball at `path`; files: your files in the folder `path`
    path: str = "data/raw/aclImdb_v1.tar.gz"  # what prepare reads and DVC tracks (file or folder)
    train: str = ""  # files: in `path`: .parquet, .csv, .tsv, .jsonl or a save_to_disk folder
    test: str = ""  # files: the test reviews, kept whole (validation is carved from train)
    unlabelled: str = ""  # files: optional reviews without labels, for the transfer set
    text_column: str = "text"  # files
    label_column: str = "label"  # files
    positive_label: str | int = ""  # files: the label value that is 1; "": by name, else a rule
    max_overlap: float = 0.02  # files: most test reviews allowed to repeat a train/unlabelled text

    def __post_init__(self):
        _require(self.source in SOURCES, "data.source", self.source,
                 f"it must be one of {', '.join(SOURCES)}")
        _require(isinstance(self.path, str) and self.path != "", "data.path", self.path,
                 "it must be a path: the IMDb tarball, or the folder that holds your files")
        for key in ("train", "test", "unlabelled"):
            value = getattr(self, key)
            _require(isinstance(value, str), f"data.{key}", value, "it must be a name (a string)")
            parts = Path(value).parts
            _require(not Path(value).is_absolute() and ".." not in parts, f"data.{key}", value,
                     "it must be a name inside data.path (the folder DVC tracks), such as "
                     "train.csv; put the file in that folder")
        if self.source == "files":
            for key in ("train", "test"):
                _require(getattr(self, key) != "", f"data.{key}", getattr(self, key),
                         "data.source = files needs it: the name of a file or save_to_disk "
                         "folder inside data.path")
        for key in ("text_column", "label_column"):
            value = getattr(self, key)
            _require(isinstance(value, str) and value != "", f"data.{key}", value,
                     "it must be a column name")
        _require(self.text_column != self.label_column, "data.label_column", self.label_column,
                 "it must differ from data.text_column")
        _require(isinstance(self.positive_label, str | int)
                 and not isinstance(self.positive_label, bool), "data.positive_label",
                 self.positive_label, 'it must be a label value (a string or an integer), or "" '
                 "to find it by name")
        _require(_is_number(self.max_overlap) and 0 <= self.max_overlap <= 1, "data.max_overlap",
                 self.max_overlap, "it must be a share in [0, 1]")


@dataclass(frozen=True)
class VocabParams:
    source: str = "teacher"  # "teacher": the teacher's word pieces; "words": learned from train
    max_size: int = 30000  # words kept, special tokens included
    min_freq: int = 2  # rarer training words map to [UNK]
    max_len: int = 512  # tokens per review seen by the student

    def __post_init__(self):
        _require(self.source in ("words", "teacher"), "vocab.source", self.source,
                 "it must be words or teacher")
        _require(_is_int(self.max_size) and self.max_size >= 3, "vocab.max_size", self.max_size,
                 "it must be an integer >= 3 (two special tokens and one word)")
        _require(_is_int(self.min_freq) and self.min_freq >= 1, "vocab.min_freq", self.min_freq,
                 "it must be an integer >= 1")
        _require(_is_int(self.max_len) and self.max_len >= 1, "vocab.max_len", self.max_len,
                 "it must be an integer >= 1")


@dataclass(frozen=True)
class TeacherParams:
    path: str = "models/teacher"  # local Hugging Face sequence-classification checkpoint
    max_len: int = 256  # word pieces per review, [CLS] and [SEP] included
    head_tokens: int = 96  # head+tail truncation keeps these first word pieces, then the tail
    batch_size: int = 64
    precision: str = "auto"  # auto: bf16 autocast where the hardware has it, else fp32
    engine: str = "local"  # local: this process; ray: Ray Data actors (requirements-ray.txt)
    workers: int = 1  # ray: actors, one per CPU slot or GPU; local: 1

    def __post_init__(self):
        _require(isinstance(self.path, str) and self.path != "", "teacher.path", self.path,
                 "it must be a folder path")
        _require(self.engine in ENGINES, "teacher.engine", self.engine,
                 f"it must be one of {', '.join(ENGINES)}")
        _require(_is_int(self.workers) and self.workers >= 1, "teacher.workers", self.workers,
                 "it must be an integer >= 1")
        _require(self.engine == "ray" or self.workers == 1, "teacher.workers", self.workers,
                 "the local engine runs one worker: set teacher.engine = ray for more")
        _require(self.precision in PRECISIONS, "teacher.precision", self.precision,
                 f"it must be one of {', '.join(PRECISIONS)}")
        _require(_is_int(self.max_len) and self.max_len >= 3, "teacher.max_len", self.max_len,
                 "it must be an integer >= 3")
        _require(_is_int(self.head_tokens) and 0 <= self.head_tokens <= self.max_len - 2,
                 "teacher.head_tokens", self.head_tokens,
                 f"it must be an integer in [0, teacher.max_len - 2 = {self.max_len - 2}]")
        _require(_is_int(self.batch_size) and self.batch_size >= 1, "teacher.batch_size",
                 self.batch_size, "it must be an integer >= 1")


@dataclass(frozen=True)
class FinetuneParams:
    """Fine-tuning a teacher from a base encoder (teachers/dvc.yaml); the shipped teacher's
    recipe. Truncation is the teacher's own: `teacher.max_len` and `teacher.head_tokens`."""

    base: str = "models/base-encoder"  # a Hugging Face encoder folder (dvc pull)
    epochs: int = 2
    lr: float = 8e-5  # AdamW's peak learning rate
    warmup: float = 0.06  # share of the steps warming up linearly; then linear decay to 0
    weight_decay: float = 0.01  # AdamW; biases and LayerNorm weights are not decayed
    batch_size: int = 32
    max_grad_norm: float = 1.0  # gradients clipped to this norm; 0 = no clipping
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.0
    precision: str = "auto"  # auto: bf16 autocast where the hardware has it, else fp32
    seed: int = 13  # the new head's initialisation, dropout and the batch order
    threads: int = 0  # CPU threads, 0 = every core; the same count gives the same bytes
    save_every: int = 200  # steps between resumable states inside an epoch; 0: epoch ends only

    def __post_init__(self):
        _require(isinstance(self.base, str) and self.base != "", "finetune.base", self.base,
                 "it must be a folder path")
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            _require(_is_int(value) and value >= 1, f"finetune.{key}", value,
                     "it must be an integer >= 1")
        _require(_is_number(self.lr) and self.lr > 0, "finetune.lr", self.lr,
                 "it must be a number > 0")
        _require(_is_number(self.warmup) and 0 <= self.warmup < 1, "finetune.warmup",
                 self.warmup, "it must be a share of the steps in [0, 1)")
        _require(_is_number(self.weight_decay) and self.weight_decay >= 0,
                 "finetune.weight_decay", self.weight_decay, "it must be a number >= 0")
        _require(_is_number(self.max_grad_norm) and self.max_grad_norm >= 0,
                 "finetune.max_grad_norm", self.max_grad_norm,
                 "it must be a number >= 0 (0 means no clipping)")
        for key in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, key)
            _require(_is_number(value) and 0 <= value < 1, f"finetune.{key}", value,
                     "it must be a number in [0, 1)")
        _require(self.precision in PRECISIONS, "finetune.precision", self.precision,
                 f"it must be one of {', '.join(PRECISIONS)}")
        _require(_is_int(self.seed), "finetune.seed", self.seed, "it must be an integer")
        _require(_is_int(self.threads) and self.threads >= 0, "finetune.threads", self.threads,
                 "it must be an integer >= 0 (0 means every core)")
        _require(_is_int(self.save_every) and self.save_every >= 0, "finetune.save_every",
                 self.save_every, "it must be an integer >= 0 (0: a state at epoch ends only)")


ARCHS = ("textcnn", "bilstm", "transformer")  # kd.model.ARCHS builds them


@dataclass(frozen=True)
class StudentParams:
    arch: str = "textcnn"  # textcnn, bilstm or transformer (README, "The students")
    embed_dim: int = 128  # textcnn, bilstm: word vector size (the transformer keeps the teacher's)
    num_filters: int = 100  # textcnn: per kernel size
    ngram_order: int = 0  # textcnn: linear branch over hashed 1..ngram_order-grams; 0 = none
    ngram_buckets: int = 1 << 20  # textcnn: hashed rows for the 2..ngram_order-grams
    hidden_size: int = 128  # bilstm: per direction
    layers: int = 2  # transformer: the teacher's layers it keeps (evenly spread)
    max_len: int = 256  # transformer: word pieces read, [CLS] and [SEP] included
    head_tokens: int = 96  # transformer: head+tail truncation, as the teacher's
    dropout: float = 0.5  # textcnn, bilstm (the transformer keeps the teacher's)
    init_embeddings: str = "teacher"  # teacher: its word-piece embeddings (PCA if smaller)
    members: int = 1  # students trained (seeds train.seed + 1000 i), served as their mean logit

    def __post_init__(self):
        _require(self.arch in ARCHS, "student.arch", self.arch,
                 f"it must be one of {', '.join(ARCHS)}")
        for key in ("embed_dim", "num_filters", "ngram_buckets", "hidden_size", "layers",
                    "members"):
            value = getattr(self, key)
            _require(_is_int(value) and value >= 1, f"student.{key}", value,
                     "it must be an integer >= 1")
        _require(_is_int(self.ngram_order) and 0 <= self.ngram_order <= 5, "student.ngram_order",
                 self.ngram_order, "it must be an integer in [0, 5] (0: no n-gram branch)")
        _require(_is_int(self.max_len) and self.max_len >= 3, "student.max_len", self.max_len,
                 "it must be an integer >= 3")
        _require(_is_int(self.head_tokens) and 0 <= self.head_tokens <= self.max_len - 2,
                 "student.head_tokens", self.head_tokens,
                 f"it must be an integer in [0, student.max_len - 2 = {self.max_len - 2}]")
        _require(_is_number(self.dropout) and 0 <= self.dropout < 1, "student.dropout",
                 self.dropout, "it must be a number in [0, 1)")
        _require(self.init_embeddings in ("random", "teacher"), "student.init_embeddings",
                 self.init_embeddings, "it must be random or teacher")
        _require(self.arch != "transformer" or self.init_embeddings == "teacher",
                 "student.init_embeddings", self.init_embeddings,
                 "the transformer student is cut from the teacher: it must be teacher")


@dataclass(frozen=True)
class TrainParams:
    batch_size: int = 64
    lr: float = 1e-3
    precision: str = "auto"  # auto: bf16 autocast where the hardware has it, else fp32
    calibrate: bool = True  # fit one temperature on validation after training
    seed: int = 13  # the student's initialisation, dropout and batch order
    threads: int = 0  # CPU threads; 0 = every core. Results are bitwise repeatable per count.
    adversarial: float = 0.0  # adversarial training on the word vectors: its epsilon; 0 = off
    ngram_lr: float = 0.0  # learning rate of the TextCNN's n-gram branch; 0 = lr

    def __post_init__(self):
        _require(isinstance(self.calibrate, bool), "train.calibrate", self.calibrate,
                 "it must be true or false")
        _require(self.precision in PRECISIONS, "train.precision", self.precision,
                 f"it must be one of {', '.join(PRECISIONS)}")
        _require(_is_int(self.batch_size) and self.batch_size >= 1, "train.batch_size",
                 self.batch_size, "it must be an integer >= 1")
        _require(_is_number(self.lr) and self.lr > 0, "train.lr", self.lr,
                 "it must be a number > 0")
        _require(_is_int(self.seed), "train.seed", self.seed, "it must be an integer")
        _require(_is_int(self.threads) and self.threads >= 0, "train.threads", self.threads,
                 "it must be an integer >= 0 (0 means every core)")
        _require(_is_number(self.adversarial) and self.adversarial >= 0, "train.adversarial",
                 self.adversarial, "it must be a number >= 0 (0 means off)")
        _require(_is_number(self.ngram_lr) and self.ngram_lr >= 0, "train.ngram_lr",
                 self.ngram_lr, "it must be a number >= 0 (0 means train.lr)")


@dataclass(frozen=True)
class AugmentParams:
    mask_prob: float = 0.1  # each word of a copy becomes [MASK] with this probability
    window_prob: float = 0.25  # a copy keeps only a random window of its review this often
    window_min: float = 0.3  # the window keeps at least this share of the words

    def __post_init__(self):
        for key in ("mask_prob", "window_prob"):
            value = getattr(self, key)
            _require(_is_number(value) and 0 <= value <= 1, f"augment.{key}", value,
                     "it must be a number in [0, 1]")
        _require(_is_number(self.window_min) and 0 < self.window_min <= 1, "augment.window_min",
                 self.window_min, "it must be a number in (0, 1]")


@dataclass(frozen=True)
class BaselineParams:
    tfidf_c_grid: tuple[float, ...] = (1.0, 4.0, 16.0)  # inverse L2 strengths tried on val
    tfidf_min_df: int = 2  # n-grams in fewer training reviews are dropped
    nb_c_grid: tuple[float, ...] = (0.1, 0.3, 1.0)  # NB-LR: inverse L2 strengths tried on val
    nb_ngram_max: int = 3  # NB-LR: word 1..nb_ngram_max-grams

    def __post_init__(self):
        for key in ("tfidf_c_grid", "nb_c_grid"):
            grid = getattr(self, key)
            _require(isinstance(grid, (list, tuple)) and len(grid) > 0
                     and all(_is_number(c) and c > 0 for c in grid),
                     f"baselines.{key}", grid, "it must be a non-empty list of numbers > 0")
            object.__setattr__(self, key, tuple(grid))
        _require(_is_int(self.tfidf_min_df) and self.tfidf_min_df >= 1, "baselines.tfidf_min_df",
                 self.tfidf_min_df, "it must be an integer >= 1")
        _require(_is_int(self.nb_ngram_max) and 1 <= self.nb_ngram_max <= 5,
                 "baselines.nb_ngram_max", self.nb_ngram_max, "it must be an integer in [1, 5]")


@dataclass(frozen=True)
class Params:
    alpha: float = 0.5  # weight of the label loss; the teacher term gets 1 - alpha
    epochs: int = 5
    subset_size: int = 0  # training reviews to sample; 0 = all
    test_size: int = 0  # test reviews to score; 0 = all
    unsup_size: int = 0  # unlabelled reviews the teacher scores for the transfer set; 0 = all
    augment_size: int = 0  # augmented copies of train + unsup reviews the teacher scores; 0 = off
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    temperature: float = 2.0  # softens teacher and student logits in the teacher term
    kd_loss: str = "bce"  # "bce" on softened probabilities or "mse" on logits
    use_unsup: bool = True  # add the teacher-scored unlabelled reviews (teacher term only)
    seed: int = 13  # the data's: samples, validation split, benchmark sample, augmentation
    device: str = "auto"
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    vocab: VocabParams = VocabParams()
    teacher: TeacherParams = TeacherParams()
    finetune: FinetuneParams = FinetuneParams()
    student: StudentParams = StudentParams()
    train: TrainParams = TrainParams()
    augment: AugmentParams = AugmentParams()
    baselines: BaselineParams = BaselineParams()

    def __post_init__(self):
        _require(_is_number(self.alpha) and 0 <= self.alpha <= 1, "alpha", self.alpha,
                 "it must be a number in [0, 1]")
        _require(_is_int(self.epochs) and self.epochs >= 1, "epochs", self.epochs,
                 "it must be an integer >= 1")
        for key in ("subset_size", "test_size", "unsup_size"):
            value = getattr(self, key)
            _require(_is_int(value) and value >= 0, key, value,
                     "it must be an integer >= 0 (0 means all reviews)")
        _require(_is_int(self.augment_size) and self.augment_size >= 0, "augment_size",
                 self.augment_size, "it must be an integer >= 0 (0 means no augmented copies)")
        _require(isinstance(self.device, str) and _is_device(self.device), "device", self.device,
                 f"it must be {DEVICE_HELP}")
        _require(_is_number(self.temperature) and self.temperature > 0, "temperature",
                 self.temperature, "it must be a number > 0")
        _require(self.kd_loss in KD_LOSSES, "kd_loss", self.kd_loss,
                 f"it must be one of {', '.join(KD_LOSSES)}")
        _require(isinstance(self.use_unsup, bool), "use_unsup", self.use_unsup,
                 "it must be true or false")
        _require(_is_int(self.seed), "seed", self.seed, "it must be an integer")
        sizes = self.kernel_sizes
        _require(isinstance(sizes, (list, tuple)) and all(_is_int(k) and k >= 1 for k in sizes),
                 "kernel_sizes", sizes, "it must be a list of integers >= 1")
        _require(len(sizes) > 0 or self.student.ngram_order > 0, "kernel_sizes", sizes,
                 "it must be a non-empty list unless student.ngram_order > 0 "
                 "(the n-gram branch alone)")
        _require(max(sizes, default=1) <= self.vocab.max_len, "kernel_sizes", sizes,
                 f"no kernel may be wider than vocab.max_len = {self.vocab.max_len}")
        object.__setattr__(self, "kernel_sizes", tuple(sizes))
        _require(self.student.init_embeddings != "teacher" or self.vocab.source == "teacher",
                 "student.init_embeddings", self.student.init_embeddings,
                 "teacher embeddings need the teacher's word pieces: set vocab.source = teacher")

    def to_dict(self) -> dict:
        """The params as plain nested dicts, as they would be written to YAML."""
        return dataclasses.asdict(self)


_SECTIONS = {
    "data": DataParams,
    "prepare": PrepareParams,
    "vocab": VocabParams,
    "teacher": TeacherParams,
    "finetune": FinetuneParams,
    "student": StudentParams,
    "train": TrainParams,
    "augment": AugmentParams,
    "baselines": BaselineParams,
}


def _build(cls, raw, where: str):
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: `{where}` must be a mapping, got {raw!r}")
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        prefix = f"{where}." if where != "top level" else ""
        raise ParamsError(f"params.yaml: unknown key(s) {', '.join(prefix + k for k in unknown)};"
                          f" allowed: {', '.join(sorted(known))}")
    return raw


def parse_params(raw) -> Params:
    """Validate already-loaded YAML content.

    Raises:
        ParamsError: a section is not a mapping, a key is unknown, or a value is out of range.
    """
    raw = dict(_build(Params, {} if raw is None else raw, "top level"))
    for name, cls in _SECTIONS.items():
        raw[name] = cls(**_build(cls, raw.get(name, {}), name))
    try:
        return Params(**raw)
    except TypeError as error:  # a value of the wrong shape that the checks could not compare
        raise ParamsError(f"params.yaml: {error}") from None


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with YAML 1.2's exponent floats.

    `dvc exp run -S train.lr=0.00005` writes `lr: 5e-05`, which YAML 1.1 (PyYAML) reads as a
    string and DVC (YAML 1.2) as a number; both must read it as the number.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate `params.yaml`.

    Raises:
        ParamsError: the file is missing, is not valid YAML, or holds a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run the stages from the repository root")
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader: no objects
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from None
    return parse_params(raw)
