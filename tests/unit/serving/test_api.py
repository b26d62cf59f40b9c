"""The HTTP API's guard rails on a tiny random student: every request it cannot score gets a 4xx
naming the problem (a fuzz of the request schema included), a full queue answers 503 at once and
recovers, a slow answer times out with 504, /metrics, and readiness apart from liveness."""

import asyncio
import json
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from prometheus_client.parser import text_string_to_metric_families

import kd.serving.api
from helpers import SERVE_TEXTS, write_tiny_export
from kd.serving.api import Batcher, QueueFull, ScoringTimeout, create_app

# Hypothesis caches Unicode tables and the constants of the code under test: keep them out of
# the checkout (its pytest plugin writes them while collecting, before any fixture runs).
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "kd-hypothesis")

TEXTS = SERVE_TEXTS
MAX_TEXTS, MAX_CHARS = 3, 2000  # the small app's limits: a body over 25,072 bytes is refused


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny random student's export folder (every form)."""
    return write_tiny_export(tmp_path_factory.mktemp("export"))[0]


@pytest.fixture(scope="module")
def client(export):
    # raise_server_exceptions=False: a server error comes back as the 500 a user would see.
    app = create_app(str(export), form="onnx", max_texts=MAX_TEXTS, max_chars=MAX_CHARS)
    with TestClient(app, raise_server_exceptions=False) as client:  # one event loop throughout
        yield client


class SlowStudent:
    """The loaded student behind a predict that waits for `gate` (a threading.Event) or
    sleeps `delay_s` first, and records the texts of each call."""

    def __init__(self, student, delay_s: float = 0.0, gate: threading.Event | None = None):
        self.student, self.delay_s, self.gate = student, delay_s, gate
        self.metadata = student.metadata
        self.calls: list[list[str]] = []

    def predict(self, texts: list[str]) -> list[dict]:
        self.calls.append(list(texts))
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "the test never opened the gate"
        time.sleep(self.delay_s)
        return self.student.predict(texts)


@pytest.fixture
def slow_app(export, monkeypatch):
    """create_app(**settings) around a SlowStudent(delay_s, gate); returns (app, student)."""
    load_student = kd.serving.api.load_student

    def build(delay_s=0.0, gate=None, **app_settings):
        made = {}

        def load_slow_student(*args, **kwargs):
            made["student"] = SlowStudent(load_student(*args, **kwargs), delay_s, gate)
            return made["student"]

        # undone after the test
        monkeypatch.setattr(kd.serving.api, "load_student", load_slow_student)
        return create_app(str(export), form="onnx", **app_settings), made["student"]
    return build


def chunks(size: int, chunk: int = 1 << 20):
    """A body of `size` bytes sent without a content-length (chunked)."""
    for start in range(0, size, chunk):
        yield b"x" * min(chunk, size - start)


