"""What runs the teacher over planned batches: this process (`local`) or a Ray cluster (`ray`).

Both engines take the batches `kd.teacher.scoring.plan_batches` made on the driver and return
one (B, 2) array of logits per batch, in the batches' order, computed by
`kd.teacher.scoring.score_batches` on whole batches: the soft labels do not depend on the engine
or on the number of workers (same device type and precision).

Ray is an optional install (`pip install -r requirements-ray.txt`) and is imported only when
`teacher.engine` is `ray`. The Ray engine runs Ray Data's `map_batches` over an actor pool:
one actor per CPU slot (cpu) or per GPU (cuda), each holding the teacher, one planned batch
per call. It joins the cluster named by RAY_ADDRESS (or one started with `ray start` on this
machine), else starts a local one for the run.
"""

import contextlib
import logging
import os
import queue
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from kd.errors import PipelineError
from kd.teacher.scoring import PlannedBatch, load_teacher_model, score_batches

RAY_INSTALL = "pip install -r requirements-ray.txt"
RAY_CONNECT_TIMEOUT_S = 5.0  # how long a RAY_ADDRESS may take to answer
RAY_RETRIES = 3  # restarts of a dead actor, and retries of the batch it held
# No batch finished in this long: stop. Ray Data replaces an actor that dies before answering,
# without end, so an actor that always dies would otherwise hang the stage.
RAY_STALL_S = 900.0


def _rows_or_stall(dataset, stall_s: float) -> Iterator[dict]:
    """The dataset's rows as they finish. Raises what the iteration raised, or TimeoutError if
    no row came for `stall_s` seconds (the iteration goes on in a thread, left behind)."""
    rows: queue.Queue = queue.Queue()
    done = object()

    def drain():
        try:
            for row in dataset.iter_rows():
                rows.put(row)
            rows.put(done)
        except Exception as error:  # handed to the caller's thread
            rows.put(error)

    threading.Thread(target=drain, daemon=True).start()
    while True:
        try:
            row = rows.get(timeout=stall_s)
        except queue.Empty:
            raise TimeoutError(f"no batch finished in {stall_s:.0f} s") from None
        if row is done:
            return
        if isinstance(row, Exception):
            raise row
        yield row


class LocalEngine:
    """Scores planned batches in this process, with the teacher it was given."""

    def __init__(self, model, positive: int, device: torch.device, precision: str):
        self.model, self.positive = model.to(device), positive
        self.device, self.precision = device, precision

    def score(self, batches: list[PlannedBatch],
              progress: Callable[[int], object] | None = None) -> list[np.ndarray]:
        """One float32 (B, 2) array of [negative, positive] logits per batch, in order."""
        return score_batches(self.model, batches, self.positive, self.device, self.precision,
                             progress=progress)


def _teacher_files(path: str | Path) -> dict[str, bytes]:
    """What an actor needs to rebuild the teacher: its config and safetensors weights."""
    path = Path(path)
    files = [path / "config.json", *sorted(path.glob("*.safetensors"))]
    return {file.name: file.read_bytes() for file in files}


