"""The frozen teacher: load it from local files, score reviews, and save/check its soft labels.

Scoring is split so that its output never depends on what runs it: `plan_batches` tokenizes
and batches reviews on the driver (length-sorted, padded), `score_batches` runs the teacher
over whole planned batches (in this process, or inside a Ray actor: `kd.teacher.engines`), and
`assemble` puts the logits back in the reviews' order. `score_split` streams a prepared split
through them chunk by chunk, so memory does not grow with the split.

Soft labels are one Parquet file per split (`id`, `teacher_logits` as [negative, positive];
with K > 2 labels, K logits in the data's label order: `match_teacher_labels`),
in the prepared split's order, with metadata in the file itself: which teacher (sha256 of its
weights), tokenizer, max length, truncation, and the fingerprint of the prepared split it
scored. They are written to a temporary file and renamed, so a failed run leaves none.
`load_soft_labels` refuses a file whose metadata does not match what the caller expects.
"""

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from kd.device import autocast
from kd.errors import PipelineError
from kd.text import Encoder

_META_KEY = b"kd.soft_labels"
# Reviews read, planned and scored at a time by `score_split`: memory follows this, not the
# split's size (~200 MB for the texts and word pieces of a chunk). Batches are length-sorted
# within a chunk, so it decides the logits' last bits: every IMDb split (50,000 at most) is
# one chunk, planned as when a split was scored at once, so the soft labels keep their bytes.
# Each chunk is one engine call: a Ray actor pool starts (and loads the teacher) once per call.
CHUNK_REVIEWS = 65536
_ENCODE_REVIEWS = 1024  # reviews tokenized per call: untruncated encodings are large
_SOFT_LABEL_SCHEMA = pa.schema([("id", pa.string()),
                                ("teacher_logits", pa.list_(pa.float32(), 2))])


def _soft_label_schema(width: int) -> pa.Schema:
    """Two labels: the schema soft labels always had; K > 2: K logits a review."""
    if width == 2:
        return _SOFT_LABEL_SCHEMA
    return pa.schema([("id", pa.string()), ("teacher_logits", pa.list_(pa.float32(), width))])


class TeacherError(PipelineError):
    """The teacher folder or its soft labels are missing, wrong, or stale."""


def head_tail(ids: list[int], head: int, budget: int) -> list[int]:
    """Keep the first `head` and the last `budget - head` ids of a sequence longer than `budget`.

    Sun et al. (2019) found head+tail truncation the best way to fit IMDb reviews into BERT.
    """
    if len(ids) <= budget:
        return ids
    return ids[:head] + ids[len(ids) - (budget - head):]


