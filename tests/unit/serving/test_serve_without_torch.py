"""The API serves an ONNX export without torch or the training stack (requirements-serve.txt)."""

import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import torch

from helpers import REPO
from kd.serving.export import export_all
from kd.serving.runtime import load_student
from kd.student.models import TextCNN, TextCNNConfig
from kd.text import build_tokenizer

TEXTS = ["a great and moving film", "boring, dull; a waste", "great " * 300, "ok"]
# What requirements-serve.txt leaves out: importing any of them in the server fails.
ABSENT = ["torch", "transformers", "datasets", "sklearn", "scipy", "mlflow", "pandas", "pyarrow",
          "onnx", "safetensors", "dvc", "yaml"]
SERVER = f"""
import sys
for name in {ABSENT!r}:
    sys.modules[name] = None  # `import name` now raises ImportError
import uvicorn
uvicorn.run("kd.serving.api:create_app", factory=True, app_dir=".", host="127.0.0.1",
            port=int(sys.argv[1]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_api_answers_without_torch_as_the_full_install_does(tmp_path):
    tokenizer = build_tokenizer(TEXTS * 2, max_size=100, min_freq=1, max_len=50)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    torch.manual_seed(0)
    model = TextCNN(TextCNNConfig(vocab_size=tokenizer.get_vocab_size(), embed_dim=16,
                                  num_filters=8, ngram_order=2, ngram_buckets=64)).eval()
    with torch.no_grad():
        model.ngrams.weights.weight.normal_()
    export_all(model, tmp_path / "tokenizer.json", tmp_path / "export", {})
    expected = load_student(tmp_path / "export", form="onnx").positive_probs(TEXTS)

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], cwd=REPO, stderr=subprocess.PIPE, text=True,
        env={"PATH": "/usr/bin:/bin", "KD_EXPORT_DIR": str(tmp_path / "export"),
             "KD_FORM": "onnx"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"the server stopped: {server.stderr.read()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start within 60 s"
                time.sleep(0.2)
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": TEXTS},
                              timeout=10)
        assert response.status_code == 200, response.text
        got = [row["positive_prob"] for row in response.json()["predictions"]]
        np.testing.assert_allclose(got, expected, atol=1e-6)  # the API rounds to 6 digits
        refused = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": [" "]},
                             timeout=10)
        assert refused.status_code == 422
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serving_requirements_name_no_training_package():
    pins = [line.split("==")[0].lower() for line in
            (REPO / "requirements-serve.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert not set(pins) & {name.lower() for name in ABSENT + ["scikit-learn", "pyyaml"]}
    assert {"onnxruntime", "tokenizers", "nanotoken", "fastapi", "uvicorn"} <= set(pins)
    full = dict(line.split("#")[0].strip().split("==") for line in
                (REPO / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for line in (REPO / "requirements-serve.txt").read_text().splitlines():
        if "==" in line:  # the same versions as the full install
            name, pin = line.split("==")
            assert full[name] == pin, name