JSON = {"content-type": "application/json"}
BAD_REQUESTS = {  # id: (method, request keywords, status, a fragment of the message)
    "empty list": ("POST", {"json": {"texts": []}}, 422, "at least 1 item"),
    "null texts": ("POST", {"json": {"texts": None}}, 422, "valid list"),
    "a null text": ("POST", {"json": {"texts": [None]}}, 422, "valid string"),
    "a string": ("POST", {"json": {"texts": "a review"}}, 422, "valid list"),
    "too many texts": ("POST", {"json": {"texts": ["a"] * 4}}, 422, "at most 3 items"),
    "10,000 texts": ("POST", {"json": {"texts": ["a"] * 10_000}}, 413, "over the limit"),
    "10 MB body": ("POST", {"content": b"x" * 10_000_000, "headers": JSON}, 413,
                   "over the limit of 25072 bytes"),
    "chunked 10 MB body": ("POST", {"content": lambda: chunks(10_000_000), "headers": JSON}, 413,
                           "over the limit of 25072 bytes"),
    "wrong content type": ("POST", {"content": b'{"texts": ["a"]}',
                                    "headers": {"content-type": "text/plain"}}, 422,
                           "content-type: application/json"),
    "no body": ("POST", {"headers": JSON}, 422, "Field required"),
    "invalid JSON": ("POST", {"content": b"{not json", "headers": JSON}, 422,
                     "not valid JSON: Expecting property name"),
    "deeply nested JSON": ("POST", {"content": b"[" * 10_000 + b"]" * 10_000, "headers": JSON},
                           400, "nested too deeply"),
    "invalid UTF-8": ("POST", {"content": b'{"texts": ["\xff\xfe bad"]}', "headers": JSON}, 400,
                      "not valid UTF-8"),
    "a JSON list": ("POST", {"json": ["a review"]}, 422, "valid dictionary"),
    "an extra field": ("POST", {"json": {"texts": ["a"], "extra": 1}}, 422, "Extra inputs"),
    "numbers": ("POST", {"json": {"texts": [1, 2.5]}}, 422, "valid string"),
    "nested lists": ("POST", {"json": {"texts": [["a"]]}}, 422, "valid string"),
    "an over-long text": ("POST", {"json": {"texts": ["a" * 2001]}}, 422,
                          "at most 2000 characters"),
    "an empty text": ("POST", {"json": {"texts": ["a film", ""]}}, 422, "at least 1 character"),
    "GET": ("GET", {}, 405, "Method Not Allowed"),
    # Valid JSON holding a lone UTF-16 surrogate: a 500 before (the error echoed the input).
    "a lone surrogate": ("POST", {"content": b'{"texts": ["\\ud800 bad"]}', "headers": JSON},
                         422, "lone UTF-16 surrogate"),
    "a lone surrogate as a key": ("POST", {"content": b'{"texts": ["a"], "\\udc00": 1}',
                                           "headers": JSON}, 422, "lone UTF-16 surrogate"),
    "whitespace only": ("POST", {"json": {"texts": [" \t\n\u00a0\u3000"]}}, 422,
                        "only whitespace or control characters"),
    "control characters only": ("POST", {"json": {"texts": ["\x00\x07\x1b\x7f"]}}, 422,
                                "only whitespace or control characters"),
    "format characters only": ("POST", {"json": {"texts": ["\u200b\u200d\ufeff"]}}, 422,
                               "only whitespace or control characters"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_api_refuses_what_it_cannot_score_with_a_4xx_naming_the_problem(client, case):
    method, request, status, fragment = BAD_REQUESTS[case]
    request = {key: value() if callable(value) else value for key, value in request.items()}
    response = client.request(method, "/predict", **request)
    if case == "chunked 10 MB body":  # refused while streaming, not from its content-length
        assert "content-length" not in response.request.headers
    assert response.status_code == status, response.text
    assert fragment in json.dumps(response.json())
    assert len(response.content) < 2000  # the input is never echoed back


def test_api_scores_texts_with_words_among_control_characters(client):
    response = client.post("/predict", json={"texts": ["\x00 great\u200b film\t", "ok"]})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 2


# Any character, and often a lone surrogate (Cs; rare in st.characters() alone): JSON can
# carry one as a \ud800 escape.
ANY_CHARACTER = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
ANY_TEXT = st.text(ANY_CHARACTER, max_size=12)
# Texts of a few characters, many with nothing to score (whitespace, control, format only).
SHORT_TEXTS = st.text(st.sampled_from(" \t\n\x00\x7f\u200b\u3000") | ANY_CHARACTER,
                      max_size=4)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children,
                                                                      max_size=3),
    max_leaves=12)
REQUESTS = st.one_of(
    st.fixed_dictionaries({"texts": st.lists(SHORT_TEXTS | JSON_VALUES, max_size=5)},
                          optional={"extra": JSON_VALUES}),
    st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=3),
    JSON_VALUES)


def _scorable(text: str) -> bool:
    """What the API must score: 1 to MAX_CHARS characters, valid Unicode, with a character
    that is not whitespace, control or format."""
    return (1 <= len(text) <= MAX_CHARS
            and not any(0xD800 <= ord(character) <= 0xDFFF for character in text)
            and not all(character.isspace() or unicodedata.category(character) in ("Cc", "Cf")
                        for character in text))


def _post_json(client, body):
    # json.dumps escapes every non-ASCII character, so a lone surrogate travels as valid JSON.
    return client.post("/predict", content=json.dumps(body).encode(), headers=JSON)


@settings(max_examples=150, deadline=None, database=None)
@given(texts=st.lists(SHORT_TEXTS, min_size=1, max_size=MAX_TEXTS + 1))
def test_fuzzed_texts_are_scored_exactly_when_each_is_scorable(client, texts):
    response = _post_json(client, {"texts": texts})
    # As the server reads them: JSON joins an escaped surrogate pair into one character.
    received = [json.loads(json.dumps(text)) for text in texts]
    if len(texts) <= MAX_TEXTS and all(map(_scorable, received)):
        assert response.status_code == 200, response.text
        probs = [row["positive_prob"] for row in response.json()["predictions"]]
        assert len(probs) == len(texts) and all(0 <= prob <= 1 for prob in probs)
    else:
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["msg"]


