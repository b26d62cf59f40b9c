"""The student's exports, the predict command and the HTTP API, on a tiny random student."""

import asyncio
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

import kd
from helpers import REPO, SERVE_TEXTS, write_tiny_export
from kd.data.labels import read_label_names
from kd.evaluation.bench import latency_ms, load_test, throughput
from kd.serving.api import Batcher, create_app
from kd.serving.export import export_all
from kd.serving.runtime import FILES, GROUP_SIZE, OnnxStudent, load_student
from kd.student.models import Ensemble, TextCNN, TextCNNConfig
from kd.text import build_tokenizer, encode, pad_batch

TEXTS = SERVE_TEXTS


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    # A calibrated student (logit scale 0.8): every form must carry the scale.
    folder, paths, model, tokenizer = write_tiny_export(tmp_path_factory.mktemp("export"), 0.8)
    with torch.inference_mode():
        input_ids = torch.from_numpy(pad_batch(encode(tokenizer, TEXTS), 5))
        eager = torch.sigmoid(model(input_ids)).numpy()
    return folder, paths, eager


def test_export_folder_holds_every_form_and_runs_alone(export):
    folder, paths, _ = export
    assert {path.name for path in folder.iterdir()} == {
        "student.pt", "student.bf16.pt", "student.onnx", "student.int8.onnx", "tokenizer.json",
        "metadata.json"}
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["min_len"] == 5 and metadata["labels"] == ["negative", "positive"]


def test_exports_name_no_path_of_this_machine(export):
    # dvc.lock hashes the exports: a path of this checkout or virtual environment in them (as
    # TorchScript's debug records hold) would give every clone its own bytes.
    folder, _, _ = export
    places = {Path(kd.__file__).resolve().parents[1], Path(sys.prefix).resolve(),
              Path(torch.__file__).resolve().parent, folder.resolve()}
    for path in folder.iterdir():
        records = {path.name: path.read_bytes()}
        if zipfile.is_zipfile(path):  # TorchScript: records may be compressed
            with zipfile.ZipFile(path) as archive:
                records.update({name: archive.read(name) for name in archive.namelist()})
        for name, data in records.items():
            for place in places:
                assert str(place).encode() not in data, f"{path.name}: {name} names {place}"


@pytest.mark.parametrize("form", ["onnx", "torchscript"])
def test_fp32_exports_match_the_eager_model(export, form):
    folder, _, eager = export
    np.testing.assert_allclose(load_student(folder, form=form).positive_probs(TEXTS), eager,
                               atol=1e-4)


def test_an_ensemble_exports_in_every_form_and_matches_the_eager_model(tmp_path):
    tokenizer = build_tokenizer(TEXTS * 2, max_size=100, min_freq=1, max_len=50)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    torch.manual_seed(0)
    ensemble = Ensemble([TextCNN(TextCNNConfig(vocab_size=tokenizer.get_vocab_size(),
                                               embed_dim=8, num_filters=4)) for _ in range(2)])
    ensemble.eval().logit_scale.fill_(0.8)
    paths = export_all(ensemble, tmp_path / "tokenizer.json", tmp_path / "export", {})
    assert sorted(paths) == sorted(FILES)
    with torch.inference_mode():
        input_ids = torch.from_numpy(pad_batch(encode(tokenizer, TEXTS), 5))
        eager = torch.sigmoid(ensemble(input_ids)).numpy()
    for form in ("onnx", "torchscript"):
        np.testing.assert_allclose(load_student(tmp_path / "export", form=form)
                                   .positive_probs(TEXTS), eager, atol=1e-4)