class TeacherActor:
    """What each Ray actor runs: the teacher, rebuilt once from the files the driver shipped
    (no shared disk needed), scoring one planned batch per call."""

    def __init__(self, teacher_files, positive: int, device_type: str, precision: str):
        import ray
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # one bar per actor would drown the log
        if isinstance(teacher_files, ray.ObjectRef):
            teacher_files = ray.get(teacher_files)
        if device_type == "cpu":
            torch.set_num_threads(1)  # one CPU slot each: the actors are the parallelism
        with tempfile.TemporaryDirectory() as folder:
            for name, content in teacher_files.items():
                (Path(folder) / name).write_bytes(content)
            self.model = load_teacher_model(folder)
        self.device = torch.device(device_type)  # Ray shows each GPU actor its one GPU
        self.model.to(self.device)
        self.positive, self.precision = positive, precision

    def __call__(self, rows):
        """One planned batch (a one-row Arrow table) -> its logits, flattened, and when the
        actor started and finished it (wall clock, seconds)."""
        import pyarrow as pa

        started = time.time()
        row = rows.to_pylist()
        if len(row) != 1:  # Ray must not re-batch the plan
            raise ValueError(f"expected one planned batch per call, got {len(row)}")
        (row,) = row
        lengths = np.asarray(row["lengths"], dtype=np.int32)
        batch = PlannedBatch(
            rows=np.arange(len(lengths)),
            input_ids=np.asarray(row["input_ids"], dtype=np.int32).reshape(len(lengths), -1),
            lengths=lengths)
        (logits,) = score_batches(self.model, [batch], self.positive, self.device,
                                  self.precision)
        return pa.table({"batch": [row["batch"]],
                         "logits": pa.array([logits.reshape(-1)], pa.list_(pa.float32())),
                         "started": [started], "finished": [time.time()]})


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise PipelineError(f"params.yaml: `teacher.engine` = 'ray', but Ray is not installed "
                            f"({error}); install it with `{RAY_INSTALL}`, or set "
                            "teacher.engine = local") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """The host and port of a Ray address (host:port or ray://host:port); None for auto."""
    if address in ("auto", "local"):
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise PipelineError(f"RAY_ADDRESS = {address!r} is not an address: use host:port "
                            "(the head node's GCS port, 6379 by default), ray://host:10001, "
                            "or unset it to start a local Ray instance")
    return host.strip("[]"), int(port)


def connect_ray(address: str | None = None, **init_args) -> None:
    """Join the Ray cluster at `address` (default: RAY_ADDRESS, else one `ray start` left on
    this machine, else a new local one), giving up after RAY_CONNECT_TIMEOUT_S if nothing
    answers there. The job ships this package (`kd`) to the cluster's workers.

    Args:
        init_args: more arguments for `ray.init`, e.g. num_cpus for a new local instance.

    Raises:
        PipelineError: Ray is not installed, or the address does not answer.
    """
    ray = _import_ray()
    address = address if address is not None else os.environ.get("RAY_ADDRESS") or None
    fix = ("start the cluster there (`ray start --head` on that machine), or unset RAY_ADDRESS "
           "to let the stage start a local Ray instance")
    endpoint = _host_port(address) if address else None
    if endpoint is not None:
        try:
            socket.create_connection(endpoint, timeout=RAY_CONNECT_TIMEOUT_S).close()
        except OSError as error:
            raise PipelineError(f"the Ray cluster at RAY_ADDRESS = {address!r} does not answer "
                                f"({error}); {fix}") from None
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"py_modules": [str(Path(__file__).parents[1])]}, **init_args)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise PipelineError(f"cannot join the Ray cluster at {address or 'this machine'!r} "
                            f"({type(error).__name__}: {error}); {fix}") from None


