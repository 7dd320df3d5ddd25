"""hfexport serve: a real server on a free loopback port, driven by the openai client and raw HTTP."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TORCH_BLOCKER

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from hfexport.errors import ConfigError  # noqa: E402
from hfexport.serve import ServeConfig  # noqa: E402
from hfexport.serve.config import ModelSettings, parse_per_model  # noqa: E402
from hfexport.serve.metrics import Metrics  # noqa: E402
from hfexport.serve.models import load_models  # noqa: E402
from hfexport.serve.server import make_server  # noqa: E402

TEXTS = ["The kettle clicked off.", "A much longer sentence about the metro line opening in March next year.",
         "Hello", "Can I change the delivery address after my order has shipped?"]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The model reads"}]
ENCODER_TASKS = ("feature-extraction", "text-classification", "token-classification", "question-answering",
                 "fill-mask")
NAMES = {"feature-extraction": "fe", "text-classification": "cls", "token-classification": "ner",
         "question-answering": "qa", "fill-mask": "mlm"}


@contextlib.contextmanager
def running(bundles: dict[str, Path], **settings):
    """A server over `bundles` ({name: folder}) on a free loopback port, in a thread; yields its URL."""
    config = ServeConfig(**{"max_wait_ms": 20.0, **settings})
    metrics = Metrics()
    models = load_models(list(bundles.values()), list(bundles), config, metrics)
    server = make_server(models, config, metrics=metrics)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        models.close()
        sock.close()


@pytest.fixture(scope="module")
def bundles(built_bundle, build_llm) -> dict[str, Path]:
    found = {NAMES[task]: built_bundle("bert", task) for task in ENCODER_TASKS}
    found["llm"] = build_llm("llama", [{"type": "export_onnx_generation"}])[0]
    return found


@pytest.fixture(scope="module")
def url(bundles):
    with running(bundles) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def runtime(bundles):
    from hfexport.runtime import load

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load(bundles[name])
        return cache[name]

    return get


def post(url: str, path: str, body, headers: dict | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=content, headers={"Content-Type": "application/json", **(headers or {})},
                      timeout=30)


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


# -- OpenAI routes through the openai client ----------------------------------------------------------------


def test_serve_embeddings_equal_runtime_in_float_and_base64(client, runtime):
    expected = runtime("fe")(TEXTS)
    for encoding in ("float", "base64"):
        result = client.embeddings.create(model="fe", input=TEXTS, encoding_format=encoding)
        got = np.array([d.embedding for d in result.data], np.float32) if encoding == "float" else np.stack(
            [np.frombuffer(__import__("base64").b64decode(d.embedding), "<f4") for d in result.data])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert [d.index for d in result.data] == list(range(len(TEXTS)))
        assert result.usage.prompt_tokens == int(runtime("fe").encode(TEXTS).attention_mask.sum())
    # The client's default (base64, decoded by the client) and a single string.
    one = client.embeddings.create(model="fe", input=TEXTS[0])
    np.testing.assert_allclose(one.data[0].embedding, expected[0], atol=1e-5)


def test_serve_embeddings_batch_concurrent_requests_with_results_unchanged(client, url, runtime):
    texts = [f"sentence number {i} " * (1 + i % 9) for i in range(24)]
    expected = runtime("fe")(texts)
    before = _metric(url, "hfexport_batch_size_count", 'model="fe"')
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda t: client.embeddings.create(model="fe", input=t).data[0].embedding, texts))
    np.testing.assert_allclose(np.array(got, np.float32), expected, atol=1e-5)
    calls = _metric(url, "hfexport_batch_size_count", 'model="fe"') - before
    assert calls < len(texts)  # requests that arrived together shared model calls


def test_serve_no_batching_runs_each_request_alone(bundles, runtime):
    texts = [f"sentence number {i}" for i in range(8)]
    with running({"fe": bundles["fe"]}, batching=False, max_wait_ms=200.0, max_batch_size=16) as base:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda t: post(base, "/v1/embeddings", {"model": "fe", "input": t}), texts))
        whole = post(base, "/v1/embeddings", {"model": "fe", "input": texts})  # one request: one call
        assert _metric(base, "hfexport_batch_size_count", 'model="fe"') == len(texts) + 1
    expected = runtime("fe")(texts)
    for answer, want in zip(got, expected):
        np.testing.assert_allclose(answer.json()["data"][0]["embedding"], want, atol=1e-5)
    np.testing.assert_allclose([d["embedding"] for d in whole.json()["data"]], expected, atol=1e-5)


def test_serve_chat_stream_joins_to_generate_for_the_same_seed(client, runtime):
    options = {"max_new_tokens": 12, "seed": 7, "do_sample": True, "temperature": 0.8, "top_p": 0.9}
    expected = runtime("llm").generate(MESSAGES, **options)
    stream = client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=12, seed=7, temperature=0.8,
                                            top_p=0.9, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected and text
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    generated = runtime("llm").generate_ids([runtime("llm").encode(MESSAGES)], **options)[0]
    assert finish == ["length" if len(generated) == 12 else "stop"]
    usage = chunks[-1].usage
    assert usage.completion_tokens == len(generated)
    assert usage.prompt_tokens == len(runtime("llm").encode(MESSAGES))
    # The same request without streaming: same text, same usage.
    whole = client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=12, seed=7, temperature=0.8,
                                           top_p=0.9)
    assert whole.choices[0].message.content == expected
    assert whole.usage.completion_tokens == len(generated) and whole.choices[0].finish_reason == finish[0]


def test_serve_completions_greedy_with_stop_equal_generate(client, runtime):
    llm = runtime("llm")
    full = llm.generate("The model reads", max_new_tokens=16, do_sample=False)
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop.strip(), full
    expected = llm.generate("The model reads", max_new_tokens=16, do_sample=False, stop=stop)
    result = client.completions.create(model="llm", prompt="The model reads", max_tokens=16, temperature=0,
                                       stop=stop)
    assert result.choices[0].text == expected and result.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="llm", prompt="The model reads", max_tokens=16, temperature=0,
                                         stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected
    two = client.completions.create(model="llm", prompt=["The model reads", "Hello"], max_tokens=5, temperature=0)
    assert [c.text for c in two.choices] == llm.generate(["The model reads", "Hello"], max_new_tokens=5,
                                                          do_sample=False)
    assert two.usage.total_tokens == two.usage.prompt_tokens + two.usage.completion_tokens


def test_serve_models_lists_every_bundle_with_its_task(client):
    listed = {m.id: m for m in client.models.list().data}
    assert set(listed) == {"fe", "cls", "ner", "qa", "mlm", "llm"}
    assert listed["llm"].model_extra["task"] == "text-generation"
    batching = client.models.retrieve("fe").model_extra["batching"]
    assert batching["max_wait_ms"] == 20.0 and batching["results_depend_on_batch"] is False  # fp32


def test_serve_openai_client_errors_are_typed(client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="nope", input="x")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.embeddings.create(model="fe", input=[""])
    with pytest.raises(openai.BadRequestError, match="feature-extraction"):
        client.embeddings.create(model="llm", input="x")
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="fe", input="x", dimensions=8)
    with pytest.raises(openai.BadRequestError, match="n"):
        client.chat.completions.create(model="llm", messages=MESSAGES, n=2)
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=10_000)
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model="llm", messages=MESSAGES,
                                       tools=[{"type": "function", "function": {"name": "f"}}])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="llm", messages=MESSAGES, temperature=3)


# -- the other tasks over raw HTTP --------------------------------------------------------------------------------


def test_serve_task_routes_return_the_runtime_result_shapes(url, runtime):
    cls = post(url, "/v1/classify", {"model": "cls", "input": TEXTS})
    assert _close(cls.json()["data"], runtime("cls")(TEXTS))
    ranked = post(url, "/v1/classify", {"input": TEXTS[0], "top_k": None}).json()["data"]  # model left out
    assert [r["label"] for r in ranked[0]] == [r["label"] for r in runtime("cls")([TEXTS[0]], top_k=None)[0]]
    ner = post(url, "/v1/token-classify", {"model": "ner", "input": TEXTS, "aggregation": "none"})
    assert _close(ner.json()["data"], runtime("ner")(TEXTS, aggregation="none"))
    qa = post(url, "/v1/question-answering", {"model": "qa", "question": "What opens?",
                                              "context": "The metro line opens in March."})
    assert _close(qa.json()["data"], runtime("qa")(question="What opens?", context="The metro line opens in March."))
    pairs = [{"question": "Who?", "context": TEXTS[1]}, {"question": "Where?", "context": TEXTS[3]}]
    assert _close(post(url, "/v1/question-answering", {"model": "qa", "input": pairs}).json()["data"],
                  runtime("qa")([(p["question"], p["context"]) for p in pairs]))
    masked = ["The kettle [MASK] off.", "Paris is the [MASK] of France."]
    mlm = post(url, "/v1/fill-mask", {"model": "mlm", "input": masked, "top_k": 3})
    assert _close(mlm.json()["data"], runtime("mlm")(masked, top_k=3))
    assert mlm.json()["usage"]["prompt_tokens"] > 0


def test_serve_fill_mask_text_without_mask_fails_alone_in_its_batch(url, runtime):
    bodies = [{"model": "mlm", "input": "no mask here"}] + [{"model": "mlm", "input": f"word [MASK] {i}"}
                                                            for i in range(6)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: post(url, "/v1/fill-mask", b), bodies))
    assert_openai_error(answers[0], 400)
    assert "mask" in answers[0].json()["error"]["message"].lower()
    for body, answer in zip(bodies[1:], answers[1:]):
        assert answer.status_code == 200 and _close(answer.json()["data"], runtime("mlm")([body["input"]]))


@pytest.mark.parametrize(("body", "status", "param"), [
    (b'{"model": "fe", "input": ', 400, None),
    (b"", 400, None),
    (b'["fe"]', 400, None),
    (b'{"model": "fe", "input": "\xff\xfe"}', 400, None),
    (b"[" * 20_000 + b"]" * 20_000, 400, None),
    (b'{"model": "fe", "input": NaN}', 400, None),
    ({"model": "fe"}, 400, "input"),
    ({"model": "fe", "input": 3}, 400, "input"),
    ({"model": "fe", "input": [1, 2]}, 400, "input"),
    ({"model": "fe", "input": []}, 400, "input"),
    ({"model": "fe", "input": "x", "colour": "red"}, 400, "colour"),
    ({"model": "fe", "input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
    ({"model": 5, "input": "x"}, 400, "model"),
    ({"model": "fe", "input": ["a"] * 3000}, 400, "input"),
    ({"model": "fe", "input": "word " * 300}, 400, "input"),
    ({"model": "zzz", "input": "x"}, 404, "model"),
])
def test_serve_malformed_embedding_requests_get_openai_shaped_4xx(url, body, status, param):
    assert_openai_error(post(url, "/v1/embeddings", body), status, param)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"model": "llm", "messages": []}, "messages"),
    ("/v1/chat/completions", {"model": "llm", "messages": [{"role": "robot", "content": "x"}]}, "messages"),
    ("/v1/chat/completions", {"model": "llm", "messages": MESSAGES, "seed": -1}, "seed"),
    ("/v1/chat/completions", {"model": "llm", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    ("/v1/chat/completions", {"model": "llm", "messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/v1/completions", {"model": "llm", "prompt": ""}, "prompt"),
    ("/v1/completions", {"model": "llm", "prompt": ["a", "b"], "stream": True}, "prompt"),
    ("/v1/completions", {"model": "llm", "prompt": "x", "echo": True}, "echo"),
    ("/v1/classify", {"model": "cls", "input": "x", "top_k": 0}, "top_k"),
    ("/v1/classify", {"model": "fe", "input": "x"}, "model"),
    ("/v1/token-classify", {"model": "ner", "input": "x", "aggregation": "max"}, "aggregation"),
    ("/v1/question-answering", {"model": "qa", "question": "Who?"}, "question"),
    ("/v1/question-answering", {"model": "qa", "input": [{"question": "Who?"}]}, "input"),
    ("/v1/question-answering", {"model": "qa", "question": "why " * 300, "context": "Because."}, None),
    ("/v1/fill-mask", {"model": "mlm", "input": "a [MASK]", "top_k": 1000}, "top_k"),
])
def test_serve_malformed_requests_on_every_route_get_400(url, path, body, param):
    assert_openai_error(post(url, path, body), 400, param)


def test_serve_token_limit_refuses_unless_truncate(url, runtime):
    long_text = "word " * 300
    assert_openai_error(post(url, "/v1/embeddings", {"model": "fe", "input": long_text}), 400, "input")
    cut = post(url, "/v1/embeddings", {"model": "fe", "input": long_text, "truncate": True})
    assert cut.status_code == 200
    np.testing.assert_allclose(cut.json()["data"][0]["embedding"], runtime("fe")([long_text])[0], atol=1e-5)


def test_serve_health_metrics_and_unknown_routes(url):
    health = httpx.get(url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    text = httpx.get(url + "/metrics").text
    for name in ("hfexport_requests_total", "hfexport_request_duration_seconds_bucket", "hfexport_batch_size_bucket",
                 "hfexport_queue_depth", "hfexport_tokens_total"):
        assert name in text
    assert 'hfexport_queue_depth{model="fe"} 0' in text
    assert_openai_error(httpx.get(url + "/v1/nothing"), 404)
    assert_openai_error(httpx.get(url + "/v1/embeddings"), 405)


# -- limits and failure behaviour -----------------------------------------------------------------------------------


def test_serve_body_limit_api_key_queue_full_and_timeout(bundles):
    fe = {"fe": bundles["fe"]}
    with running(fe, max_body_bytes=2048, api_key="s3cret") as base:
        auth = {"Authorization": "Bearer s3cret"}
        assert_openai_error(post(base, "/v1/embeddings", {"model": "fe", "input": "x"}), 401)
        assert_openai_error(post(base, "/v1/embeddings", {"model": "fe", "input": "x"},
                                 headers={"Authorization": "Bearer s3cret!"}), 401)
        assert httpx.get(base + "/health").status_code == 200  # open, for load balancers
        assert post(base, "/v1/embeddings", {"model": "fe", "input": "x"}, headers=auth).status_code == 200
        assert_openai_error(post(base, "/v1/embeddings", {"model": "fe", "input": "x" * 4000}, headers=auth), 413)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).embeddings.create(model="fe",
                                                                                                  input="x")
    # A batcher that holds the first request for 1.5 s: the queue (1 place) is full for the second.
    with running(fe, max_queue=1, max_wait_ms=1500.0, max_batch_size=64) as base, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, base, "/v1/embeddings", {"model": "fe", "input": "first"})
        time.sleep(0.3)
        refused = post(base, "/v1/embeddings", {"model": "fe", "input": "second"})
        assert_openai_error(refused, 429)
        assert refused.headers["retry-after"] == "1"
        assert first.result().status_code == 200
    with running(fe, timeout_s=0.2, max_wait_ms=1000.0, max_batch_size=64) as base:
        assert_openai_error(post(base, "/v1/embeddings", {"model": "fe", "input": "slow"}), 504)


def test_serve_generation_queue_full_timeout_and_disconnect(bundles):
    long = {"model": "llm", "prompt": "The model reads", "max_tokens": 240, "temperature": 0}
    with running({"llm": bundles["llm"]}, max_queue=1) as base, ThreadPoolExecutor(8) as pool:
        # One generation runs, one waits, the others find the queue full. Eight at once, not three: a quiet
        # machine finishes the tiny model's 240 tokens in ~50 ms, before a third lone request arrives.
        answers = list(pool.map(lambda _: post(base, "/v1/completions", long), range(8)))
        codes = sorted(a.status_code for a in answers)
        assert set(codes) == {200, 429} and codes.count(200) >= 2, codes
        # A client that leaves a stream stops its generation at the next token.
        before = _metric(base, "hfexport_tokens_total", 'kind="completion"')
        with httpx.stream("POST", base + "/v1/completions", json={**long, "stream": True}, timeout=30) as stream:
            next(stream.iter_lines())
        time.sleep(1.0)
        assert _metric(base, "hfexport_tokens_total", 'kind="completion"') - before < 240
    # 240 tokens of the tiny model take ~50 ms on a quiet machine: a 5 ms deadline always passes first.
    with running({"llm": bundles["llm"]}, timeout_s=0.005) as base:
        assert_openai_error(post(base, "/v1/completions", long), 504)
        events = httpx.post(base + "/v1/completions", json={**long, "stream": True}, timeout=30).text
        assert '"code":"timeout"' in events.replace(" ", "") and events.rstrip().endswith("data: [DONE]")


def test_serve_bounded_load_with_malformed_bodies(bundles, runtime):
    """200 requests from 16 connections, 10% malformed: each bad one a 4xx, each good one its embedding."""
    bench = _bench_script()
    texts = [f"a short sentence number {i}" for i in range(40)]
    plan = bench.build_requests(texts, 200, 0.1, model="fe")
    expected = dict(zip(texts, runtime("fe")(texts)))
    with running({"fe": bundles["fe"]}, max_body_bytes=bench.BODY_LIMIT) as base:
        import asyncio

        results = asyncio.run(bench.run_load(base, [body for _, _, body in plan], clients=16, time_limit=60))
        after = httpx.get(base + "/metrics").text
    assert all(r is not None for r in results)
    assert sum(kind != "good" for kind, _, _ in plan) >= 10
    for (kind, text, _), (status, _, payload) in zip(plan, results):
        if kind == "good":
            assert status == 200, payload
            np.testing.assert_allclose(json.loads(payload)["data"][0]["embedding"], expected[text], atol=1e-5)
        else:
            assert 400 <= status < 500, (kind, status, payload)
    assert 'hfexport_queue_depth{model="fe"} 0' in after


# -- the command: torch-free, SIGTERM drains --------------------------------------------------------------------

_SERVE_CHILD = TORCH_BLOCKER + """
import atexit
atexit.register(lambda: print("heavy modules:", json.dumps(sorted(
    m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))), file=sys.stderr, flush=True))