@pytest.mark.parametrize(("form", "threads"), [("onnx", 1), ("bf16", 1), ("onnx", 2)])
def test_a_batch_runs_in_groups_of_similar_length_and_answers_in_its_order(export, form,
                                                                           threads):
    folder, _, _ = export
    student = load_student(folder, form=form, threads=threads)
    lengths = [(7 * row) % 45 + 1 for row in range(3 * GROUP_SIZE + 2)]  # shuffled, 1..45 words
    texts = [" ".join(["great", "boring", "a", "film", "waste"][row % 5] for _ in range(length))
             for row, length in enumerate(lengths)]
    alone = np.array([student.positive_probs([text])[0] for text in texts])
    widths = []
    logits = student.logits
    student.logits = lambda input_ids: widths.append(input_ids.shape) or logits(input_ids)
    batch = student.positive_probs(texts)
    np.testing.assert_allclose(batch, alone, atol=1e-6)  # each answer is its own review's
    unpadded = [max(length, 5) for length in sorted(lengths)]  # min_len 5
    multiple = student.length_multiple
    assert sorted(widths) == sorted(  # the groups may run on several threads, in any order
        (min(GROUP_SIZE, len(texts) - start),
         -(-max(unpadded[start:start + GROUP_SIZE]) // multiple) * multiple)
        for start in range(0, len(texts), GROUP_SIZE))


@pytest.mark.parametrize("form", ["int8", "bf16"])
def test_reduced_precision_exports_stay_close(export, form):
    folder, paths, eager = export
    reduced = load_student(folder, form=form).positive_probs(TEXTS)
    np.testing.assert_allclose(reduced, eager, atol=0.05)



def test_reduced_precision_exports_store_smaller_weights(export):
    import onnx

    _, paths, _ = export
    # int8: the embedding table (the bulk of a real student) is stored in one byte a weight.
    stored = {init.name: (init.data_type, list(init.dims))
              for init in onnx.load(str(paths["int8"])).graph.initializer}
    byte_types = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    vocab_size = len(json.loads(paths["int8"].with_name("tokenizer.json").read_text())
                     ["model"]["vocab"])
    assert stored["embedding.weight_quantized"] in [(dtype, [vocab_size, 16])
                                                    for dtype in byte_types]
    assert "embedding.weight" not in stored
    # bf16: every floating-point weight in two bytes.
    scripted = torch.jit.load(str(paths["bf16"]))
    assert {parameter.dtype for parameter in scripted.parameters()} == {torch.bfloat16}


def test_unknown_form_is_refused(export):
    with pytest.raises(Exception, match="unknown student form 'fp8'"):
        load_student(export[0], form="fp8")


def test_incomplete_export_is_refused(tmp_path):
    with pytest.raises(Exception, match="run `dvc repro export`"):
        OnnxStudent(tmp_path)


def test_api_predicts_and_reports(export):
    folder, _, eager = export
    client = TestClient(create_app(str(folder), form="onnx", max_texts=3, max_chars=2000))
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/model").json()["form"] == "onnx"
    response = client.post("/predict", json={"texts": TEXTS[:3]})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["positive_prob"] for p in predictions] == pytest.approx(eager[:3], abs=1e-4)
    assert [p["label"] for p in predictions] == [
        "positive" if p >= 0.5 else "negative" for p in eager[:3]]


def test_exports_answer_with_the_label_names_of_the_data(tmp_path):
    """Labels mapped by prepare (source.json) reach the export, the API and the predict
    command: a user's "bad"/"good" data is answered with "bad"/"good"."""
    (tmp_path / "source.json").write_text(json.dumps({"labels": ["bad", "good"]}))
    tokenizer = build_tokenizer(TEXTS * 2, max_size=100, min_freq=1, max_len=50)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    torch.manual_seed(1)
    model = TextCNN(TextCNNConfig(vocab_size=tokenizer.get_vocab_size(), embed_dim=8,
                                  num_filters=4)).eval()
    folder = tmp_path / "export"
    export_all(model, tmp_path / "tokenizer.json", folder, {},
               labels=read_label_names(tmp_path / "source.json"))
    assert json.loads((folder / "metadata.json").read_text())["labels"] == ["bad", "good"]
    student = load_student(folder, form="onnx")
    probs = student.positive_probs(TEXTS)
    expected = ["good" if prob >= 0.5 else "bad" for prob in probs]
    assert [row["label"] for row in student.predict(TEXTS)] == expected
    client = TestClient(create_app(str(folder), form="torchscript"))
    assert client.get("/model").json()["labels"] == ["bad", "good"]
    answers = client.post("/predict", json={"texts": TEXTS}).json()["predictions"]
    assert [row["label"] for row in answers] == expected
    printed = subprocess.run([sys.executable, str(REPO / "tools/predict.py"), "--export-dir",
                              str(folder)], input="\n".join(TEXTS), capture_output=True,
                             text=True, check=True).stdout
    assert [json.loads(line)["label"] for line in printed.splitlines()] == expected


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"texts": ["a"] * 4}, 422, "at most 3 items"),
    ({"texts": ["a" * 2001]}, 422, "at most 2000 characters"),
    ({"texts": []}, 422, "at least 1 item"),
    ({"text": ["a"]}, 422, "texts"),
    ({"texts": "a review"}, 422, "list"),
    ({"texts": ["a" * 2000] * 3 + ["b" * 20000]}, 413, "over the limit"),
])
def test_api_refuses_bad_requests_with_the_limit(export, body, status, message):
    folder, _, _ = export
    client = TestClient(create_app(str(folder), form="onnx", max_texts=3, max_chars=2000))
    response = client.post("/predict", json=body)
    assert response.status_code == status
    assert message in json.dumps(response.json())


