"""HTTP API for the exported student (FastAPI).

    uvicorn --app-dir stages --factory kd.api:create_app --port 8000

Settings come from the environment: KD_EXPORT_DIR (default models/export), KD_FORM (onnx, the
fastest form for single reviews here; int8, 4x smaller; bf16 or torchscript), KD_THREADS (the
model's threads; default: every core, measured best here even with the clients on the same
two cores), KD_MAX_TEXTS (64), KD_MAX_CHARS (20000). The model is loaded once, at
start-up; requests that arrive while it is busy are scored together (`Batcher`).
"""

import asyncio
import gc
import json
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from kd.export import load_student


class Batcher:
    """Scores the requests that arrive while the model is busy together, as one batch.

    Under load, single-review requests pile up while the model scores the previous batch; one
    call for all of them costs little more than a call for one (the student's scores do not
    depend on the padding a batch adds). An idle server scores a request at once: there is no
    waiting window. The model runs in a worker thread, so the event loop keeps reading requests.
    """

    def __init__(self, predict: Callable[[list[str]], list[dict]], max_texts: int):
        self.predict = predict
        self.max_texts = max_texts  # texts per model call
        self.pending: deque[tuple[list[str], asyncio.Future]] = deque()
        self.drain_task: asyncio.Task | None = None  # held: the loop keeps tasks weakly

    async def __call__(self, texts: list[str]) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((texts, future))
        if self.drain_task is None or self.drain_task.done():
            self.drain_task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self.pending:
            batch = [self.pending.popleft()]
            size = len(batch[0][0])
            while self.pending and size + len(self.pending[0][0]) <= self.max_texts:
                batch.append(self.pending.popleft())
                size += len(batch[-1][0])
            try:
                results = await asyncio.to_thread(
                    self.predict, [text for texts, _ in batch for text in texts])
            except Exception as error:  # every waiting request gets the failure
                for _, future in batch:
                    if not future.done():  # a caller that went away was cancelled
                        future.set_exception(error)
                continue
            start = 0
            for texts, future in batch:
                if not future.done():
                    future.set_result(results[start:start + len(texts)])
                start += len(texts)


def create_app(export_dir: str | None = None, form: str | None = None,
               max_texts: int | None = None, max_chars: int | None = None,
               threads: int | None = None) -> FastAPI:
    """Build the app around one loaded student export."""
    export_dir = export_dir or os.environ.get("KD_EXPORT_DIR", "models/export")
    form = form or os.environ.get("KD_FORM", "onnx")
    threads = threads or int(os.environ.get("KD_THREADS", os.cpu_count() or 1))
    max_texts = max_texts or int(os.environ.get("KD_MAX_TEXTS", "64"))
    max_chars = max_chars or int(os.environ.get("KD_MAX_CHARS", "20000"))
    # A body larger than every allowed text at its longest (UTF-8: 4 bytes a character) plus
    # JSON overhead is refused before it is parsed.
    max_body = max_texts * (4 * max_chars + 16) + 1024
    student = load_student(export_dir, form=form, threads=threads)
    batcher = Batcher(student.predict, max_texts)
    metrics_path = Path(export_dir) / "metrics.json"
    model_card = {"form": form, **student.metadata,
                  "metrics": json.loads(metrics_path.read_text()) if metrics_path.is_file()
                  else None}

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[Annotated[str, StringConstraints(min_length=1, max_length=max_chars)]] = \
            Field(min_length=1, max_length=max_texts,
                  description=f"1 to {max_texts} reviews of at most {max_chars} characters")

    app = FastAPI(title="Sentiment: the distilled student")

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            return JSONResponse(status_code=413, content={
                "detail": f"request body of {length} bytes is over the limit of {max_body} "
                          f"({max_texts} texts of at most {max_chars} characters)"})
        return await call_next(request)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    def model() -> dict:
        return model_card

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict:
        return {"predictions": await batcher(request.texts)}

    # Everything loaded so far (torch, ONNX Runtime, the app) lives as long as the process:
    # keep it out of the garbage collector's full passes, which otherwise stall every request
    # in flight for about 100 ms now and then (measured under the benchmark's load test).
    gc.freeze()
    return app
