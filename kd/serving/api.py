"""HTTP API for the exported student (FastAPI).

    uvicorn --factory kd.serving.api:create_app --port 8000

Settings come from the environment: KD_EXPORT_DIR (default models/export), KD_FORM (onnx, the
fastest form for single reviews here; int8, 4x smaller; bf16 or torchscript), KD_THREADS (the
model's threads; default: every core, measured best here even with the clients on the same
two cores), KD_MAX_TEXTS (64 texts a request), KD_MAX_CHARS (20000 characters a text),
KD_MAX_QUEUE (texts waiting for the model, 16 requests' worth: 1024; a request that would go
over it is answered 503 at once) and KD_TIMEOUT_S (10: a request not scored within it is
answered 504). The model is loaded once, at start-up, before the port opens; requests that
arrive while it is busy are scored together (`Batcher`).

Endpoints: POST /predict, GET /model (the export's metadata and metrics), GET /health
(liveness: the process answers), GET /ready (readiness: 200 while the queue has room, 503 when
it is full) and GET /metrics (Prometheus text format). Every request the API cannot score is
answered 4xx with a message that names the problem; 503 and 504 say the server is busy.
"""

import asyncio
import gc
import json
import logging
import os
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from kd.serving.runtime import load_student

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1  # what a 503 asks a client to wait: about one queue's worth of scoring


class QueueFull(Exception):
    """The batcher holds as many waiting texts as it may: the request was not queued."""


class ScoringTimeout(Exception):
    """A request was not scored within the batcher's timeout."""


class Batcher:
    """Scores the requests that arrive while the model is busy together, as one batch.

    Under load, single-review requests pile up while the model scores the previous batch; one
    call for all of them costs little more than a call for one (the student's scores do not
    depend on the padding a batch adds). An idle server scores a request at once: there is no
    waiting window. The model runs in a worker thread, so the event loop keeps reading requests.

    The queue is bounded: a request that would take the texts waiting for the model over
    `max_queue` raises `QueueFull` at once, so an overloaded server answers quickly instead of
    letting every caller wait. A request not answered within `timeout_s` raises
    `ScoringTimeout`; if it was still waiting, the model never sees it.
    """

    def __init__(self, predict: Callable[[list[str]], list[dict]], max_texts: int,
                 max_queue: int | None = None, timeout_s: float | None = None,
                 observe_batch: Callable[[int], None] | None = None):
        self.predict = predict
        self.max_texts = max_texts  # texts per model call
        self.max_queue = max_queue  # texts waiting for the model; None: no bound
        self.timeout_s = timeout_s  # seconds a request may wait for its answer; None: forever
        self.observe_batch = observe_batch  # called with the texts of each model call
        self.pending: deque[tuple[list[str], asyncio.Future]] = deque()
        self.waiting_texts = 0  # texts in `pending`
        self.drain_task: asyncio.Task | None = None  # held: the loop keeps tasks weakly

    def is_full(self) -> bool:
        """True while not even a one-text request would be queued."""
        return self.max_queue is not None and self.waiting_texts >= self.max_queue

    async def __call__(self, texts: list[str]) -> list[dict]:
        if self.max_queue is not None and self.waiting_texts + len(texts) > self.max_queue:
            raise QueueFull(f"the server is busy: {self.waiting_texts} texts are waiting to be "
                            f"scored and the queue holds at most {self.max_queue}; retry in "
                            f"{RETRY_AFTER_S} s")
        future = asyncio.get_running_loop().create_future()
        self.pending.append((texts, future))
        self.waiting_texts += len(texts)
        if self.drain_task is None or self.drain_task.done():
            self.drain_task = asyncio.create_task(self._drain())
        if self.timeout_s is None:
            return await future
        try:
            # On timeout the future is cancelled: `_drain` skips it if it is still waiting.
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise ScoringTimeout(f"the server is busy: {len(texts)} texts were not scored "
                                 f"within {self.timeout_s:g} s; retry later") from None

    def _next_batch(self) -> list[tuple[list[str], asyncio.Future]]:
        """Takes waiting requests, oldest first, up to `max_texts` texts (at least one request);
        drops those whose caller timed out or went away."""
        batch: list[tuple[list[str], asyncio.Future]] = []
        size = 0
        while self.pending and (not batch or size + len(self.pending[0][0]) <= self.max_texts):
            texts, future = self.pending.popleft()
            self.waiting_texts -= len(texts)
            if not future.done():
                batch.append((texts, future))
                size += len(texts)
        return batch

    async def _drain(self) -> None:
        while self.pending:
            batch = self._next_batch()
            if not batch:
                continue
            texts = [text for request_texts, _ in batch for text in request_texts]
            if self.observe_batch is not None:
                self.observe_batch(len(texts))
            try:
                results = await asyncio.to_thread(self.predict, texts)
            except Exception as error:  # every waiting request gets the failure
                for _, future in batch:
                    if not future.done():  # a caller that went away was cancelled
                        future.set_exception(error)
                continue
            start = 0
            for request_texts, future in batch:
                if not future.done():
                    future.set_result(results[start:start + len(request_texts)])
                start += len(request_texts)