def _weights_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def teacher_sha256(path: str | Path) -> str:
    """sha256 over the teacher's safetensors weights: the teacher's identity in every artifact."""
    digest = hashlib.sha256()
    for weights in _weights_files(Path(path)):
        with open(weights, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_teacher(path: str | Path, num_labels: int = 2):
    """Check that `path` holds a `num_labels`-label sequence classifier with safetensors
    weights (2 unless the data has K > 2 labels: then see `match_teacher_labels` too).

    Returns:
        The model's `transformers` config.

    Raises:
        TeacherError: the folder is missing, is not a Hugging Face checkpoint, is not a
            `num_labels`-label sequence classifier, or has no safetensors weights.
    """
    from transformers import AutoConfig

    path = Path(path)
    if not path.is_dir():
        raise TeacherError(f"teacher folder {path} not found: fetch it with `dvc pull`, "
                           "or set teacher.path in params.yaml to a local checkpoint folder")
    if not (path / "config.json").is_file():
        raise TeacherError(f"{path} is not a Hugging Face checkpoint: it has no config.json")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise TeacherError(f"{path} is not a sequence classifier (architectures: {architectures});"
                           " the teacher must be an *ForSequenceClassification checkpoint")
    if num_labels == 2 and config.num_labels != 2:
        raise TeacherError(f"{path} has {config.num_labels} labels; the teacher must have 2 "
                           "(negative, positive)")
    if num_labels != 2 and config.num_labels != num_labels:
        raise TeacherError(
            f"{path} has {config.num_labels} labels ({', '.join(map(repr, _names(config)))}); "
            f"the data has {num_labels}: the teacher must have the data's labels")
    if not _weights_files(path):
        raise TeacherError(f"{path} has no *.safetensors weights; convert the checkpoint with "
                           "`model.save_pretrained(path)` (we never unpickle weights)")
    return config


def _names(config) -> list[str]:
    """The teacher's label names in output order (`id2label`)."""
    return [str(config.id2label[index]) for index in range(config.num_labels)]


def match_teacher_labels(config, data_labels: Sequence[str], path: str | Path) -> list[int]:
    """For K > 2 labels: which teacher output is each of the data's labels, matched by name
    (`id2label`; case and surrounding spaces ignored), so soft labels and a seeded student
    follow the data's label order whatever the teacher's.

    Args:
        config: the teacher's config (`check_teacher`).
        data_labels: the names of labels 0 .. K-1 (`kd.data.labels.read_labels`).

    Returns:
        rows: rows[k] is the teacher output of the data's label k.

    Raises:
        TeacherError: another number of labels, or names that do not match: both sets are
            named, and what each side lacks.
    """
    teacher = _names(config)
    if len(teacher) != len(data_labels):
        raise TeacherError(
            f"{path} has {len(teacher)} labels ({', '.join(map(repr, teacher))}); the data has "
            f"{len(data_labels)} ({', '.join(map(repr, data_labels))}): the teacher must have "
            "the data's labels")
    key = {name.strip().lower(): index for index, name in enumerate(teacher)}
    wanted = [name.strip().lower() for name in data_labels]
    if len(key) != len(teacher) or set(key) != set(wanted):
        lacking = [name for name in data_labels if name.strip().lower() not in key]
        extra = [name for name in teacher if name.strip().lower() not in set(wanted)]
        raise TeacherError(
            f"{path}'s labels do not match the data's by name: the teacher has "
            f"{{{', '.join(map(repr, teacher))}}}, the data {{{', '.join(map(repr, data_labels))}}}"
            f" (the teacher lacks {', '.join(map(repr, lacking)) or 'none'}; the data lacks "
            f"{', '.join(map(repr, extra)) or 'none'}). Name the teacher's outputs as the data "
            "does (id2label in its config.json), or choose a teacher made for these labels")
    return [key[name] for name in wanted]


def positive_index(config) -> int:
    """Which of the two outputs means "positive": a label named pos*, else index 1."""
    for index, name in config.id2label.items():
        if str(name).lower().startswith("pos"):
            return int(index)
    return 1


def load_teacher_model(path: str | Path):
    """The checked teacher model from local files only, in eval mode.

    Raises:
        TeacherError: see `check_teacher`.
    """
    from transformers import AutoModelForSequenceClassification

    check_teacher(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, local_files_only=True, use_safetensors=True)
    return model.eval()


def load_teacher_tokenizer(path: str | Path):
    """The teacher's tokenizer and its identity for artifacts, without loading the model.

    Returns:
        (tokenizer, identity): identity names the teacher's path, weights (sha256),
        architecture, tokenizer class and which output is positive.

    Raises:
        TeacherError: see `check_teacher`.
    """
    from transformers import AutoTokenizer

    config = check_teacher(path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    identity = {
        "teacher_path": str(path),
        "teacher_sha256": teacher_sha256(path),
        "teacher_architecture": config.architectures[0],
        "tokenizer": type(tokenizer).__name__,
        "positive_index": positive_index(config),
    }
    return tokenizer, identity


def load_teacher(path: str | Path):
    """Load the checked teacher and its tokenizer from local files only, in eval mode.

    Returns:
        (model, tokenizer, identity) where identity describes the teacher for artifacts.

    Raises:
        TeacherError: see `check_teacher`.
    """
    tokenizer, identity = load_teacher_tokenizer(path)
    return load_teacher_model(path), tokenizer, identity


def encode_head_tail(tokenizer, texts: list[str], max_len: int,
                     head_tokens: int) -> list[list[int]]:
    """Tokenize reviews for the teacher: head+tail truncation, then [CLS] ... [SEP].

    BERT-family tokenizers name their start and end tokens cls/sep (RoBERTa's <s> and </s> too).
    The word pieces come from `Encoder` (the ids `tokenizer(texts, add_special_tokens=False)`
    gives, faster), over the whole review: the head+tail cut is made here.
    """
    return [[tokenizer.cls_token_id, *head_tail(ids, head_tokens, max_len - 2),
             tokenizer.sep_token_id] for ids in _whole_reviews(tokenizer)(texts)]


@functools.lru_cache(maxsize=4)
def _whole_reviews(tokenizer) -> Encoder:
    """An `Encoder` of a transformers tokenizer's word pieces, uncut (made once per tokenizer)."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    return Encoder(backend)


@dataclass(frozen=True)
class PlannedBatch:
    """One batch of the teacher's, planned on the driver and scored whole, wherever it runs."""

    rows: np.ndarray  # (B,) int64: where its reviews are in the list that was planned
    input_ids: np.ndarray  # (B, L) int32: [CLS] ... [SEP], padded with the pad id to L
    lengths: np.ndarray  # (B,) int32: word pieces of each review before padding


def plan_batches(tokenizer, texts: Sequence[str] | pa.Array | pa.ChunkedArray, max_len: int,
                 head_tokens: int, batch_size: int) -> list[PlannedBatch]:
    """Tokenize reviews (head+tail) and group them into padded batches of similar length.

    Sorting by length (stable) keeps padding, and so time, low. The plan alone decides which
    reviews share a batch and how wide it is, so scoring it anywhere gives the same logits.

    Args:
        texts: a list, or an Arrow column (turned into Python strings a slice at a time).

    Returns:
        Batches of at most `batch_size` reviews, shortest first, covering every review once.
    """
    input_ids = []  # one int32 array per review: a tenth of a list of Python ints
    for start in range(0, len(texts), _ENCODE_REVIEWS):
        part = texts[start:start + _ENCODE_REVIEWS]
        part = part.to_pylist() if isinstance(part, pa.Array | pa.ChunkedArray) else list(part)
        input_ids += [np.asarray(ids, dtype=np.int32)
                      for ids in encode_head_tail(tokenizer, part, max_len, head_tokens)]
    lengths = np.array([len(ids) for ids in input_ids], dtype=np.int32)
    order = np.argsort(lengths, kind="stable")
    pad_id = tokenizer.pad_token_id or 0
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size].astype(np.int64)
        width = int(lengths[rows].max())
        padded = np.full((len(rows), width), pad_id, dtype=np.int32)  # (B, L)
        for i, row in enumerate(rows):
            padded[i, :lengths[row]] = input_ids[row]
        batches.append(PlannedBatch(rows=rows, input_ids=padded, lengths=lengths[rows]))
    return batches


@torch.inference_mode()
def score_batches(model, batches: Iterable[PlannedBatch], positive: int = 1,
                  device: torch.device | None = None, precision: str = "bf16",
                  progress: Callable[[int], object] | None = None,
                  rows: Sequence[int] | None = None) -> list[np.ndarray]:
    """The teacher's logits for each planned batch, batch by batch, as planned.

    This is what every engine runs: the local one in this process, the Ray one in each actor.
    With precision "bf16" the model runs under bf16 autocast (about 3x faster than fp32 on
    AMX cores).

    Args:
        progress: called with the number of reviews after each batch.
        rows: K > 2 labels: the teacher output of each of the data's labels
            (`match_teacher_labels`); None for two labels, ordered by `positive`.

    Returns:
        One float32 array (B, 2) of [negative, positive] logits per batch; (B, K) in the
        data's label order with `rows`.
    """
    device = device or torch.device("cpu")
    outputs = []
    with autocast(device, precision):
        for batch in batches:
            input_ids = torch.from_numpy(batch.input_ids).long()  # (B, L)
            width = input_ids.shape[1]
            lengths = torch.from_numpy(batch.lengths).long()  # (B,)
            attention_mask = (torch.arange(width) < lengths[:, None]).long()  # (B, L)
            output = model(input_ids=input_ids.to(device),
                           attention_mask=attention_mask.to(device))
            logits = output.logits.float().cpu()  # (B, 2)
            if rows is None:
                outputs.append(logits[:, [1 - positive, positive]].numpy())
            else:  # K > 2 labels: the data's order
                outputs.append(logits[:, list(rows)].numpy())
            if progress is not None:
                progress(len(batch.rows))
    return outputs


def assemble(batches: list[PlannedBatch], batch_logits: list[np.ndarray],
             reviews: int, width: int = 2) -> np.ndarray:
    """Put each batch's logits back at its reviews' places.

    Returns:
        float32 array (reviews, width): width 2, or K for K > 2 labels.

    Raises:
        TeacherError: a batch's logits are missing or of the wrong shape (an engine lost one).
    """
    if len(batch_logits) != len(batches):
        raise TeacherError(f"the engine returned logits for {len(batch_logits)} batches of "
                           f"{len(batches)}; no soft labels were written")
    logits = np.zeros((reviews, width), dtype=np.float32)
    for batch, values in zip(batches, batch_logits, strict=True):
        if values.shape != (len(batch.rows), width):
            raise TeacherError(f"the engine returned logits of shape {values.shape} for a "
                               f"batch of {len(batch.rows)} reviews")
        logits[batch.rows] = values
    return logits


def score(model, tokenizer, texts: list[str], max_len: int, head_tokens: int, batch_size: int,
          positive: int = 1, desc: str = "teacher", device: torch.device | None = None,
          precision: str = "bf16") -> np.ndarray:
    """The teacher's logits for every review, in the order given, in this process.

    Plans, scores and assembles at once (all reviews in one plan): for the benchmark and for
    checks. The stage streams a split through `score_split` instead.

    Returns:
        float32 array (N, 2): [negative, positive] logits.
    """
    batches = plan_batches(tokenizer, texts, max_len, head_tokens, batch_size)
    with tqdm(total=len(texts), desc=desc, unit="review", mininterval=5) as progress:
        batch_logits = score_batches(model, batches, positive, device, precision,
                                     progress=progress.update)
    return assemble(batches, batch_logits, len(texts))


def iter_chunks(path: str | Path, columns: list[str], size: int) -> Iterator[pa.Table]:
    """Rows [0, size), [size, 2 size), ... of a Parquet file, read one chunk at a time.

    The chunks do not depend on how the file was written (its row groups), only on its rows.
    Nothing here keeps a chunk once it is handed out, so the caller can free it.
    """
    pending, held = [], 0
    for record_batch in pq.ParquetFile(path).iter_batches(batch_size=min(size, 1024),
                                                          columns=columns):
        pending.append(record_batch)
        held += record_batch.num_rows
        while held >= size:
            table = pa.Table.from_batches(pending)
            pending, held = table.slice(size).to_batches(), held - size
            chunk = [table.slice(0, size)]
            del table
            yield chunk.pop()
    if held:
        yield pa.Table.from_batches(pending)


def write_soft_labels(path: str | Path, chunks: Iterable[tuple[list[str], np.ndarray]],
                      meta: dict, width: int = 2) -> int:
    """Write soft labels chunk by chunk, keyed by review id, with `meta` in the file itself.

    The file is written under a temporary name in the same folder and renamed when complete:
    if `chunks` raises (a failed engine, an interrupted run), no soft-label file is left.

    Args:
        chunks: (review ids, float32 (N, width) logits) pairs, in the order to write them.
        width: logits a review: 2, or K for K > 2 labels.

    Returns:
        The number of reviews written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = _soft_label_schema(width).with_metadata(
        {_META_KEY: json.dumps(meta, sort_keys=True)})
    # Beside the file (so the rename is atomic), named for this process; created as any file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    written = 0
    try:
        with pq.ParquetWriter(temporary, schema) as writer:
            for ids, teacher_logits in chunks:
                if len(ids) == 0:
                    continue
                teacher_logits = np.ascontiguousarray(teacher_logits, dtype=np.float32)
                writer.write_table(pa.table({
                    "id": pa.array(ids, pa.string()),
                    "teacher_logits": pa.FixedSizeListArray.from_arrays(
                        pa.array(teacher_logits.reshape(-1)), width),
                }, schema=schema))
                written += len(teacher_logits)
            if written == 0:  # one empty row group, as a whole-table write gives
                writer.write_table(schema.empty_table())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return written


def save_soft_labels(path: str | Path, ids: list[str], teacher_logits: np.ndarray,
                     meta: dict) -> None:
    """Write soft labels (N, 2) or, for K > 2 labels, (N, K) keyed by review id, with `meta`
    stored in the file itself."""
    width = np.shape(teacher_logits)[1] if np.ndim(teacher_logits) == 2 else 2
    write_soft_labels(path, [(ids, teacher_logits)], meta, width=width)


def load_soft_labels(path: str | Path, ids: list[str], expected: dict) -> np.ndarray:
    """Read soft labels and check they belong to this data and this setup.

    Args:
        path: a file written by `save_soft_labels`.
        ids: the review ids of the prepared split, in the order wanted.
        expected: metadata values that must match (e.g. `data_fingerprint`).

    Returns:
        float32 array (N, 2) of [negative, positive] teacher logits aligned with `ids`; (N, K)
        for a K > 2 label file.

    Raises:
        TeacherError: missing file, no metadata, a mismatched value, or a review without logits.
    """
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"{path} not found: run `dvc repro teacher_infer` first")
    table = pq.read_table(path)
    raw_meta = (table.schema.metadata or {}).get(_META_KEY)
    if raw_meta is None:
        raise TeacherError(f"{path} has no soft-label metadata: it was not written by "
                           "teacher_infer; run `dvc repro teacher_infer`")
    meta = json.loads(raw_meta)
    for key, value in expected.items():
        if meta.get(key) != value:
            raise TeacherError(
                f"{path} is stale: its {key} is {meta.get(key)!r} but the prepared data needs "
                f"{value!r}; rescore with `dvc repro teacher_infer`")
    row_of = {review_id: row for row, review_id in enumerate(table.column("id").to_pylist())}
    missing = [review_id for review_id in ids if review_id not in row_of]
    if missing:
        raise TeacherError(f"{path} has no teacher logits for {len(missing)} review(s), e.g. "
                           f"{missing[0]!r}; rescore with `dvc repro teacher_infer`")
    # (N, 2) even for an empty split (own data without an unlabelled file); (N, K) for K > 2.
    width = table.schema.field("teacher_logits").type.list_size
    all_logits = np.asarray(table.column("teacher_logits").to_pylist(),
                            dtype=np.float32).reshape(-1, width)
    return all_logits[[row_of[review_id] for review_id in ids]]


def read_soft_label_meta(path: str | Path) -> dict:
    """The metadata stored in a soft-label file."""
    return json.loads(pq.read_schema(path).metadata[_META_KEY])


def score_split(split_path: str | Path, out_path: str | Path, engine, tokenizer, *,
                max_len: int, head_tokens: int, batch_size: int, meta: dict,
                chunk_reviews: int = CHUNK_REVIEWS, desc: str = "teacher") -> int:
    """Score a prepared split with `engine` and write its soft labels, a chunk at a time.

    Each chunk of `chunk_reviews` reviews is planned here (`plan_batches`), scored by the
    engine in one call (`engine.score(batches, progress)` returns one (B, 2) array per batch,
    whoever ran it), put back in order and appended to the soft-label file. Memory holds one
    chunk, whatever the split's size, and the file is the same for every engine and worker
    count.

    Returns:
        The number of reviews scored.

    Raises:
        TeacherError, PipelineError: from the engine; the soft-label file is then not written.
    """
    total = pq.ParquetFile(split_path).metadata.num_rows

    def scored_chunks(progress) -> Iterator[tuple[list[str], np.ndarray]]:
        for chunk in iter_chunks(split_path, ["id", "text"], chunk_reviews):
            batches = plan_batches(tokenizer, chunk.column("text"), max_len, head_tokens,
                                   batch_size)
            ids, reviews = chunk.column("id").to_pylist(), chunk.num_rows
            del chunk  # the texts: only the planned word pieces are needed from here
            batch_logits = engine.score(batches, progress=progress.update)
            yield ids, assemble(batches, batch_logits, reviews)

    with tqdm(total=total, desc=desc, unit="review", mininterval=5) as progress:
        return write_soft_labels(out_path, scored_chunks(progress), meta)
