"""One typed, validated view of `params.yaml`: pydantic models, strict, unknown keys refused.

Every stage calls `load_params()` first, so a bad value stops the pipeline before any work
starts, with a message that names the key, the value and what is allowed. The defaults are
`params.yaml`'s values; what a key means is its comment there, once (tools/params_doc.py writes
docs/params.md from both).
"""

import re
from functools import reduce
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from kd.errors import PipelineError

KD_LOSSES = ("bce", "mse")  # kd.student.losses computes them; named here: params needn't import it
DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"


class ParamsError(PipelineError, ValueError):
    """`params.yaml` is missing, malformed, or holds a value out of range."""


def _kind(annotation, allowed: str, **bounds):
    """A value type, and `allowed`: the end of the message that refuses a value."""
    return Annotated[annotation, Field(json_schema_extra={"allowed": allowed}, **bounds)]


def _one_of(*names: str):
    return _kind(Literal[names], f"it must be one of {', '.join(names)}")


# Strict: an int stays an int and a float a float, as written (checkpoints embed `to_dict()`).
Number = int | float
Int1 = _kind(int, "it must be an integer >= 1", ge=1)
Int3 = _kind(int, "it must be an integer >= 3", ge=3)
Reviews = _kind(int, "it must be an integer >= 0 (0 means all reviews)", ge=0)
Threads = _kind(int, "it must be an integer >= 0 (0 means every core)", ge=0)
Seed = _kind(int, "it must be an integer")
Flag = _kind(bool, "it must be true or false")
Positive = _kind(Number, "it must be a number > 0", gt=0)
Share = _kind(Number, "it must be a number in [0, 1]", ge=0, le=1)
Dropout = _kind(Number, "it must be a number in [0, 1)", ge=0, lt=1)
Folder = _kind(str, "it must be a folder path", min_length=1)
Name = _kind(str, "it must be a name (a string)")
Column = _kind(str, "it must be a column name", min_length=1)
Precision = _one_of("auto", "bf16", "fp32")
Grid = _kind(tuple[Annotated[Number, Field(gt=0)], ...],
             "it must be a non-empty list of numbers > 0", strict=False, min_length=1)


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class DataParams(_Section):
    """Where `prepare` takes the reviews from (kd.data.sources); the stages after it never know."""

    source: _one_of("imdb", "files") = "imdb"
    path: _kind(str, "it must be a path: the IMDb tarball, or the folder that holds your files",
                min_length=1) = "data/raw/aclImdb_v1.tar.gz"
    train: Name = ""
    test: Name = ""
    unlabelled: Name = ""
    text_column: Column = "text"
    label_column: Column = "label"
    positive_label: _kind(str | int, 'it must be a label value (a string or an integer), or "" '
                          "to find it by name") = ""
    max_overlap: _kind(Number, "it must be a share in [0, 1]", ge=0, le=1) = 0.02
    imdb_label: _one_of("sentiment", "rating") = "sentiment"


class PrepareParams(_Section):
    val_fraction: _kind(Number, "it must be a number in (0, 1)", gt=0, lt=1) = 0.1


class VocabParams(_Section):
    source: _kind(Literal["words", "teacher"], "it must be words or teacher") = "teacher"
    max_size: _kind(int, "it must be an integer >= 3 (two special tokens and one word)",
                    ge=3) = 30000
    min_freq: Int1 = 2
    max_len: Int1 = 4096


class TeacherParams(_Section):
    path: Folder = "models/teacher"
    max_len: Int3 = 256
    head_tokens: _kind(int, "it must be an integer in [0, teacher.max_len - 2]") = 96
    batch_size: Int1 = 64
    precision: Precision = "auto"
    engine: _one_of("local", "ray") = "local"
    workers: Int1 = 1


class FinetuneParams(_Section):
    """Fine-tuning a teacher from a base encoder (teachers/dvc.yaml); the shipped teacher's
    recipe. Truncation is the teacher's own: `teacher.max_len` and `teacher.head_tokens`."""

    base: Folder = "models/base-encoder"
    epochs: Int1 = 2
    lr: Positive = 8e-5
    warmup: _kind(Number, "it must be a share of the steps in [0, 1)", ge=0, lt=1) = 0.06
    weight_decay: _kind(Number, "it must be a number >= 0", ge=0) = 0.01
    batch_size: Int1 = 32
    max_grad_norm: _kind(Number, "it must be a number >= 0 (0 means no clipping)", ge=0) = 1.0
    hidden_dropout: Dropout = 0.1
    attention_dropout: Dropout = 0.0
    precision: Precision = "auto"
    seed: Seed = 13
    threads: Threads = 0
    save_every: _kind(int, "it must be an integer >= 0 (0: a state at epoch ends only)",
                      ge=0) = 200


