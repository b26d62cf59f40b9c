"""Teacher engines: the local one, and Ray Data on a local 2-CPU cluster (tiny random teacher).

Every Ray scoring call starts an actor pool (~10 s on a busy 2-core machine): the Ray tests
share one cluster and keep to one call each where they can.
"""

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from helpers import make_review
from kd.device import bf16_supported
from kd.errors import PipelineError
from kd.teacher.engines import LocalEngine, RayEngine, TeacherActor, connect_ray
from kd.teacher.scoring import (
    TeacherError,
    assemble,
    load_soft_labels,
    load_teacher,
    plan_batches,
    read_soft_label_meta,
    score,
    score_split,
)

CPU = torch.device("cpu")
SHAPE = {"max_len": 32, "head_tokens": 8, "batch_size": 8}
META = {"data_fingerprint": "abc", "teacher_sha256": "t1"}


def write_split(path: Path, reviews: int, seed: int = 0) -> Path:
    """A prepared-split-shaped Parquet file of synthetic reviews, ids not in sorted order."""
    rng = random.Random(seed)
    pq.write_table(pa.table({
        "id": [f"test/pos/{reviews - number}" for number in range(reviews)],
        "text": [make_review(rng, rng.randint(0, 1)) for _ in range(reviews)],
    }), path)
    return path


@pytest.fixture(scope="module")
def teacher(tiny_teacher):
    model, tokenizer, identity = load_teacher(tiny_teacher)
    return tiny_teacher, model, tokenizer, identity["positive_index"]


def run_split(split: Path, out: Path, engine, tokenizer, **chunking) -> np.ndarray:
    score_split(split, out, engine, tokenizer, meta=META, **SHAPE, **chunking)
    ids = pq.read_table(split, columns=["id"])["id"].to_pylist()
    assert pq.read_table(out, columns=["id"])["id"].to_pylist() == ids  # the split's order
    return load_soft_labels(out, ids, META)


def test_split_scored_in_chunks_equals_one_plan(teacher, tmp_path):
    _, model, tokenizer, positive = teacher
    split = write_split(tmp_path / "test.parquet", 50)
    texts = pq.read_table(split)["text"].to_pylist()
    engine = LocalEngine(model, positive, CPU, "fp32")
    whole = score(model, tokenizer, texts, **SHAPE, positive=positive, precision="fp32")
    one_chunk = run_split(split, tmp_path / "one.parquet", engine, tokenizer, chunk_reviews=64)
    np.testing.assert_array_equal(one_chunk, whole)  # one chunk: the same plan as `score`
    chunked = run_split(split, tmp_path / "chunked.parquet", engine, tokenizer,
                        chunk_reviews=16)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)  # other batches, same reviews
    assert read_soft_label_meta(tmp_path / "chunked.parquet") == META
    (tmp_path / "plain").touch()  # the temporary name does not change the file's mode
    assert (tmp_path / "chunked.parquet").stat().st_mode == (tmp_path / "plain").stat().st_mode
    assert pq.ParquetFile(tmp_path / "chunked.parquet").metadata.num_row_groups == 4


def test_a_failing_engine_leaves_no_soft_labels(teacher, tmp_path):
    _, model, tokenizer, positive = teacher
    split = write_split(tmp_path / "test.parquet", 30)
    local = LocalEngine(model, positive, CPU, "fp32")

    class FailsSecondCall:
        calls = 0

        def score(self, batches, progress=None):
            self.calls += 1
            if self.calls == 2:
                raise PipelineError("worker lost")
            return local.score(batches, progress)

    out = tmp_path / "teacher" / "test.parquet"
    with pytest.raises(PipelineError, match="worker lost"):
        score_split(split, out, FailsSecondCall(), tokenizer, meta=META, **SHAPE,
                    chunk_reviews=10)
    assert list(out.parent.iterdir()) == []  # neither the file nor its temporary

    class LosesABatch:
        def score(self, batches, progress=None):
            return local.score(batches, progress)[:-1]

    with pytest.raises(TeacherError, match="returned logits for 3 batches of 4"):
        score_split(split, out, LosesABatch(), tokenizer, meta=META, **SHAPE)
    assert list(out.parent.iterdir()) == []