from hfexport.cli import main
sys.argv = ["hfexport", "serve", *sys.argv[1:]]
main()
"""


def test_serve_command_without_torch_serves_and_drains_on_sigterm(bundles):
    proc = subprocess.Popen([sys.executable, "-c", _SERVE_CHILD, str(bundles["fe"]), "--port", "0",
                             "--max-wait-ms", "1500", "--max-batch-size", "64"], stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while " on http://127.0.0.1:" not in (line := proc.stderr.readline()):
            lines.append(line)
            assert line, "".join(lines)  # the server exited before it served
        base = line.rsplit(" on ", 1)[1].strip()
        name = Path(bundles["fe"]).name
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(post, base, "/v1/embeddings", {"model": name, "input": "still answered"})
            time.sleep(0.4)  # it waits in the batcher for 1.5 s
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(httpx.HTTPError):  # no new connections once draining
                post(base, "/v1/embeddings", {"model": name, "input": "too late"}).raise_for_status()
            assert in_flight.result().status_code == 200
        assert proc.wait(30) == 0
        rest = proc.stderr.read()
        assert "stopped" in rest and "heavy modules: []" in rest, rest
    finally:
        proc.kill()
        proc.wait()


def test_serve_command_bad_input_is_one_line(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "hfexport.cli", "serve", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.startswith("error:") and len(missing.stderr.splitlines()) == 1
    bad = subprocess.run([sys.executable, "-m", "hfexport.cli", "serve", str(tmp_path), "--max-batch-size", "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "--max-batch-size" in bad.stderr


def test_serve_config_checks_and_per_model_flags():
    assert parse_per_model(["16", "fe=4"], int, "--max-batch-size") == (16, {"fe": 4})
    with pytest.raises(ConfigError, match="NAME=NUMBER"):
        parse_per_model(["fe=x"], int, "--max-batch-size")
    config = ServeConfig(max_batch_size=16, models={"fe": ModelSettings(max_batch_size=4, max_wait_ms=0)})
    assert config.batching_for("fe", 32) == (4, 0.0) and config.batching_for("other", 32) == (16, 0.005)
    assert ServeConfig().batching_for("any", 8) == (8, 0.005)  # the bundle's evaluation batch size
    for bad in ({"max_queue": 0}, {"timeout_s": 0}, {"api_key": " "}, {"max_wait_ms": -1}):
        with pytest.raises(ConfigError):
            ServeConfig(**bad)


# -- the real model ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_minilm_int8_batched_embeddings_stay_close_and_unbatched_equal(tmp_path):
    """The packaged all-MiniLM-L6-v2 at the default int8: batched answers within the measured batch effect of
    dynamic int8 (docs/decisions/0092), unbatched ones equal to load(bundle)(text)."""
    from hfexport.api import build
    from hfexport.data import default_eval_texts
    from hfexport.progress import Progress
    from hfexport.runtime import load

    bundle = build(output=tmp_path / "minilm", progress=Progress("quiet")).bundle
    texts = default_eval_texts()[:96]
    predictor = load(bundle)
    alone = np.stack([predictor([t])[0] for t in texts])
    for batching in (True, False):
        with running({"minilm": bundle}, batching=batching, max_wait_ms=5.0) as base:
            client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
            got = _embed_each(client, "minilm", texts, workers=32)
            calls = _metric(base, "hfexport_batch_size_count", 'model="minilm"')
            listed = client.models.retrieve("minilm").model_extra["batching"]
        assert listed["results_depend_on_batch"] is True
        if batching:
            assert calls < len(texts)
            assert ((got * alone).sum(1) / np.linalg.norm(got, axis=1)).min() > 0.96
        else:
            assert calls == len(texts)
            np.testing.assert_allclose(got, alone, atol=1e-6)


# -- helpers ----------------------------------------------------------------------------------------------------------


def _close(got, want, atol=1e-4) -> bool:
    """JSON results equal to runtime results, floats within `atol`."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_close(got[k], want[k], atol) for k in want)
    if isinstance(want, (list, tuple)):
        return isinstance(got, list) and len(got) == len(want) and all(_close(g, w, atol) for g, w in zip(got, want))
    if isinstance(want, float):
        return abs(got - want) <= atol
    return got == want


def _embed_each(client, model: str, texts: list[str], workers: int) -> np.ndarray:
    """One request per text, `workers` at a time."""
    with ThreadPoolExecutor(workers) as pool:
        return np.array(list(pool.map(lambda t: client.embeddings.create(model=model, input=t).data[0].embedding,
                                      texts)), np.float32)


def _metric(url: str, name: str, labels: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _bench_script():
    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_serve.py"
    spec = importlib.util.spec_from_file_location("bench_serve", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