class StudentParams(_Section):
    arch: _one_of("textcnn", "bilstm", "transformer") = "textcnn"
    embed_dim: Int1 = 64
    num_filters: Int1 = 64
    ngram_order: _kind(int, "it must be an integer in [0, 5] (0: no n-gram branch)",
                       ge=0, le=5) = 3
    ngram_buckets: Int1 = 1 << 22
    hidden_size: Int1 = 128
    layers: Int1 = 2
    max_len: Int3 = 256
    head_tokens: _kind(int, "it must be an integer in [0, student.max_len - 2]") = 96
    dropout: Dropout = 0.5
    init_embeddings: _kind(Literal["random", "teacher"], "it must be random or teacher") = "teacher"
    members: Int1 = 1


class TrainParams(_Section):
    batch_size: Int1 = 64
    lr: Positive = 0.001
    precision: Precision = "auto"
    calibrate: Flag = True
    seed: Seed = 13
    threads: Threads = 0
    adversarial: _kind(Number, "it must be a number >= 0 (0 means off)", ge=0) = 0.0
    ngram_lr: _kind(Number, "it must be a number >= 0 (0 means train.lr)", ge=0) = 0.01


class AugmentParams(_Section):
    mask_prob: Share = 0.1
    window_prob: Share = 0.25
    window_min: _kind(Number, "it must be a number in (0, 1]", gt=0, le=1) = 0.3


class BaselineParams(_Section):
    tfidf_c_grid: Grid = (1, 4, 16)
    tfidf_min_df: Int1 = 2
    nb_c_grid: Grid = (0.1, 0.3, 1)
    nb_ngram_max: _kind(int, "it must be an integer in [1, 5]", ge=1, le=5) = 3


