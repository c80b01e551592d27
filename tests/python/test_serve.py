"""`ferrolab serve` with real clients: the official OpenAI Python client against the
real SmolLM2 GGUF and a LoRA adapter (greedy answers equal the engine's own),
Prometheus' own parser on /metrics, 32 concurrent clients, disconnects, a full
queue, API keys, feedback that survives kill -9 and becomes a fine-tuning set, and
schemathesis against /openapi.json."""
import base64
import json
import os
import signal
import sqlite3
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, SMOLLM2

PROMPT = "The capital of France is"
QUESTION = "What is the capital of France?"
# SmolLM2 answers this at length (hundreds of tokens, greedy).
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]
EXAMPLES = [
    {"prompt": f"Q: what is {a} plus {b}?\nA:", "completion": f" {a + b}"}
    for a in range(4) for b in range(4)
]


class Server:
    def __init__(self, *args, env=None):
        self.args = [BIN, "serve", *map(str, args)]
        self.env = env
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.proc.kill()
            raise RuntimeError(f"ferrolab serve did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line
        self.stderr = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def weights(self):
        """The layouts decoding reads, from the start-up line on stderr."""
        for _ in range(100):
            for line in list(self.stderr):
                if "decoding weights: " in line:
                    return line.split("decoding weights: ", 1)[1].split(";", 1)[0]
            time.sleep(0.1)
        raise AssertionError(f"no start-up line in {self.stderr!r}")

    def client(self, api_key="unused", timeout=300):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=timeout)

    def metrics(self):
        text = httpx.get(self.url + "/metrics").text
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def engine(*args):
    """The engine's own answer, without the server (with the int8 decoding weights
    the server uses by default)."""
    out = subprocess.run([BIN, "model", "generate", "--json", "--weights", "q8", *map(str, args)], check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A LoRA adapter for SmolLM2, trained for a few steps at a high rate so that
    it changes the model's answers."""
    folder = tmp_path_factory.mktemp("adapter")
    data = folder / "train.jsonl"
    data.write_text("\n".join(json.dumps(e) for e in EXAMPLES) + "\n")
    config = folder / "run.toml"
    config.write_text(
        f'model = "{SMOLLM2}"\ndata = "{data}"\nsteps = 4\nbatch_size = 2\nmax_length = 32\nlr = 1e-2\n'
        f'r = 8\ntargets = ["q", "v"]\neval_fraction = 0.0\ndevice = "cpu"\noutput = "{folder / "run"}"\n'
    )
    subprocess.run([BIN, "finetune", str(config)], check=True, capture_output=True, timeout=900)
    return folder / "run" / "adapter"


@pytest.fixture(scope="module")
def server(adapter, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "requests.sqlite"
    s = Server(SMOLLM2, "--model-name", "smollm2", "--adapter", f"tuned={adapter}", "--bind", "127.0.0.1:0",
               "--max-batch", "8", "--max-queue", "64", "--log", log)
    s.log = log
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    subprocess.run([BIN, "model", "tiny", str(folder), "--seed", "3"], check=True, capture_output=True)
    return folder


def test_models_lists_the_base_and_each_adapter(server):
    client = server.client()
    ids = sorted(m.id for m in client.models.list())
    assert ids == ["smollm2", "tuned"]
    tuned = client.models.retrieve("tuned")
    assert tuned.owned_by == "ferrolab"
    assert tuned.model_extra["parent"] == "smollm2"


def test_decoding_reads_the_files_own_4bit_blocks(server):
    # SmolLM2's file: 210 Q4_1 projections (kept as they are, bit for bit) and its
    # Q8_0 embedding, tied as the LM head (int8).
    assert server.weights() == "q4_1 ×210, q8_0 ×1"


def test_greedy_completion_equals_the_engine(server):
    ours = engine("--model", SMOLLM2, "--max-tokens", 16, PROMPT)
    got = server.client().completions.create(model="smollm2", prompt=PROMPT, max_tokens=16, temperature=0)
    assert got.object == "text_completion"
    assert got.choices[0].text == ours["text"]
    assert "Paris" in got.choices[0].text
    assert got.choices[0].finish_reason == ours["finish_reason"]
    assert got.usage.prompt_tokens == len(ours["prompt_ids"])
    assert got.usage.completion_tokens == len(ours["completion_ids"])
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens


def test_greedy_chat_equals_the_engine_and_streams_the_same_text(server):
    ours = engine("--model", SMOLLM2, "--max-tokens", 24, "--chat", QUESTION)
    client = server.client()
    messages = [{"role": "user", "content": QUESTION}]
    got = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=24, temperature=0)
    assert got.object == "chat.completion"
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == ours["text"]
    assert got.usage.prompt_tokens == len(ours["prompt_ids"])

    chunks = list(client.chat.completions.create(model="smollm2", messages=messages, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ours["text"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [ours["finish_reason"]]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(ours["completion_ids"])
    assert len({c.id for c in chunks}) == 1


def test_the_raw_stream_is_server_sent_events_ending_with_done(server):
    body = {"model": "smollm2", "prompt": PROMPT, "max_tokens": 5, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == engine("--model", SMOLLM2, "--max-tokens", 5, PROMPT)["text"]


def test_an_adapter_is_chosen_by_model_name(server, adapter):
    base = engine("--model", SMOLLM2, "--max-tokens", 12, "Q: what is 2 plus 1?\nA:")
    tuned = engine("--model", SMOLLM2, "--adapter", adapter, "--max-tokens", 12, "Q: what is 2 plus 1?\nA:")
    # The adapter changes the model; the server must apply it, and only for "tuned".
    assert max(abs(a - b) for a, b in zip(base["last_logits"], tuned["last_logits"])) > 1e-3
    client = server.client()
    got = client.completions.create(model="tuned", prompt="Q: what is 2 plus 1?\nA:", max_tokens=12, temperature=0)
    assert got.choices[0].text == tuned["text"]
    assert got.model == "tuned"
    got = client.completions.create(model="smollm2", prompt="Q: what is 2 plus 1?\nA:", max_tokens=12, temperature=0)
    assert got.choices[0].text == base["text"]


def test_embeddings_are_mean_pooled_hidden_states_in_both_encodings(server):
    client = server.client()
    got = client.embeddings.create(model="smollm2", input=["the cat sat", "stock markets fell", "the cat sat"])
    vectors = [d.embedding for d in got.data]
    assert [d.index for d in got.data] == [0, 1, 2]
    assert all(len(v) == 576 for v in vectors)  # SmolLM2-135M's hidden size
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    raw = httpx.post(server.url + "/v1/embeddings", json={"model": "smollm2", "input": "the cat sat", "encoding_format": "base64"}).json()
    decoded = struct.unpack(f"<{576}f", base64.b64decode(raw["data"][0]["embedding"]))
    plain = httpx.post(server.url + "/v1/embeddings", json={"model": "smollm2", "input": "the cat sat", "encoding_format": "float"}).json()
    assert list(decoded) == plain["data"][0]["embedding"]
    assert max(abs(a - b) for a, b in zip(decoded, vectors[0])) < 1e-6
    stock = client.embeddings.create(model="smollm2", input="stock markets fell")
    assert got.usage.prompt_tokens == 2 * raw["usage"]["prompt_tokens"] + stock.usage.prompt_tokens


def expect_error(call, error, status, *words):
    with pytest.raises(error) as caught:
        call()
    assert caught.value.status_code == status
    body = caught.value.body
    assert set(body) >= {"message", "type", "param", "code"}, body
    for word in words:
        assert word in body["message"], body
    return body


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server):
    client = server.client()
    body = expect_error(lambda: client.completions.create(model="gpt-9", prompt="x"), openai.NotFoundError, 404, "gpt-9", "smollm2, tuned")
    assert body["code"] == "model_not_found" and body["param"] == "model"
    expect_error(lambda: client.completions.create(model="smollm2", prompt="x", max_tokens=-1), openai.BadRequestError, 400, "max_tokens must be at least 1, got -1")
    expect_error(lambda: client.completions.create(model="smollm2", prompt="x", max_tokens=10**12), openai.BadRequestError, 400, "more than this server allows")
    expect_error(lambda: client.completions.create(model="smollm2", prompt=[1] * 8192, max_tokens=1), openai.BadRequestError, 400, "maximum context length is 8192", "8192")
    expect_error(lambda: client.completions.create(model="smollm2", prompt=[1] * 8000, max_tokens=500), openai.BadRequestError, 400, "lower max_tokens")
    expect_error(lambda: client.completions.create(model="smollm2", prompt=[99999999]), openai.BadRequestError, 400, "outside the vocabulary")
    expect_error(lambda: client.completions.create(model="smollm2", prompt="x", temperature="hot"), openai.BadRequestError, 400, "invalid type")
    expect_error(lambda: client.chat.completions.create(model="smollm2", messages=[]), openai.BadRequestError, 400, "messages is empty")
    expect_error(lambda: client.chat.completions.create(model="smollm2", messages=[{"role": "wizard", "content": "hi"}]), openai.BadRequestError, 400, "wizard")
    expect_error(lambda: client.completions.create(model="smollm2", prompt="x", logprobs=2), openai.BadRequestError, 400, "logprobs are not supported")
    raw = httpx.post(server.url + "/v1/chat/completions", content=b'{"model": "smollm2", "messages": [', headers={"content-type": "application/json"})
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
    raw = httpx.post(server.url + "/v1/completions", content=b"")
    assert raw.status_code == 400 and "no body" in raw.json()["error"]["message"]
    raw = httpx.get(server.url + "/v2/everything")
    assert raw.status_code == 404 and raw.json()["error"]["code"] == "unknown_url"
    # Still serving, and every refused request was logged with its status.
    assert client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=3, temperature=0).choices[0].text
    statuses = [row[0] for row in sqlite3.connect(server.log).execute("SELECT status FROM requests")]
    assert statuses.count(404) >= 1 and statuses.count(400) >= 10


def test_metrics_parse_with_prometheus_and_move_with_requests(server):
    before = server.metrics()
    got = server.client().completions.create(model="smollm2", prompt=PROMPT, max_tokens=6, temperature=0)
    after = server.metrics()
    key = ("ferrolab_requests_total", (("route", "/v1/completions"), ("status", "200")))
    assert after[key] == before.get(key, 0) + 1
    gen = ("ferrolab_generation_tokens_total", ())
    assert after[gen] == before[gen] + got.usage.completion_tokens
    prompt = ("ferrolab_prompt_tokens_total", ())
    assert after[prompt] == before[prompt] + got.usage.prompt_tokens
    for name in ["ferrolab_time_to_first_token_seconds_count", "ferrolab_request_latency_seconds_count"]:
        assert after[(name, ())] == before[(name, ())] + 1
    itl = ("ferrolab_inter_token_latency_seconds_count", ())
    assert after[itl] == before[itl] + got.usage.completion_tokens - 1
    assert after[("ferrolab_queue_length", ())] == 0
    assert ("ferrolab_running_batch_size", ()) in after


def test_32_concurrent_clients_are_batched_and_answered_correctly(server):
    prompts = [f"List {n} colours:" for n in (2, 3, 4, 5)]
    client = server.client()
    # Each prompt alone first: what every concurrent client must get.
    alone = {p: client.completions.create(model="smollm2", prompt=p, max_tokens=8, temperature=0).choices[0].text for p in prompts}
    before = server.metrics()
    jobs = [prompts[i % 4] for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda p: client.completions.create(model="smollm2", prompt=p, max_tokens=8, temperature=0), jobs))
    for prompt, answer in zip(jobs, answers):
        assert answer.choices[0].text == alone[prompt]
    after = server.metrics()
    steps = after[("ferrolab_decode_steps_total", ())] - before[("ferrolab_decode_steps_total", ())]
    sequences = after[("ferrolab_decoded_sequences_total", ())] - before[("ferrolab_decoded_sequences_total", ())]
    # 32 requests of 8 tokens (the first from the prompt's pass): 7 decode steps
    # each; batched, far fewer steps than sequences.
    assert sequences == 32 * 7
    assert steps < sequences / 2, (steps, sequences)


@pytest.fixture
def single(tmp_path):
    """One sequence at a time and two places in the queue."""
    s = Server(SMOLLM2, "--model-name", "smollm2", "--bind", "127.0.0.1:0", "--max-batch", "1", "--max-queue", "2",
               "--log", tmp_path / "log.sqlite")
    s.log = tmp_path / "log.sqlite"
    yield s
    s.stop()


def test_a_client_that_disconnects_mid_stream_frees_its_place(single):
    body = {"model": "smollm2", "messages": STORY, "max_tokens": 4000, "temperature": 0, "stream": True}
    with httpx.stream("POST", single.url + "/v1/chat/completions", json=body, timeout=120) as response:
        lines = response.iter_lines()
        seen = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: {") for line in seen)
    # The only place in the batch is free again: this answers at once, not after
    # 4000 tokens of the abandoned story.
    got = single.client(timeout=60).completions.create(model="smollm2", prompt=PROMPT, max_tokens=4, temperature=0)
    assert got.choices[0].text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = sqlite3.connect(single.log).execute("SELECT status, completion_tokens FROM requests").fetchall()
        if any(status == 499 for status, _ in rows):
            break
        time.sleep(0.2)
    assert any(status == 499 for status, _ in rows), rows


def test_a_full_queue_answers_429_and_the_others_are_served(single):
    body = {"model": "smollm2", "messages": STORY, "max_tokens": 300, "temperature": 0, "stream": True}
    streams = []
    try:
        # One runs, two wait: the queue is full.
        for _ in range(3):
            cm = httpx.stream("POST", single.url + "/v1/chat/completions", json=body, timeout=120)
            streams.append((cm, cm.__enter__()))
            time.sleep(0.3)
        wait = time.monotonic() + 30
        while single.metrics()[("ferrolab_queue_length", ())] < 2 and time.monotonic() < wait:
            time.sleep(0.1)
        refused = httpx.post(single.url + "/v1/completions", json={"model": "smollm2", "prompt": "x", "max_tokens": 1})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full"
    finally:
        for cm, _ in streams:
            cm.__exit__(None, None, None)
    got = single.client(timeout=120).completions.create(model="smollm2", prompt=PROMPT, max_tokens=3, temperature=0)
    assert got.choices[0].text


def test_the_api_key_is_required_on_v1_routes(tiny, tmp_path):
    s = Server(tiny, "--bind", "127.0.0.1:0", "--api-key", "s3cret", "--log", tmp_path / "log.sqlite")
    try:
        expect_error(lambda: s.client(api_key="wrong").models.list(), openai.AuthenticationError, 401, "incorrect API key")
        missing = httpx.post(s.url + "/v1/completions", json={"model": "model", "prompt": "x"})
        assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]["message"]
        assert [m.id for m in s.client(api_key="s3cret").models.list()] == ["model"]
        assert httpx.get(s.url + "/health").json()["status"] == "ok"
        # Random f32 weights are not Q4_1 values: int8 copies, never the 4-bit layout.
        assert s.weights().startswith("q8_0 ×"), s.weights()
    finally:
        s.stop()


def test_feedback_survives_kill_9_and_exports_a_dataset_finetune_takes(tiny, tmp_path):
    log = tmp_path / "log.sqlite"
    s = Server(tiny, "--bind", "127.0.0.1:0", "--log", log)
    client = s.client()
    chat = client.chat.completions.create(model="model", messages=[{"role": "user", "content": "hello"}], max_tokens=6, temperature=0)
    plain = client.completions.create(model="model", prompt="abc", max_tokens=6, temperature=0)
    poor = client.completions.create(model="model", prompt="xyz", max_tokens=6, temperature=0)
    for id_, score in [(chat.id, 5), (plain.id, 4), (poor.id, 1)]:
        ok = httpx.post(s.url + "/v1/feedback", json={"id": id_, "score": score, "user": "ana", "label": "good" if score > 2 else "bad"})
        assert ok.status_code == 200 and ok.json()["stored"] is True
    unknown = httpx.post(s.url + "/v1/feedback", json={"id": "cmpl-nope", "score": 3})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "request_not_found"
    bad = httpx.post(s.url + "/v1/feedback", json={"id": chat.id})
    assert bad.status_code == 400 and "score" in bad.json()["error"]["message"]
    s.stop(signal.SIGKILL)

    s.start()  # same log
    try:
        more = httpx.post(s.url + "/v1/feedback", json={"id": poor.id, "score": 2, "comment": "wrong"})
        assert more.status_code == 200
    finally:
        s.stop()
    rows = sqlite3.connect(log).execute("SELECT request_id, score FROM feedback ORDER BY seq").fetchall()
    assert rows == [(chat.id, 5.0), (plain.id, 4.0), (poor.id, 1.0), (poor.id, 2.0)]

    out = tmp_path / "good.jsonl"
    done = subprocess.run([BIN, "feedback", "export", "unused", "--log", log, "--min-score", "4", "--out", out], capture_output=True, text=True, check=True)
    assert "2 completions" in done.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["messages"] == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": chat.choices[0].message.content}]
    assert lines[1]["prompt"] == "abc" and lines[1]["completion"] == plain.choices[0].text
    config = tmp_path / "run.toml"
    config.write_text(f'model = "{tiny}"\ndata = "{out}"\nsteps = 2\nbatch_size = 2\neval_fraction = 0.0\noutput = "{tmp_path / "run"}"\n')
    trained = subprocess.run([BIN, "finetune", str(config)], capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["status"] == "finished"


def test_schemathesis_finds_no_server_error(tiny, tmp_path):
    s = Server(tiny, "--bind", "127.0.0.1:0", "--max-tokens", "4", "--log", tmp_path / "log.sqlite")
    try:
        st = os.path.join(os.path.dirname(os.path.realpath(os.sys.executable)), "st")
        if not os.path.exists(st):
            st = os.path.join(os.path.dirname(os.sys.executable), "st")
        result = subprocess.run(
            [st, "run", s.url + "/openapi.json", "--checks",
             "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
             "--max-examples", "40", "--request-timeout", "60", "--no-color", "--seed", "1"],
            # schemathesis keeps a cache in its working directory: not the source tree.
            capture_output=True, text=True, timeout=900, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert httpx.get(s.url + "/health").status_code == 200
    finally:
        s.stop()
