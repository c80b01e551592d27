"""Tracking benchmark: one `mlflow` client workload against `ferrolab collab serve`
and against MLflow's own tracking server (`mlflow server`, SQLite backend) in the
same run:

1. one run, 10,000 `log_metric` calls in a row;
2. `log_batch` of 10,000 points (the client sends them as 10 requests of 1,000);
3. `search_runs` over 2,000 runs (each with a metric and a param; created before
   timing, then 20 s for each server to settle) with a filter and an order, every
   page fetched, 5 times.

Prints each part's throughput on both servers and the ratio ferrolab / MLflow
(goal: at least 5 on every part).

    make bench-tracking
    FERROLAB_BIN=... MLFLOW_SERVER=.../bin/mlflow python bench/tracking_bench.py [--quick] [--only PART]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.1)
    sys.exit("server did not start")


def start_ferrolab(work):
    data = work / "collab"
    port = free_port()
    proc = subprocess.Popen([os.environ["FERROLAB_BIN"], "collab", "serve", "--data", str(data), "--bind", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    token = subprocess.run([os.environ["FERROLAB_BIN"], "collab", "token", "create", "--data", str(data), "--name", "bench",
                            "--role", "editor"], check=True, capture_output=True, text=True).stdout.strip()
    return proc, f"http://127.0.0.1:{port}", token


def start_mlflow(work):
    port = free_port()
    proc = subprocess.Popen([os.environ["MLFLOW_SERVER"], "server", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
                             "--default-artifact-root", str(work / "artifacts"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}", None


def workload(url, token, sizes, only=None):
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    else:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    client = MlflowClient(tracking_uri=url)
    out = {}
    exp = client.create_experiment(f"bench-{time.time_ns()}")
    run = client.create_run(exp).info.run_id
    if only in (None, "log_metric"):
        n = sizes["metrics"]
        start = time.perf_counter()
        for i in range(n):
            client.log_metric(run, "loss", 1.0 / (i + 1), step=i)
        out["log_metric calls/s"] = n / (time.perf_counter() - start)
    if only in (None, "log_batch"):
        points = [Metric("batch", float(i), 0, i) for i in range(sizes["batch"])]
        start = time.perf_counter()
        client.log_batch(run, metrics=points)
        out["log_batch points/s"] = len(points) / (time.perf_counter() - start)
        assert len(client.get_metric_history(run, "batch")) == len(points)
    if only not in (None, "search"):
        return out
    search_exp = client.create_experiment(f"search-{time.time_ns()}")
    for i in range(sizes["runs"]):
        r = client.create_run(search_exp).info.run_id
        client.log_batch(r, metrics=[Metric("acc", (i % 100) / 100, 0, 0)], params=[Param("i", str(i))])
    # Both servers finish what the 4,000 writes left them (ferrolab: the runs' live
    # documents) before search is timed.
    time.sleep(20)
    rounds = 5
    start = time.perf_counter()
    for _ in range(rounds):
        found, token_ = [], None
        while True:
            page = client.search_runs([search_exp], "metrics.acc >= 0.5", order_by=["metrics.acc DESC"],
                                      max_results=1000, page_token=token_)
            found.extend(page)
            token_ = page.token
            if not token_:
                break
        assert len(found) == sizes["runs"] // 2, len(found)
    out["search runs scanned/s"] = rounds * sizes["runs"] / (time.perf_counter() - start)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes, to check the script")
    parser.add_argument("--only", choices=["log_metric", "log_batch", "search"], help="run one part on both servers")
    args = parser.parse_args()
    sizes = {"metrics": 10_000, "batch": 10_000, "runs": 2_000}
    if args.quick:
        sizes = {k: v // 10 for k, v in sizes.items()}
    work = Path(tempfile.mkdtemp(prefix="tracking-bench-"))
    results = {}
    for name, start in [("ferrolab", start_ferrolab), ("mlflow", start_mlflow)]:
        proc, url, token = start(work)
        try:
            results[name] = workload(url, token, sizes, args.only)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"{sizes['metrics']} log_metric calls, log_batch of {sizes['batch']} points, search over {sizes['runs']} runs")
    print(f"{'':24} {'ferrolab':>12} {'mlflow':>12} {'ratio':>8}")
    for part in results["ferrolab"]:
        f, m = results["ferrolab"][part], results["mlflow"][part]
        print(f"{part:24} {f:12.1f} {m:12.1f} {f / m:7.2f}x")


if __name__ == "__main__":
    main()