def test_api_refuses_malformed_json(export):
    folder, _, _ = export
    client = TestClient(create_app(str(folder), form="onnx"))
    response = client.post("/predict", content=b"{not json",
                           headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_predict_command_reads_a_file_or_stdin(export, tmp_path):
    folder, _, eager = export
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(TEXTS[:2]) + "\n\n")
    command = [sys.executable, str(REPO / "tools/predict.py"), "--export-dir", str(folder),
               "--form", "onnx"]
    from_file = subprocess.run(command + [str(reviews)], capture_output=True, text=True,
                               check=True).stdout
    from_stdin = subprocess.run(command, input=reviews.read_text(), capture_output=True,
                                text=True, check=True).stdout
    assert from_file == from_stdin
    lines = [json.loads(line) for line in from_file.splitlines()]
    assert [line["text"] for line in lines] == TEXTS[:2]
    assert [line["positive_prob"] for line in lines] == pytest.approx(eager[:2], abs=1e-4)


def test_load_test_starts_the_api_sends_requests_and_stops_it(export):
    folder, _, _ = export
    result = load_test(folder, TEXTS, clients=2, requests_per_client=5, form="onnx")
    assert result["errors"] == 0 and result["requests"] == 10 and result["clients"] == 2
    assert result["requests_per_s"] > 0 and result["p99_ms"] >= result["p50_ms"] > 0


def test_timing_helpers_report_rates_and_percentiles(export):
    student = OnnxStudent(export[0], form="onnx", threads=1)
    rate, probs = throughput(student.positive_probs, TEXTS * 4, batch_size=3)
    assert rate > 0
    np.testing.assert_allclose(probs, np.tile(export[2], 4), atol=1e-4)
    latency = latency_ms(student.positive_probs, TEXTS)
    assert latency["p99_ms"] >= latency["p50_ms"] > 0


def test_mlflow_serves_the_export_with_its_signature(export, tmp_path):
    import mlflow

    from kd.serving.mlflow_student import log_student_model
    from kd.tracking import pipeline_run

    folder, _, eager = export
    with pipeline_run({"alpha": 0.5}, root=tmp_path) as run:
        log_student_model(run, folder)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/student")
    assert model.metadata.get_input_schema().input_names() == ["text"]
    predictions = model.predict(pd.DataFrame({"text": TEXTS}))
    assert list(predictions.columns) == ["label", "positive_prob"]
    np.testing.assert_allclose(predictions["positive_prob"], eager, atol=1e-4)
    logged = {path.name for path in (tmp_path / "mlartifacts").rglob("*") if path.is_file()}
    assert FILES["onnx"] in logged and FILES["torchscript"] not in logged


def test_batcher_scores_waiting_requests_together_and_answers_each():
    calls = []

    def predict(texts):
        calls.append(list(texts))
        return [{"text": text} for text in texts]

    batcher = Batcher(predict, max_texts=3)

    async def send():
        return await asyncio.gather(batcher(["a"]), batcher(["b", "c"]), batcher(["d"]),
                                    batcher(["e"]))

    assert asyncio.run(send()) == [[{"text": "a"}], [{"text": "b"}, {"text": "c"}],
                                   [{"text": "d"}], [{"text": "e"}]]
    assert calls == [["a", "b", "c"], ["d", "e"]]  # no call over max_texts


def test_batcher_passes_a_failure_to_every_waiting_request():
    def predict(texts):
        raise RuntimeError("model failed")

    batcher = Batcher(predict, max_texts=8)

    async def send():
        return await asyncio.gather(batcher(["a"]), batcher(["b"]), return_exceptions=True)

    assert [str(result) for result in asyncio.run(send())] == ["model failed"] * 2


def test_batcher_answers_the_others_when_a_caller_goes_away():
    batcher = Batcher(lambda texts: [{"text": text} for text in texts], max_texts=8)

    async def send():
        gone = asyncio.ensure_future(batcher(["a"]))
        stays = asyncio.ensure_future(batcher(["b"]))
        await asyncio.sleep(0)  # both are waiting in the batcher now
        gone.cancel()
        return await stays, await batcher(["c"])

    # A bound, so a batcher that loses the others fails here instead of hanging.
    assert asyncio.run(asyncio.wait_for(send(), timeout=10)) == ([{"text": "b"}], [{"text": "c"}])