class RayEngine:
    """Scores planned batches on a Ray cluster: Ray Data `map_batches` over an actor pool.

    Use it as a context manager: entering joins (or starts) Ray and ships the teacher to the
    cluster's object store once; leaving shuts down a Ray instance it started itself. Ray
    already running in this process is used as it is (it must ship `kd`: see `connect_ray`).
    """

    def __init__(self, teacher_path: str | Path, positive: int, device: torch.device,
                 precision: str, workers: int, retries: int = RAY_RETRIES,
                 actor_cls: type = TeacherActor, stall_s: float = RAY_STALL_S):
        self.teacher_path, self.positive = teacher_path, positive
        self.device_type, self.precision = device.type, precision
        self.workers, self.retries, self.actor_cls = workers, retries, actor_cls
        self.stall_s = stall_s
        self._started = False
        self._teacher_ref = None
        self.scoring_seconds = 0.0  # of the last call: see `score`

    def __enter__(self) -> "RayEngine":
        ray = _import_ray()
        if self.device_type not in ("cpu", "cuda"):
            raise PipelineError(f"the Ray engine runs actors on cpu or cuda, not "
                                f"{self.device_type}; set device: cpu or teacher.engine = local")
        if not ray.is_initialized():
            connect_ray()
            self._started = True
        try:
            self._check_resources(ray)
            ray.data.DataContext.get_current().enable_progress_bars = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            self._teacher_ref = ray.put(_teacher_files(self.teacher_path))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._teacher_ref = None
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def _check_resources(self, ray) -> None:
        resource = "GPU" if self.device_type == "cuda" else "CPU"
        available = int(ray.cluster_resources().get(resource, 0))
        if available < self.workers:
            raise PipelineError(
                f"params.yaml: `teacher.workers` = {self.workers}, but the Ray cluster has "
                f"{available} {resource}(s) and each actor takes one; lower teacher.workers or "
                "add nodes to the cluster")

    def score(self, batches: list[PlannedBatch],
              progress: Callable[[int], object] | None = None) -> list[np.ndarray]:
        """One float32 (B, 2) array of [negative, positive] logits per batch, in order.

        Raises:
            PipelineError: the cluster failed to score a batch after RAY_RETRIES retries.
        """
        import pyarrow as pa
        import ray

        if not batches:
            return []
        # One row per planned batch and one block per row: Ray hands each batch whole to
        # whichever actor is free, and never merges or splits them.
        blocks = [pa.table({"batch": [index], "input_ids": [batch.input_ids.reshape(-1)],
                            "lengths": [batch.lengths]})
                  for index, batch in enumerate(batches)]
        resources = {"num_gpus": 1} if self.device_type == "cuda" else {"num_cpus": 1}
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for an actor's retries yet; the keyword works.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
            # Fewer batches than actors (a small split) is fine: the spare actors idle.
            warnings.filterwarnings("ignore", message=".*minimum number of concurrent actors")
            dataset = ray.data.from_arrow(blocks).map_batches(
                self.actor_cls, batch_size=1, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=self.workers),
                fn_constructor_args=(self._teacher_ref, self.positive, self.device_type,
                                     self.precision),
                max_restarts=self.retries, max_task_retries=self.retries, **resources)
            results = []
            try:
                for result in _rows_or_stall(dataset, self.stall_s):  # as batches finish
                    results.append(result)
                    if progress is not None:
                        progress(len(batches[result["batch"]].rows))
            except ray.exceptions.RayError as error:  # a dead actor, an error in one
                raise PipelineError(
                    f"teacher scoring on Ray failed (a dead actor is restarted and its batch "
                    f"retried {self.retries} time(s) at most): {type(error).__name__}: "
                    f"{error}; no soft labels were written") from None
            except TimeoutError as error:  # actors that die before answering, replaced forever
                raise PipelineError(
                    f"teacher scoring on Ray failed: {error} (an actor that dies before it "
                    "answers is replaced without end: see the Ray logs); no soft labels were "
                    "written") from None
        batch_logits: list[np.ndarray | None] = [None] * len(batches)
        for result in results:
            batch_logits[result["batch"]] = np.asarray(result["logits"],
                                                       dtype=np.float32).reshape(-1, 2)
        missing = [index for index, logits in enumerate(batch_logits) if logits is None]
        if missing:
            raise PipelineError(f"Ray returned no logits for {len(missing)} of {len(batches)} "
                                "batches; no soft labels were written")
        # From the first batch started to the last finished, on any actor: the scoring time
        # without the actors' start and the teacher's loading (clocks of one cluster).
        self.scoring_seconds = (max(result["finished"] for result in results)
                                - min(result["started"] for result in results))
        return batch_logits


@contextlib.contextmanager
def open_engine(engine: str, workers: int, teacher_path: str | Path, positive: int,
                device: torch.device, precision: str) -> Iterator[LocalEngine | RayEngine]:
    """The engine `teacher.engine` names, ready to score planned batches.

    Raises:
        PipelineError: Ray asked for but not installed or not reachable, or too few slots.
    """
    if engine == "local":
        yield LocalEngine(load_teacher_model(teacher_path), positive, device, precision)
    elif engine == "ray":
        with RayEngine(teacher_path, positive, device, precision, workers) as ray_engine:
            yield ray_engine
    else:
        raise PipelineError(f"unknown teacher.engine {engine!r}; it must be local or ray")
