"""Timing helpers for the side-by-side benchmark: throughput, single-review latency, load."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np


def throughput(predict: Callable[[list[str]], np.ndarray], texts: list[str],
               batch_size: int) -> tuple[float, np.ndarray]:
    """Score `texts` in batches (after one warm-up batch).

    Returns:
        (reviews per second, the scores (N,)).
    """
    predict(texts[:batch_size])
    started = time.perf_counter()
    scores = [predict(texts[start:start + batch_size])
              for start in range(0, len(texts), batch_size)]
    return len(texts) / (time.perf_counter() - started), np.concatenate(scores)


def latency_ms(predict: Callable[[list[str]], np.ndarray], texts: list[str]) -> dict:
    """p50 and p99 of scoring one review at a time, tokenization included (milliseconds)."""
    predict(texts[:1])
    times = []
    for text in texts:
        started = time.perf_counter()
        predict([text])
        times.append(1000 * (time.perf_counter() - started))
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def measure(predict: Callable[[list[str]], np.ndarray], texts: list[str], batch_size: int,
            latency_reviews: int) -> tuple[dict, np.ndarray]:
    """Throughput over `texts` at `batch_size`, and single-review latency over the first
    `latency_reviews` of them: the row every model gets in the benchmark and the speed curve.

    Returns:
        ({"reviews_per_s", "p50_ms", "p99_ms"}, the scores (N,)).
    """
    reviews_per_s, scores = throughput(predict, texts, batch_size)
    return {"reviews_per_s": reviews_per_s, **latency_ms(predict, texts[:latency_reviews])}, scores


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _client(port: int, bodies: list[bytes], times: list[float]) -> int:
    """One keep-alive HTTP/1.1 connection sending `bodies` in turn; returns the failures."""
    errors = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for body in bodies:
        started = time.perf_counter()
        try:
            writer.write(b"POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                         b"content-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            await reader.readexactly(length)
            errors += not head.startswith("http/1.1 200")
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        times.append(1000 * (time.perf_counter() - started))
    writer.close()
    return errors


def load_test(export_dir: str | Path, texts: list[str], clients: int, requests_per_client: int,
              form: str = "onnx") -> dict:
    """Start the API on loopback, send single-review requests from concurrent clients, stop it.

    The clients share one asyncio event loop in this process, each with its own keep-alive
    connection, so the load generator stays cheap (16 Python threads would spend their time
    waiting for the GIL and add that wait to every measured latency).

    Returns:
        {"requests_per_s", "p50_ms", "p99_ms", "errors", "clients", "requests"}.
    """
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parents[2]),
         "--factory", "kd.serving.api:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        env={**os.environ, "KD_EXPORT_DIR": str(export_dir), "KD_FORM": form})
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/health", server)
        bodies = [json.dumps({"texts": [texts[index % len(texts)]]}).encode()
                  for index in range(clients * requests_per_client)]
        times: list[float] = []

        async def run_clients() -> list[int]:
            return await asyncio.gather(*(
                _client(port, bodies[offset::clients], times) for offset in range(clients)))

        started = time.perf_counter()
        errors = sum(asyncio.run(run_clients()))
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {"requests_per_s": len(times) / seconds, "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)), "errors": errors, "clients": clients,
            "requests": len(times)}


def _wait_until_up(url: str, server: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the API exited with status {server.returncode} at start-up")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the API did not answer {url} within {timeout_s}s")