@settings(max_examples=150, deadline=None, database=None)
@given(body=REQUESTS)
def test_fuzzed_requests_are_never_a_5xx(client, body):
    response = _post_json(client, body)
    assert response.status_code < 500, response.text
    texts = body.get("texts") if isinstance(body, dict) else None
    if response.status_code == 200:  # only the schema's shape is scored
        assert set(body) == {"texts"} and len(response.json()["predictions"]) == len(texts)
    else:
        assert response.status_code == 422 and response.json()["detail"][0]["msg"]


@settings(max_examples=60, deadline=None, database=None)
@given(body=st.binary(max_size=64) | st.text(max_size=64).map(str.encode),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-"
                                     "form-urlencoded", "multipart/form-data", ""]))
def test_fuzzed_bodies_and_content_types_are_never_a_5xx(client, body, content_type):
    response = client.post("/predict", content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


def _gated_predict():
    """A model call that waits at `gate` (an Event) and records the texts of every call."""
    gate, calls = threading.Event(), []

    def predict(texts):
        calls.append(list(texts))
        gate.wait(timeout=10)
        return [{"text": text} for text in texts]

    return gate, calls, predict


def test_batcher_refuses_a_request_over_the_queue_limit_at_once():
    gate, calls, predict = _gated_predict()
    batcher = Batcher(predict, max_texts=2, max_queue=3)

    async def send():
        first = asyncio.ensure_future(batcher(["a"]))
        await asyncio.sleep(0.05)  # "a" is in the model now; the queue is empty
        waiting = [asyncio.ensure_future(batcher(texts)) for texts in (["b", "c"], ["d"])]
        await asyncio.sleep(0)
        assert batcher.waiting_texts == 3 and batcher.is_full()
        with pytest.raises(QueueFull, match="at most 3"):
            await batcher(["e"])
        gate.set()
        answers = await asyncio.gather(first, *waiting)
        return answers, batcher.waiting_texts, await batcher(["f"])

    answers, waiting_after, later = asyncio.run(asyncio.wait_for(send(), timeout=10))
    assert answers == [[{"text": "a"}], [{"text": "b"}, {"text": "c"}], [{"text": "d"}]]
    assert waiting_after == 0 and later == [{"text": "f"}]
    assert ["e"] not in calls


def test_batcher_times_out_and_never_scores_a_request_that_timed_out_waiting():
    gate, calls, predict = _gated_predict()
    batcher = Batcher(predict, max_texts=1, timeout_s=0.1)

    async def send():
        in_model = asyncio.ensure_future(batcher(["a"]))
        await asyncio.sleep(0.02)
        with pytest.raises(ScoringTimeout, match="not scored within 0.1 s"):
            await batcher(["b"])  # waits behind "a", which the model holds
        with pytest.raises(ScoringTimeout):
            await in_model
        gate.set()
        return await batcher(["c"])

    assert asyncio.run(asyncio.wait_for(send(), timeout=10)) == [{"text": "c"}]
    assert calls == [["a"], ["c"]]  # "b" timed out before the model was free: never scored


def test_a_slow_answer_is_a_504_naming_the_timeout_and_the_server_recovers(slow_app):
    gate = threading.Event()
    app, student = slow_app(gate=gate, timeout_s=0.2)
    with TestClient(app) as client:  # one event loop: the model call outlives the request
        started = time.perf_counter()
        response = client.post("/predict", json={"texts": ["a great film"]})
        seconds = time.perf_counter() - started
        gate.set()
        again = client.post("/predict", json={"texts": ["a great film"]})
    assert response.status_code == 504 and seconds < 5  # answered, not a hang
    assert "not scored within 0.2 s" in response.json()["detail"]
    assert response.headers["retry-after"] == "1"
    assert again.status_code == 200 and len(student.calls) == 2


def test_ready_answers_503_while_the_queue_is_full_and_health_stays_200(slow_app):
    gate = threading.Event()
    app, student = slow_app(gate=gate, max_texts=2, max_queue=4, timeout_s=30)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            assert (await client.get("/ready")).status_code == 200
            body = {"texts": ["a film"]}
            # One request in the model (held at the gate), four waiting: the queue is full.
            waiting = [asyncio.ensure_future(client.post("/predict", json=body))]
            for _ in range(500):
                if student.calls:
                    break
                await asyncio.sleep(0.01)
            waiting += [asyncio.ensure_future(client.post("/predict", json=body))
                        for _ in range(4)]
            for _ in range(500):
                if (ready := await client.get("/ready")).status_code == 503:
                    break
                await asyncio.sleep(0.01)
            refused = await client.post("/predict", json=body)
            health = await client.get("/health")
            gate.set()
            answered = await asyncio.gather(*waiting)
            return ready, refused, health, answered, await client.get("/ready")

    ready, refused, health, answered, ready_after = asyncio.run(
        asyncio.wait_for(scenario(), timeout=30))
    assert ready.status_code == 503 and "queue is full" in ready.json()["detail"]
    assert ready.headers["retry-after"] == "1"
    assert refused.status_code == 503 and "at most 4" in refused.json()["detail"]
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert [response.status_code for response in answered] == [200] * 5
    assert ready_after.status_code == 200 and ready_after.json()["queued_texts"] == 0


@pytest.fixture
def serve():
    """Run an app with uvicorn on 127.0.0.1 in a thread; yields a function app -> base URL."""
    servers = []

    def start(app) -> str:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                               log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def test_64_clients_on_a_full_queue_get_a_quick_503_and_the_server_recovers(slow_app, serve):
    delay_s = 0.5  # each model call; the queue (8 texts, 2 calls of 4) takes 1 s to drain
    app, student = slow_app(delay_s=delay_s, max_texts=4, max_queue=8, timeout_s=30)
    url = serve(app)

    async def send(client, body):
        started = time.perf_counter()
        response = await client.post("/predict", json=body)
        return response, time.perf_counter() - started

    async def flood():
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            answers = await asyncio.gather(*(send(client, {"texts": [f"review {index}"]})
                                             for index in range(64)))
            later = [await send(client, {"texts": ["a great film"]}) for _ in range(3)]
            ready = await client.get("/ready")
            metrics = (await client.get("/metrics")).text
        return answers, later, ready, metrics

    answers, later, ready, metrics = asyncio.run(asyncio.wait_for(flood(), timeout=60))
    statuses = [response.status_code for response, _ in answers]
    refused = [(response, seconds) for response, seconds in answers
               if response.status_code == 503]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 8  # at least a full queue was scored
    assert len(refused) >= 64 - 8 - 4 * 3  # at most 3 model calls' worth was in flight
    assert all("queue holds at most 8" in response.json()["detail"]
               and response.headers["retry-after"] == "1" for response, _ in refused)
    # Refused at once: before the model could score the queue, let alone the 64.
    assert max(seconds for _, seconds in refused) < 2 * delay_s
    assert [response.status_code for response, _ in later] == [200] * 3
    assert ready.status_code == 200
    assert max(len(call) for call in student.calls) <= 4
    errors = {sample.labels["reason"]: sample.value
              for family in text_string_to_metric_families(metrics)
              if family.name == "kd_api_errors" for sample in family.samples
              if sample.name == "kd_api_errors_total"}
    assert errors["queue_full"] == len(refused)


def test_metrics_count_requests_latency_batches_and_errors(export):
    client = TestClient(create_app(str(export), form="onnx", max_texts=3, max_chars=2000))
    for size in (1, 2, 3):  # one at a time: one model call each
        assert client.post("/predict", json={"texts": TEXTS[:size]}).status_code == 200
    assert client.post("/predict", json={"texts": []}).status_code == 422
    assert client.get("/nowhere").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(response.text)
               for sample in family.samples}

    def sample(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert sample("kd_api_requests_total", endpoint="/predict", status="200") == 3
    assert sample("kd_api_requests_total", endpoint="/predict", status="422") == 1
    assert sample("kd_api_requests_total", endpoint="unmatched", status="404") == 1
    assert sample("kd_api_request_seconds_count", endpoint="/predict") == 4
    assert sample("kd_api_request_seconds_sum", endpoint="/predict") > 0
    assert sample("kd_api_request_seconds_bucket", endpoint="/predict", le="+Inf") == 4
    assert sample("kd_api_batch_texts_count") == 3
    assert sample("kd_api_batch_texts_sum") == 1 + 2 + 3
    assert sample("kd_api_batch_texts_bucket", le="2.0") == 2
    assert sample("kd_api_errors_total", reason="invalid_request") == 1
    assert sample("kd_api_errors_total", reason="not_found") == 1
    assert sample("kd_api_queue_texts") == 0
    assert sample("kd_api_queue_limit_texts") == 3 * 16


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("KD_MAX_QUEUE", "2", "KD_MAX_QUEUE=2 is not allowed: it must be at least 3"),
    ("KD_TIMEOUT_S", "soon", "KD_TIMEOUT_S='soon' is not a number"),
    ("KD_TIMEOUT_S", "0", "KD_TIMEOUT_S=0.0 is not allowed"),
    ("KD_MAX_TEXTS", "many", "KD_MAX_TEXTS='many' is not an integer"),
])
def test_settings_out_of_range_are_refused_naming_the_key(export, monkeypatch, variable, value,
                                                          message):
    monkeypatch.setenv(variable, value)
    settings = {} if variable == "KD_MAX_TEXTS" else {"max_texts": 3}
    with pytest.raises(ValueError, match=message):
        create_app(str(export), form="onnx", **settings)
