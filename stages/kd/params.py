"""One typed, validated view of `params.yaml`.

Every stage calls `load_params()` first, so a bad value stops the pipeline before any work
starts, with a message that names the key, the value and what is allowed.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from kd.errors import PipelineError
from kd.losses import KD_LOSSES


class ParamsError(PipelineError, ValueError):
    """`params.yaml` is missing, malformed, or holds a value out of range."""


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ParamsError(f"params.yaml: `{key}` = {value!r} is not allowed; {allowed}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class PrepareParams:
    val_fraction: float = 0.1  # share of the sampled training reviews held out for validation

    def __post_init__(self):
        _require(
            _is_number(self.val_fraction) and 0 < self.val_fraction < 1,
            "prepare.val_fraction", self.val_fraction, "it must be a number in (0, 1)",
        )


@dataclass(frozen=True)
class VocabParams:
    source: str = "words"  # "words": learned from train; "teacher": the teacher's word pieces
    max_size: int = 30000  # words kept, special tokens included
    min_freq: int = 2  # rarer training words map to [UNK]
    max_len: int = 400  # words per review seen by the student

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

    def __post_init__(self):
        _require(isinstance(self.path, str) and self.path != "", "teacher.path", self.path,
                 "it must be a folder path")
        _require(_is_int(self.max_len) and self.max_len >= 3, "teacher.max_len", self.max_len,
                 "it must be an integer >= 3")
        _require(_is_int(self.head_tokens) and 0 <= self.head_tokens <= self.max_len - 2,
                 "teacher.head_tokens", self.head_tokens,
                 f"it must be an integer in [0, teacher.max_len - 2 = {self.max_len - 2}]")
        _require(_is_int(self.batch_size) and self.batch_size >= 1, "teacher.batch_size",
                 self.batch_size, "it must be an integer >= 1")


@dataclass(frozen=True)
class StudentParams:
    embed_dim: int = 300
    num_filters: int = 100  # per kernel size
    dropout: float = 0.5
    init_embeddings: str = "random"  # "teacher": from the teacher's word pieces (PCA if smaller)

    def __post_init__(self):
        _require(_is_int(self.embed_dim) and self.embed_dim >= 1, "student.embed_dim",
                 self.embed_dim, "it must be an integer >= 1")
        _require(_is_int(self.num_filters) and self.num_filters >= 1, "student.num_filters",
                 self.num_filters, "it must be an integer >= 1")
        _require(_is_number(self.dropout) and 0 <= self.dropout < 1, "student.dropout",
                 self.dropout, "it must be a number in [0, 1)")
        _require(self.init_embeddings in ("random", "teacher"), "student.init_embeddings",
                 self.init_embeddings, "it must be random or teacher")


@dataclass(frozen=True)
class TrainParams:
    batch_size: int = 64
    lr: float = 1e-3
    precision: str = "bf16"  # "bf16" autocast (about 2x faster on AMX CPUs) or "fp32"
    calibrate: bool = True  # fit one temperature on validation after training

    def __post_init__(self):
        _require(isinstance(self.calibrate, bool), "train.calibrate", self.calibrate,
                 "it must be true or false")
        _require(self.precision in ("bf16", "fp32"), "train.precision", self.precision,
                 "it must be bf16 or fp32")
        _require(_is_int(self.batch_size) and self.batch_size >= 1, "train.batch_size",
                 self.batch_size, "it must be an integer >= 1")
        _require(_is_number(self.lr) and self.lr > 0, "train.lr", self.lr,
                 "it must be a number > 0")


@dataclass(frozen=True)
class BaselineParams:
    tfidf_c_grid: tuple[float, ...] = (1.0, 4.0, 16.0)  # inverse L2 strengths tried on val
    tfidf_min_df: int = 2  # n-grams in fewer training reviews are dropped

    def __post_init__(self):
        grid = self.tfidf_c_grid
        _require(isinstance(grid, (list, tuple)) and len(grid) > 0
                 and all(_is_number(c) and c > 0 for c in grid),
                 "baselines.tfidf_c_grid", grid, "it must be a non-empty list of numbers > 0")
        _require(_is_int(self.tfidf_min_df) and self.tfidf_min_df >= 1, "baselines.tfidf_min_df",
                 self.tfidf_min_df, "it must be an integer >= 1")
        object.__setattr__(self, "tfidf_c_grid", tuple(grid))


@dataclass(frozen=True)
class Params:
    alpha: float = 0.5  # weight of the label loss; the teacher term gets 1 - alpha
    epochs: int = 5
    subset_size: int = 0  # training reviews to sample; 0 = all
    test_size: int = 0  # test reviews to score; 0 = all
    unsup_size: int = 0  # unlabelled reviews the teacher scores for the transfer set; 0 = all
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    temperature: float = 1.0  # softens teacher and student logits in the teacher term
    kd_loss: str = "bce"  # "bce" on softened probabilities or "mse" on logits
    use_unsup: bool = False  # add the teacher-scored unlabelled reviews (teacher term only)
    seed: int = 13
    prepare: PrepareParams = PrepareParams()
    vocab: VocabParams = VocabParams()
    teacher: TeacherParams = TeacherParams()
    student: StudentParams = StudentParams()
    train: TrainParams = TrainParams()
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
        _require(_is_number(self.temperature) and self.temperature > 0, "temperature",
                 self.temperature, "it must be a number > 0")
        _require(self.kd_loss in KD_LOSSES, "kd_loss", self.kd_loss,
                 f"it must be one of {', '.join(KD_LOSSES)}")
        _require(isinstance(self.use_unsup, bool), "use_unsup", self.use_unsup,
                 "it must be true or false")
        _require(_is_int(self.seed), "seed", self.seed, "it must be an integer")
        sizes = self.kernel_sizes
        _require(isinstance(sizes, (list, tuple)) and len(sizes) > 0
                 and all(_is_int(k) and k >= 1 for k in sizes),
                 "kernel_sizes", sizes, "it must be a non-empty list of integers >= 1")
        _require(max(sizes) <= self.vocab.max_len, "kernel_sizes", sizes,
                 f"no kernel may be wider than vocab.max_len = {self.vocab.max_len}")
        object.__setattr__(self, "kernel_sizes", tuple(sizes))
        _require(self.student.init_embeddings != "teacher" or self.vocab.source == "teacher",
                 "student.init_embeddings", self.student.init_embeddings,
                 "teacher embeddings need the teacher's word pieces: set vocab.source = teacher")

    def to_dict(self) -> dict:
        """The params as plain nested dicts, as they would be written to YAML."""
        return dataclasses.asdict(self)


_SECTIONS = {
    "prepare": PrepareParams,
    "vocab": VocabParams,
    "teacher": TeacherParams,
    "student": StudentParams,
    "train": TrainParams,
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


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate `params.yaml`.

    Raises:
        ParamsError: the file is missing, is not valid YAML, or holds a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run the stages from the repository root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from None
    return parse_params(raw)
