"""Timing helpers for the side-by-side benchmark: throughput, single-review latency, load."""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np


def throughput(predict: Callable[[list[str]], object], texts: list[str],
               batch_size: int) -> float:
    """Reviews per second scoring `texts` in batches (one warm-up batch first)."""
    predict(texts[:batch_size])
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        predict(texts[start:start + batch_size])
    return len(texts) / (time.perf_counter() - started)


def latency_ms(predict: Callable[[list[str]], object], texts: list[str]) -> dict:
    """p50 and p99 of scoring one review at a time, tokenization included (milliseconds)."""
    predict(texts[:1])
    times = []
    for text in texts:
        started = time.perf_counter()
        predict([text])
        times.append(1000 * (time.perf_counter() - started))
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(connection: http.client.HTTPConnection, texts: list[str]) -> int:
    connection.request("POST", "/predict", body=json.dumps({"texts": texts}),
                       headers={"content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status


def load_test(export_dir: str | Path, texts: list[str], clients: int, requests_per_client: int,
              form: str = "onnx") -> dict:
    """Start the API on loopback, send single-review requests from concurrent clients, stop it.

    Returns:
        {"requests_per_s", "p50_ms", "p99_ms", "errors", "clients", "requests"}.
    """
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parents[1]),
         "--factory", "kd.api:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        env={**os.environ, "KD_EXPORT_DIR": str(export_dir), "KD_FORM": form})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{url}/health", server)
        times, errors = [], [0]
        lock = threading.Lock()

        def client(offset: int) -> None:
            # One keep-alive connection per client, as a real caller would hold.
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for index in range(requests_per_client):
                text = texts[(offset * requests_per_client + index) % len(texts)]
                started = time.perf_counter()
                try:
                    ok = _post(connection, [text]) == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                elapsed = 1000 * (time.perf_counter() - started)
                with lock:
                    times.append(elapsed)
                    errors[0] += not ok
            connection.close()

        threads = [threading.Thread(target=client, args=(offset,)) for offset in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {"requests_per_s": len(times) / seconds, "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)), "errors": errors[0], "clients": clients,
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
