"""Serving benchmark: `ferrolab serve` against llama.cpp's OpenAI-compatible server
(llama-cpp-python), one load generator, the same prompts, SmolLM2's GGUF on the CPU,
in the same run.

Reports, for each server: time to first token and single-stream decode tokens/s
(streamed requests, one at a time), and aggregate generated tokens/s with 1, 8 and
32 clients at once. Prints the ratios ferrolab / llama.cpp.

    make bench-serve          (builds llama-cpp-python into a cached venv first)
    FERROLAB_BIN=... LLAMA_PYTHON=... python bench/serve_bench.py GGUF [--threads 2]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

TOPICS = [
    "the ocean", "mountains", "coffee", "trains", "libraries", "winter", "bees", "bridges",
    "rivers", "the moon", "bicycles", "bread", "volcanoes", "owls", "music", "deserts",
    "lighthouses", "gardens", "clocks", "rain", "maps", "forests", "kites", "islands",
    "cities", "snow", "markets", "stars", "boats", "tea", "castles", "wind",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, seconds=300):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not start")


def messages(topic):
    return [{"role": "user", "content": f"Write a short paragraph about {topic}."}]


def streamed(url, model, topic, max_tokens):
    """One streamed chat request: (time to first token, decode tokens/s, tokens)."""
    body = {"model": model, "messages": messages(topic), "max_tokens": max_tokens, "temperature": 0, "stream": True}
    start = time.perf_counter()
    first = last = None
    pieces = 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                pieces += 1
    ttft = first - start
    decode = (pieces - 1) / (last - first) if pieces > 1 and last > first else float("nan")
    return ttft, decode, pieces


def complete(url, model, topic, max_tokens):
    body = {"model": model, "messages": messages(topic), "max_tokens": max_tokens, "temperature": 0}
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=1200)
    response.raise_for_status()
    return response.json()["usage"]["completion_tokens"]


def aggregate(url, model, clients, requests, max_tokens):
    topics = [TOPICS[i % len(TOPICS)] for i in range(requests)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = list(pool.map(lambda t: complete(url, model, t, max_tokens), topics))
    return sum(tokens) / (time.perf_counter() - start)


def measure(name, url, model, args):
    out = {}
    complete(url, model, "warm-up", 4)
    runs = [streamed(url, model, TOPICS[i], args.stream_tokens) for i in range(args.stream_requests)]
    out["ttft_s"] = statistics.median(r[0] for r in runs)
    out["decode_tokens_per_s"] = statistics.median(r[1] for r in runs)
    for clients in (1, 8, 32):
        requests = max(clients, args.min_requests)
        out[f"aggregate_c{clients}"] = aggregate(url, model, clients, requests, args.agg_tokens)
        print(f"  {name}: concurrency {clients}: {out[f'aggregate_c{clients}']:.1f} tokens/s", file=sys.stderr, flush=True)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("gguf")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stream-requests", type=int, default=5)
    p.add_argument("--stream-tokens", type=int, default=128)
    p.add_argument("--agg-tokens", type=int, default=64)
    p.add_argument("--min-requests", type=int, default=8)
    p.add_argument("--only", choices=["ferrolab", "llama.cpp"])
    args = p.parse_args()
    results = {}
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))

    def run(name, command, port, env=None):
        # The server's own output goes to a file, shown if the measurement fails.
        log = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc)
            print(f"{name} ...", file=sys.stderr, flush=True)
            results[name] = measure(name, url, "smollm2", args)
        except Exception:
            log.seek(0)
            print(f"{name} failed; the end of its output:\n{log.read()[-4000:]}", file=sys.stderr)
            raise
        finally:
            proc.terminate()
            proc.wait()

    if args.only != "llama.cpp":
        port = free_port()
        log = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"serve-bench-{port}.sqlite")
        run("ferrolab", [os.environ["FERROLAB_BIN"], "serve", args.gguf, "--model-name", "smollm2",
                         "--bind", f"127.0.0.1:{port}", "--max-batch", "32", "--max-queue", "256", "--log", log],
            port, env)
    if args.only != "ferrolab":
        port = free_port()
        server = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama_server.py")
        run("llama.cpp", [os.environ["LLAMA_PYTHON"], server, "--model", args.gguf,
                          "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                          "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
                          "--n_ctx", "2048", "--verbose", "False"],
            port)

    keys = ["ttft_s", "decode_tokens_per_s", "aggregate_c1", "aggregate_c8", "aggregate_c32"]
    print(f"{'':24}" + "".join(f"{k:>22}" for k in keys))
    for name, r in results.items():
        print(f"{name:24}" + "".join(f"{r[k]:>22.3f}" for k in keys))
    if len(results) == 2:
        ours, anchor = results["ferrolab"], results["llama.cpp"]
        print(f"{'ratio ferrolab/llama.cpp':24}" + "".join(f"{ours[k] / anchor[k]:>21.2f}x" for k in keys))
        print("(ttft: lower is better; the others: higher is better. Goals: decode >= 1.0x, aggregate_c32 >= 1.5x)")
    json.dump(results, sys.stderr)
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