def test_the_local_engine_does_not_import_ray(tiny_teacher, tmp_path):
    split = write_split(tmp_path / "test.parquet", 10)
    code = f"""
import sys, torch
from kd.teacher.engines import open_engine
from kd.teacher.scoring import load_teacher_tokenizer, score_split
tokenizer, identity = load_teacher_tokenizer({str(tiny_teacher)!r})
with open_engine("local", 1, {str(tiny_teacher)!r}, 1, torch.device("cpu"), "fp32") as engine:
    score_split({str(split)!r}, {str(tmp_path / "out.parquet")!r}, engine, tokenizer,
                max_len=32, head_tokens=8, batch_size=8, meta={{}})
assert not [name for name in sys.modules if name == "ray" or name.startswith("ray.")]
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.parquet").is_file()


def test_ray_not_installed_says_how_to_install(monkeypatch, tiny_teacher):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(PipelineError, match=r"Ray is not installed .*pip install -r "
                                            r"requirements-ray.txt"):
        RayEngine(tiny_teacher, 1, CPU, "fp32", workers=2).__enter__()


def test_a_ray_address_that_does_not_answer_is_reported_quickly(monkeypatch):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(PipelineError, match=rf"RAY_ADDRESS = '127.0.0.1:{port}' does not "
                                            r"answer .*`ray start --head`.*unset RAY_ADDRESS"):
        connect_ray()
    assert time.monotonic() - started < 10
    monkeypatch.setenv("RAY_ADDRESS", "head-node")
    with pytest.raises(PipelineError, match="'head-node' is not an address: use host:port"):
        connect_ray()


# --- On a local Ray cluster: 2 CPUs, so 2 actors at most. ---------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    connect_ray("local", num_cpus=2)
    yield ray
    ray.shutdown()


def test_ray_gives_the_local_soft_labels_byte_for_byte(ray_cluster, teacher, tmp_path):
    """fp32, 2 workers: the same logits and the same file bytes as the local engine (1 worker:
    `test_a_worker_that_dies_is_restarted_and_its_batch_retried`)."""
    path, model, tokenizer, positive = teacher
    split = write_split(tmp_path / "test.parquet", 60)
    # One chunk, one actor pool (chunks are the engine's business only through
    # test_split_scored_in_chunks_equals_one_plan).
    local = run_split(split, tmp_path / "local.parquet",
                      LocalEngine(model, positive, CPU, "fp32"), tokenizer)
    with RayEngine(path, positive, CPU, "fp32", workers=2) as engine:
        on_ray = run_split(split, tmp_path / "ray.parquet", engine, tokenizer)
        assert engine.scoring_seconds > 0
    np.testing.assert_array_equal(on_ray, local)
    assert (tmp_path / "ray.parquet").read_bytes() == (tmp_path / "local.parquet").read_bytes()


@pytest.mark.skipif(not bf16_supported(CPU), reason="this CPU has no native bf16")
def test_ray_in_bf16_is_within_tolerance_of_local(ray_cluster, teacher):
    """bf16 autocast: equal here (one thread per actor and two locally give the same bits on
    this CPU), but only promised within 1e-2, the bf16 rounding of logits of size ~1."""
    path, model, tokenizer, positive = teacher
    rng = random.Random(1)
    batches = plan_batches(tokenizer, [make_review(rng, 1) for _ in range(40)], **SHAPE)
    local = LocalEngine(model, positive, CPU, "bf16").score(batches)
    counted = []
    with RayEngine(path, positive, CPU, "bf16", workers=2) as engine:
        on_ray = engine.score(batches, progress=counted.append)
    assert sorted(counted) == sorted(len(batch.rows) for batch in batches)  # batch by batch
    np.testing.assert_allclose(np.concatenate(on_ray), np.concatenate(local), atol=1e-2)


def test_a_worker_that_dies_is_restarted_and_its_batch_retried(ray_cluster, teacher,
                                                                tmp_path):
    """One worker, killed on its first batch: Ray restarts it, and the logits are still the
    local engine's, bit for bit."""
    path, model, tokenizer, positive = teacher
    marker = tmp_path / "died"

    class DiesOnce(TeacherActor):
        def __call__(self, rows):
            if not marker.exists():
                marker.touch()
                os._exit(1)  # the actor's process dies mid-run, its batch unanswered
            return super().__call__(rows)

    rng = random.Random(2)
    batches = plan_batches(tokenizer, [make_review(rng, 0) for _ in range(24)], **SHAPE)
    with RayEngine(path, positive, CPU, "fp32", workers=1, actor_cls=DiesOnce) as engine:
        on_ray = assemble(batches, engine.score(batches), 24)
    assert marker.exists()
    local = LocalEngine(model, positive, CPU, "fp32").score(batches)
    np.testing.assert_array_equal(on_ray, assemble(batches, local, 24))


def test_a_worker_that_keeps_dying_is_an_error_and_no_file(ray_cluster, teacher, tmp_path):
    path, _, tokenizer, positive = teacher

    class AlwaysDies(TeacherActor):
        def __call__(self, rows):
            os._exit(1)

    split = write_split(tmp_path / "test.parquet", 20)
    out = tmp_path / "teacher" / "test.parquet"
    # Ray reports the dead actor, or replaces it without end and the stall limit stops it.
    with RayEngine(path, positive, CPU, "fp32", workers=1, retries=0, actor_cls=AlwaysDies,
                   stall_s=60) as engine, \
            pytest.raises(PipelineError, match=r"teacher scoring on Ray failed (\(a dead actor "
                                                 r"is restarted .* 0 time\(s\) at most\)|: no "
                                                 r"batch finished in 60 s)"):
        score_split(split, out, engine, tokenizer, meta=META, **SHAPE)
    assert list(out.parent.iterdir()) == []


def test_more_workers_than_the_cluster_has_is_refused(ray_cluster, tiny_teacher):
    with pytest.raises(PipelineError, match=r"`teacher.workers` = 3, but the Ray cluster has "
                                            r"2 CPU\(s\)"):
        RayEngine(tiny_teacher, 1, CPU, "fp32", workers=3).__enter__()
    assert ray_cluster.is_initialized()  # a cluster it did not start is left running
