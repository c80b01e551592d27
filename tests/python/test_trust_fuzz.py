"""A bounded fuzz run of the tracking API (a fixed seed and a fixed count): random
and mutated MLflow filters, order-by terms and JSON bodies, sent by a viewer and an
editor. No answer may be a server error, every refusal is MLflow's JSON error, the
server's memory stays bounded, and a well-formed call still works afterwards."""
import json
import os
import random
import subprocess

import httpx
import pytest

from conftest import BIN
from test_collab_ipynb import Server

CASES = 400
SEED = 20261206

PIECES = [
    "metrics.acc", "params.lr", "tags.`a b`", "tags.mlflow.runName", "attributes.status",
    "run_name", "name", "attr.start_time", "metrics.", "params.`", "tags.\"x\"", "é", "日本",
    "=", "!=", ">=", "<", " LIKE ", " ILIKE ", " IN ", " NOT IN ", " AND ", " and ", " OR ",
    "'x'", "'%'", "'%%%%%%%%%%%%%%%%%%%%!'", "\"q\"", "('a', 'b')", "(", ")", "'", "`", "0.5",
    "-1e308", "1e999", "NaN", "\x00", "\\", ";", " ", "  ", "\u202e", "🦀", "%_%_", "'é%'",
]
ENDPOINTS = [
    "runs/search", "experiments/search", "registered-models/search", "model-versions/search",
    "runs/create", "runs/log-metric", "runs/log-batch", "runs/set-tag", "experiments/create",
    "registered-models/create", "model-versions/create", "metrics/get-history", "runs/get",
]
VALUES = [None, True, 0, -1, 2**63, 1.5, float("inf"), "", "x" * 5000, "é", [], [1, "a"], {}, {"k": [None]},
          "../../tokens.json", "%2e%2e", "\x00"]
KEYS = ["experiment_id", "experiment_ids", "filter", "filter_string", "order_by", "max_results", "run_id",
        "key", "value", "timestamp", "step", "metrics", "params", "tags", "name", "source", "page_token",
        "run_name", "start_time", "metric_key"]


def random_filter(rng):
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 9)))
    if rng.random() < 0.3:
        cut = rng.randint(0, len(text))
        text = text[:cut] + chr(rng.randint(0x20, 0x2FFF)) + text[cut:]
    return text


def random_body(rng):
    body = {rng.choice(KEYS): rng.choice(VALUES) for _ in range(rng.randint(0, 6))}
    if rng.random() < 0.5:
        body[rng.choice(["filter", "filter_string"])] = random_filter(rng)
    if rng.random() < 0.3:
        body["order_by"] = [random_filter(rng)]
    return body


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("fuzz"))
    s.viewer = subprocess.run(
        [BIN, "collab", "token", "create", "--data", str(s.data), "--name", "fuzz-viewer", "--role", "viewer"],
        check=True, capture_output=True, text=True).stdout.strip()
    yield s
    s.stop()


def test_fuzzed_filters_and_bodies_never_break_the_server(server):
    rng = random.Random(SEED)
    base = f"http://127.0.0.1:{server.port}/api/2.0/mlflow/"
    with httpx.Client(timeout=60) as client:
        exp = client.post(base + "experiments/create", json={"name": "fuzz"},
                          headers={"Authorization": f"Bearer {server.token}"}).json()["experiment_id"]
        for i in range(20):
            client.post(base + "runs/create", json={"experiment_id": exp, "run_name": f"r{i}-é"},
                        headers={"Authorization": f"Bearer {server.token}"})
        client.post(base + "runs/search", json={"experiment_ids": [exp]},
                    headers={"Authorization": f"Bearer {server.token}"})
        before = rss_kib(server.proc.pid)
        seen = {}
        for case in range(CASES):
            token = server.viewer if case % 2 else server.token
            endpoint = rng.choice(ENDPOINTS)
            body = random_body(rng)
            if "search" in endpoint and rng.random() < 0.7:
                body["experiment_ids"] = [exp]
            raw = json.dumps(body, allow_nan=True)
            if rng.random() < 0.1:
                cut = rng.randint(0, len(raw))
                raw = raw[:cut] + rng.choice(["\x00", "{", "]", "\\u12", "é"]) + raw[cut:]
            answer = client.post(base + endpoint, content=raw.encode(errors="surrogatepass"),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
            assert answer.status_code < 500, f"case {case}: {endpoint} {raw[:300]!r} -> {answer.text[:300]}"
            if answer.status_code >= 400:
                error = answer.json()
                assert error.get("error_code") and error.get("message"), answer.text[:300]
        after = rss_kib(server.proc.pid)
        # Bounded: the run may cache and allocate, but not grow with what it was fed.
        assert after - before < 256 * 1024, f"RSS grew from {before} KiB to {after} KiB"
        assert 200 in seen and any(code >= 400 for code in seen), seen
        ok = client.post(base + "runs/search", json={"experiment_ids": [exp], "filter": "attributes.run_name LIKE 'r1%'"},
                         headers={"Authorization": f"Bearer {server.viewer}"})
        assert ok.status_code == 200
        assert sorted(r["info"]["run_name"] for r in ok.json()["runs"]) == sorted(
            f"r{i}-é" for i in range(20) if str(i).startswith("1"))