def _setting(value: int | float | None, key: str, default: int | float, cast: type,
             minimum: int | float, why: str = "") -> int | float:
    """An argument, else the environment's `key`, else `default`; refuses a value below
    `minimum` or one that is not a number, naming the key."""
    if value is None:
        raw = os.environ.get(key, str(default))
        try:
            value = cast(raw)
        except ValueError:
            raise ValueError(f"{key}={raw!r} is not a{'n integer' if cast is int else ' number'}"
                             ) from None
    if not value >= minimum:
        raise ValueError(f"{key}={value!r} is not allowed: it must be at least {minimum}{why}")
    return value


def _has_visible_character(text: str) -> str:
    """Refuses a text made only of whitespace, control and format characters: the tokenizer
    finds no word in it and the model would score padding alone."""
    if all(character.isspace() or unicodedata.category(character) in ("Cc", "Cf")
           for character in text):
        raise ValueError("the text holds only whitespace or control characters, no word to score")
    return text


def _printable(value):
    """`value` with every string made encodable as UTF-8 (a lone surrogate becomes the six
    characters of its escape), so that an error message can always be sent."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list | tuple):
        return [_printable(item) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return _printable(str(value))


def _describe_error(error: dict, content_type: str) -> dict:
    """One of pydantic's (or FastAPI's) validation errors, as {"loc", "msg", "type"}. The
    input is left out: it may be megabytes long or hold characters UTF-8 cannot encode."""
    kind, loc = error.get("type", ""), error.get("loc", ())
    message = error.get("msg", "invalid value")
    if kind == "string_unicode":
        message = ("not valid Unicode: a lone UTF-16 surrogate (\\ud800 to \\udfff) has no "
                   "UTF-8 form; send the review as UTF-8 text")
    elif kind == "json_invalid":
        message = (f"the body is not valid JSON: {error.get('ctx', {}).get('error', 'invalid')}"
                   f" (at character {loc[-1] if loc else '?'})")
    elif tuple(loc) == ("body",) and "json" not in content_type:
        message = (f"the body must be JSON sent with content-type: application/json (got "
                   f"{content_type or 'no content-type'}): {message}")
    return {"loc": _printable(list(loc)), "msg": _printable(message), "type": _printable(kind)}


def _create_metrics(registry: CollectorRegistry) -> dict:
    """The API's Prometheus metrics, registered in `registry` (one per app, so that two apps
    in one process, as in the tests, count apart)."""
    return {
        "requests": Counter("kd_api_requests", "HTTP requests answered, by endpoint and status",
                            ["endpoint", "status"], registry=registry),
        "latency": Histogram("kd_api_request_seconds",
                             "Seconds from a request's arrival to its answer, by endpoint",
                             ["endpoint"], registry=registry,
                             buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5,
                                      10, 30)),
        "batch": Histogram("kd_api_batch_texts", "Texts scored by each call of the model",
                           registry=registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)),
        "errors": Counter("kd_api_errors", "Requests not scored, by reason", ["reason"],
                          registry=registry),
        "queue": Gauge("kd_api_queue_texts", "Texts waiting for the model", registry=registry),
        "queue_limit": Gauge("kd_api_queue_limit_texts", "Texts the queue holds at most",
                             registry=registry),
    }


class _GuardMiddleware:
    """Counts every HTTP answer by endpoint (the route's path, or `unmatched`) and status, times
    it, and refuses a body over `max_body` bytes: at once when its content-length says so, or
    as soon as a streamed (chunked) body passes it. A plain ASGI middleware: it adds no task or
    stream to a request."""

    def __init__(self, app, metrics: dict, max_body: int, too_large: str):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.too_large = too_large  # the 413's message

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500  # what ServerErrorMiddleware sends if the app raises before answering
        received = 0

        async def send_and_note_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def receive_up_to_the_limit():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # the app's handler answers 413
                    raise StarletteHTTPException(413, self.too_large)
            return message

        try:
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body:
                self.metrics["errors"].labels("body_too_large").inc()
                await JSONResponse(status_code=413, content={"detail": self.too_large})(
                    scope, receive, send_and_note_status)
                return
            await self.app(scope, receive_up_to_the_limit, send_and_note_status)
        except Exception:
            status = 500
            self.metrics["errors"].labels("internal").inc()
            raise
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics["requests"].labels(endpoint, str(status)).inc()
            self.metrics["latency"].labels(endpoint).observe(time.perf_counter() - started)


def create_app(export_dir: str | None = None, form: str | None = None,
               max_texts: int | None = None, max_chars: int | None = None,
               threads: int | None = None, max_queue: int | None = None,
               timeout_s: float | None = None) -> FastAPI:
    """Build the app around one loaded student export.

    Every argument left out comes from the environment (see the module's docstring).

    Raises:
        ValueError: a setting that is not a number or is out of range, naming its key.
    """
    export_dir = export_dir or os.environ.get("KD_EXPORT_DIR", "models/export")
    form = form or os.environ.get("KD_FORM", "onnx")
    threads = _setting(threads, "KD_THREADS", os.cpu_count() or 1, int, 1)
    max_texts = _setting(max_texts, "KD_MAX_TEXTS", 64, int, 1)
    max_chars = _setting(max_chars, "KD_MAX_CHARS", 20000, int, 1)
    max_queue = _setting(max_queue, "KD_MAX_QUEUE", 16 * max_texts, int, max_texts,
                         " (KD_MAX_TEXTS: a request of the most texts must fit)")
    timeout_s = _setting(timeout_s, "KD_TIMEOUT_S", 10.0, float, 0.001)
    # A body larger than every allowed text at its longest (UTF-8: 4 bytes a character) plus
    # JSON overhead is refused before it is parsed, or as soon as a streamed body passes it.
    max_body = max_texts * (4 * max_chars + 16) + 1024
    student = load_student(export_dir, form=form, threads=threads)
    registry = CollectorRegistry()
    metrics = _create_metrics(registry)
    ProcessCollector(registry=registry)  # CPU seconds, memory, open files (Linux)
    batcher = Batcher(student.predict, max_texts, max_queue=max_queue, timeout_s=timeout_s,
                      observe_batch=metrics["batch"].observe)
    metrics["queue"].set_function(lambda: batcher.waiting_texts)
    metrics["queue_limit"].set(max_queue)
    metrics_path = Path(export_dir) / "metrics.json"
    model_card = {"form": form, **student.metadata,
                  "metrics": json.loads(metrics_path.read_text()) if metrics_path.is_file()
                  else None}

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[Annotated[str, StringConstraints(min_length=1, max_length=max_chars),
                              AfterValidator(_has_visible_character)]] = \
            Field(min_length=1, max_length=max_texts,
                  description=f"1 to {max_texts} reviews of at most {max_chars} characters")

    too_large = (f"the request body is over the limit of {max_body} bytes ({max_texts} texts "
                 f"of at most {max_chars} characters)")
    app = FastAPI(title="Sentiment: the distilled student")
    app.add_middleware(_GuardMiddleware, metrics=metrics, max_body=max_body, too_large=too_large)

    @app.exception_handler(RequestValidationError)
    async def refuse_invalid_request(request: Request, error: RequestValidationError):
        # FastAPI's own handler echoes each input: megabytes, or a lone surrogate that the
        # JSON response cannot encode (a 500 instead of the 422).
        metrics["errors"].labels("invalid_request").inc()
        content_type = request.headers.get("content-type", "")
        return JSONResponse(status_code=422, content={
            "detail": [_describe_error(item, content_type) for item in error.errors()]})

    @app.exception_handler(StarletteHTTPException)
    async def refuse_with_a_reason(request: Request, error: StarletteHTTPException):
        detail, cause = error.detail, error.__cause__
        if error.status_code == 413:
            metrics["errors"].labels("body_too_large").inc()
            detail = too_large
        elif error.status_code == 400 and isinstance(cause, RecursionError):
            detail = "the body is not JSON this server can read: it is nested too deeply"
        elif error.status_code == 400 and isinstance(cause, UnicodeDecodeError):
            detail = f"the body is not valid UTF-8: {cause.reason} at byte {cause.start}"
        if 400 <= error.status_code < 500 and error.status_code != 413:
            metrics["errors"].labels({404: "not_found", 405: "method_not_allowed"}.get(
                error.status_code, "bad_request")).inc()
        return await http_exception_handler(
            request, StarletteHTTPException(error.status_code, _printable(detail), error.headers))

    @app.get("/health")
    def health() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        """Readiness: the model is loaded (before the port opens) and the queue has room."""
        if batcher.is_full():
            return JSONResponse(status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)},
                                content={"status": "busy", "detail": (
                                    f"the queue is full: {batcher.waiting_texts} texts are "
                                    f"waiting, at most {max_queue}")})
        return JSONResponse({"status": "ready", "queued_texts": batcher.waiting_texts,
                             "max_queue": max_queue})

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/model")
    def model() -> dict:
        return model_card

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict:
        try:
            return {"predictions": await batcher(request.texts)}
        except QueueFull as error:
            metrics["errors"].labels("queue_full").inc()
            raise HTTPException(503, str(error), {"Retry-After": str(RETRY_AFTER_S)}) from None
        except ScoringTimeout as error:
            metrics["errors"].labels("timeout").inc()
            raise HTTPException(504, str(error), {"Retry-After": str(RETRY_AFTER_S)}) from None
        except Exception:
            logger.exception("the model failed on a batch")
            metrics["errors"].labels("model").inc()
            raise HTTPException(500, "the model failed on this request's batch; the server's "
                                     "log holds the error") from None

    # Everything loaded so far (torch, ONNX Runtime, the app) lives as long as the process:
    # keep it out of the garbage collector's full passes, which otherwise stall every request
    # in flight for about 100 ms now and then (measured under the benchmark's load test).
    gc.freeze()
    return app