class Params(_Section):
    alpha: Share = 0.5
    epochs: Int1 = 5
    subset_size: Reviews = 0
    test_size: Reviews = 0
    unsup_size: Reviews = 0
    augment_size: _kind(int, "it must be an integer >= 0 (0 means no augmented copies)",
                        ge=0) = 0
    kernel_sizes: _kind(tuple[Annotated[int, Field(ge=1)], ...],
                        "it must be a list of integers >= 1", strict=False) = (3,)
    temperature: Positive = 2.0
    kd_loss: _one_of(*KD_LOSSES) = "bce"
    use_unsup: Flag = True
    seed: Seed = 13
    device: _kind(str, f"it must be {DEVICE_HELP}",
                  pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$") = "auto"
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    vocab: VocabParams = VocabParams()
    teacher: TeacherParams = TeacherParams()
    finetune: FinetuneParams = FinetuneParams()
    student: StudentParams = StudentParams()
    train: TrainParams = TrainParams()
    augment: AugmentParams = AugmentParams()
    baselines: BaselineParams = BaselineParams()

    @model_validator(mode="after")
    def _check_rules(self):
        """The rules across keys, once every value has its type and range: the first broken."""
        for key, broken, allowed in cross_key_rules(self):
            if broken:
                value = reduce(dict.get, key.split("."), self.to_dict())
                value = list(value) if isinstance(value, tuple) else value  # as YAML wrote it
                raise PydanticCustomError("params", "{allowed}",
                                          {"key": key, "value": value, "allowed": allowed})
        return self

    def to_dict(self) -> dict:
        """The params as plain nested dicts, as they would be written to YAML."""
        return self.model_dump()


SECTIONS = {name: field.annotation for name, field in Params.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}


def cross_key_rules(params: Params):
    """Yield (key, broken, what is allowed) for each rule that ties keys together; `Params`
    refuses the first broken one, and docs/params.md lists them."""
    data, student, vocab, sizes = params.data, params.student, params.vocab, params.kernel_sizes
    for key in ("train", "test", "unlabelled"):
        name = getattr(data, key)
        yield (f"data.{key}", Path(name).is_absolute() or ".." in Path(name).parts, "it must be a "
               "name inside data.path (the folder DVC tracks), such as train.csv; put the file in "
               "that folder")
        if key != "unlabelled":
            yield (f"data.{key}", data.source == "files" and name == "", "data.source = files "
                   "needs it: the name of a file or save_to_disk folder inside data.path")
    yield ("data.imdb_label", data.source != "imdb" and data.imdb_label != "sentiment",
           "it applies to data.source = imdb only (your files' labels are data.label_column): "
           "leave it sentiment")
    yield ("data.label_column", data.text_column == data.label_column,
           "it must differ from data.text_column")
    yield ("teacher.workers", params.teacher.engine != "ray" and params.teacher.workers != 1,
           "the local engine runs one worker: set teacher.engine = ray for more")
    for name in ("teacher", "student"):
        section = getattr(params, name)
        yield (f"{name}.head_tokens", not 0 <= section.head_tokens <= section.max_len - 2,
               f"it must be an integer in [0, {name}.max_len - 2 = {section.max_len - 2}]")
    yield ("student.init_embeddings", student.arch == "transformer"
           and student.init_embeddings != "teacher",
           "the transformer student is cut from the teacher: it must be teacher")
    yield ("kernel_sizes", not sizes and student.ngram_order == 0, "it must be a non-empty list "
           "unless student.ngram_order > 0 (the n-gram branch alone)")
    yield ("kernel_sizes", max(sizes, default=1) > vocab.max_len,
           f"no kernel may be wider than vocab.max_len = {vocab.max_len}")
    yield ("student.init_embeddings", student.init_embeddings == "teacher"
           and vocab.source != "teacher",
           "teacher embeddings need the teacher's word pieces: set vocab.source = teacher")


def _sentence(error: dict, raw: dict) -> str:
    """One pydantic error as a sentence that names the key, the value and what is allowed."""
    loc = tuple(part for part in error["loc"] if isinstance(part, str))  # no list indices
    names = loc[:2] if loc and loc[0] in SECTIONS else loc[:1]  # no union members ("int")
    model = SECTIONS[names[0]] if len(names) == 2 else Params
    if error["type"] == "params":
        return f"`{error['ctx']['key']}` = {error['ctx']['value']!r} is not allowed; {error['msg']}"
    if error["type"] == "model_type":
        return f"`{names[0]}` must be a mapping, got {error['input']!r}"
    if error["type"] == "extra_forbidden":
        return f"unknown key(s) {'.'.join(names)}; allowed: {', '.join(sorted(model.model_fields))}"
    value = error["input"]
    if any(isinstance(part, int) for part in error["loc"]):  # an item: the message shows its list
        value = raw[names[0]][names[1]] if len(names) == 2 else raw[names[0]]
    allowed = model.model_fields[names[-1]].json_schema_extra["allowed"]
    return f"`{'.'.join(names)}` = {value!r} is not allowed; {allowed}"


def _rank(error: dict) -> tuple[int, int]:
    """The order errors are told in: unknown top-level keys, then the sections that are not
    mappings or hold unknown keys (in the file's order), then the values."""
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
        return 0, 0
    if error["type"] in ("model_type", "extra_forbidden"):
        return 1, list(Params.model_fields).index(error["loc"][0])
    return 2, 0


def parse_params(raw) -> Params:
    """Validate already-loaded YAML content.

    Raises:
        ParamsError: a section is not a mapping, a key is unknown, or a value is out of range.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: `top level` must be a mapping, got {raw!r}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        errors = error.errors()
    first = min(errors, key=_rank)
    message = _sentence(first, raw)
    if first["type"] == "extra_forbidden":  # with every unknown key beside it
        unknown = [".".join(e["loc"]) for e in errors
                   if e["type"] == "extra_forbidden" and e["loc"][:-1] == first["loc"][:-1]]
        message = message.replace(".".join(first["loc"]), ", ".join(unknown), 1)
    raise ParamsError(f"params.yaml: {message}")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with YAML 1.2's exponent floats: `dvc exp run -S train.lr=0.00005` writes
    `lr: 5e-05`, a string to YAML 1.1 (PyYAML) and a number to DVC (YAML 1.2)."""


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
