"""Tracking benchmark: one `mlflow` client workload against `ferrolab collab serve`
and against MLflow's own tracking server (`mlflow server`) in the same run, both
on SQLite (their embedded stores) or, with `--backend postgres`, both on one
throwaway PostgreSQL cluster (ferrolab in cluster mode, `--database`; MLflow
with its SQLAlchemy store on a database of its own):

1. one run, 10,000 `log_metric` calls in a row;
2. `log_batch` of 10,000 points (the client sends them as 10 requests of 1,000);
3. `search_runs` over 2,000 runs (each with a metric and a param; created before
   timing, then 20 s for each server to settle) with a filter and an order, every
   page fetched, 10 times.

Prints each part's throughput on both servers and the ratio ferrolab / MLflow
(goal: at least 5 on every part).

Every acknowledged `log_metric` must be durable, so the client's rate against a
server doing no work, less one durable one-row commit on the same database per
call (measured in the same run), is the most a server that keeps every call can
reach; the bench prints that cap too.

Search is mostly the client's own work (turning the answer into `Run` objects), so
the same search is also timed against a server that does no work at all: it replays
the answers each real server gave, recorded byte for byte. MLflow's time divided by
that time is the highest ratio any server giving MLflow's answer could reach.

    make bench-tracking
    make bench-tracking-postgres
    FERROLAB_BIN=... MLFLOW_SERVER=.../bin/mlflow python bench/tracking_bench.py [--quick] [--only PART]
        [--backend postgres]
"""
import argparse
import atexit
import json
import os
import shutil
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

SEARCH = "/api/2.0/mlflow/runs/search"
# The timed search: its filter and order, as the client and the recorder send them.
FILTER, ORDER_BY = "metrics.acc >= 0.5", ["metrics.acc DESC"]


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


def start_ferrolab(work, postgres=None):
    data = work / "collab"
    port = free_port()
    # Where the tokens (and, with a database, everything else) are kept.
    store = ["--database", postgres.url] if postgres else ["--data", str(data)]
    proc = subprocess.Popen([os.environ["FERROLAB_BIN"], "collab", "serve", "--data", str(data), "--bind", f"127.0.0.1:{port}",
                             *(store if postgres else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    token = subprocess.run([os.environ["FERROLAB_BIN"], "collab", "token", "create", *store, "--name", "bench",
                            "--role", "editor"], check=True, capture_output=True, text=True).stdout.strip()
    return proc, f"http://127.0.0.1:{port}", token


def start_mlflow(work, postgres=None):
    port = free_port()
    if postgres:
        postgres.sql("CREATE DATABASE mlflow")
        backend = f"postgresql://ferrolab@127.0.0.1:{postgres.port}/mlflow"
    else:
        backend = f"sqlite:///{work / 'mlflow.db'}"
    proc = subprocess.Popen([os.environ["MLFLOW_SERVER"], "server", "--backend-store-uri", backend,
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
    out["search runs scanned/s"] = search_rounds(client, search_exp, sizes)
    out["_answers"] = record_answers(url, token, search_exp)
    return out


def search_rounds(client, experiment, sizes, rounds=10):
    """Runs scanned per second by `rounds` searches, every page fetched."""
    start = time.perf_counter()
    for _ in range(rounds):
        found, token_ = [], None
        while True:
            page = client.search_runs([experiment], FILTER, order_by=ORDER_BY, max_results=1000, page_token=token_)
            found.extend(page)
            token_ = page.token
            if not token_:
                break
        assert len(found) == sizes["runs"] // 2, len(found)
    return rounds * sizes["runs"] / (time.perf_counter() - start)


def record_answers(url, token, experiment):
    """The server's answers to the timed search, page by page, as its bytes."""
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answers, page_token = {}, None
    while True:
        body = {"experiment_ids": [experiment], "filter": FILTER, "order_by": ORDER_BY, "max_results": 1000}
        if page_token:
            body["page_token"] = page_token
        got = requests.post(url + SEARCH, json=body, headers=headers, timeout=120)
        got.raise_for_status()
        answers[page_token or ""] = got.text
        page_token = got.json().get("next_page_token")
        if not page_token:
            return answers


def replay(answers_file, port):
    """A server that does no work: it answers a search with the recorded bytes."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = {k: v.encode() for k, v in json.loads(Path(answers_file).read_text()).items()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # Headers and body leave as two writes: without this, Nagle's algorithm
            # and the client's delayed ACK hold each small answer back ~40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self):
            asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            # A search gets the recorded answer; every other call MLflow's empty success.
            body = answers.get(asked.get("page_token") or "") if self.path == SEARCH else b"{}"
            self.send_response(200 if body is not None else 404)
            body = body if body is not None else b"{}"
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def replayed_search(work, name, answers, sizes):
    """Runs scanned per second when `answers` are replayed by a server doing no work."""
    path = work / f"{name}-answers.json"
    path.write_text(json.dumps(answers))
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--replay", str(path), "--port", str(port)])
    try:
        wait_port(port, proc)
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        return search_rounds(MlflowClient(tracking_uri=f"http://127.0.0.1:{port}"), "0", sizes)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def client_alone(work, sizes):
    """The logging parts' rates against a server that does no work (it answers
    every call with MLflow's empty success): the most any server can reach."""
    path = work / "no-answers.json"
    path.write_text("{}")
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--replay", str(path), "--port", str(port)])
    try:
        wait_port(port, proc)
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        run = "0" * 32
        start = time.perf_counter()
        for i in range(sizes["metrics"]):
            client.log_metric(run, "loss", 1.0 / (i + 1), step=i)
        out = {"log_metric calls/s": sizes["metrics"] / (time.perf_counter() - start)}
        points = [Metric("batch", float(i), 0, i) for i in range(sizes["batch"])]
        client.log_batch(run, metrics=points)  # warmed up, as the log_metric part warms the workload
        start = time.perf_counter()
        client.log_batch(run, metrics=points)
        out["log_batch points/s"] = len(points) / (time.perf_counter() - start)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


FLOOR_SCRIPT = """
import sys, time
import psycopg
n = int(sys.argv[2])
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("CREATE TABLE commit_floor (v bigint)")
    start = time.perf_counter()
    for i in range(n):
        conn.execute("INSERT INTO commit_floor VALUES (%s)", (i,))
    print((time.perf_counter() - start) / n)
    conn.execute("DROP TABLE commit_floor")
"""


def durable_commit_floor(work, postgres, n=2000):
    """Seconds one durable one-row commit takes on the database the servers use
    (PostgreSQL through psycopg, from MLflow's venv; or SQLite in WAL mode with
    synchronous=FULL, as both servers run it): what any server that keeps each
    acknowledged call must spend on top of the client's own time."""
    if postgres:
        python = Path(os.environ["MLFLOW_SERVER"]).with_name("python")
        done = subprocess.run([str(python), "-c", FLOOR_SCRIPT, postgres.url, str(n)],
                              check=True, capture_output=True, text=True)
        return float(done.stdout.strip())
    import sqlite3
    db = sqlite3.connect(work / "floor.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE commit_floor (v INTEGER)")
    start = time.perf_counter()
    for i in range(n):
        db.execute("INSERT INTO commit_floor VALUES (?)", (i,))
    floor = (time.perf_counter() - start) / n
    db.close()
    return floor


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes, to check the script")
    parser.add_argument("--only", choices=["log_metric", "log_batch", "search"], help="run one part on both servers")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite",
                        help="both servers on their SQLite stores, or both on one PostgreSQL")
    parser.add_argument("--replay", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        return replay(args.replay, args.port)
    sizes = {"metrics": 10_000, "batch": 10_000, "runs": 2_000}
    if args.quick:
        sizes = {k: v // 10 for k, v in sizes.items()}
    work = Path(tempfile.mkdtemp(prefix="tracking-bench-"))
    # Its databases, runs and kernelspec go when the bench ends, however it ends.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    postgres = None
    if args.backend == "postgres":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
        from pgcluster import Postgres

        postgres = Postgres()
        atexit.register(postgres.stop)
    results = {}
    for name, start in [("ferrolab", start_ferrolab), ("mlflow", start_mlflow)]:
        proc, url, token = start(work, postgres)
        try:
            results[name] = workload(url, token, sizes, args.only)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"{sizes['metrics']} log_metric calls, log_batch of {sizes['batch']} points, search over {sizes['runs']} runs"
          f" (both servers on {'one PostgreSQL' if postgres else 'SQLite'})")
    print(f"{'':24} {'ferrolab':>12} {'mlflow':>12} {'ratio':>8}")
    answers = {name: r.pop("_answers", None) for name, r in results.items()}
    for part in results["ferrolab"]:
        f, m = results["ferrolab"][part], results["mlflow"][part]
        print(f"{part:24} {f:12.1f} {m:12.1f} {f / m:7.2f}x")
    if args.only in (None, "log_metric", "log_batch"):
        alone = client_alone(work, sizes)
        for part, rate in alone.items():
            if part in results["mlflow"]:
                print(f"  {part}: the client alone (a server doing no work) reaches {rate:.1f}, "
                      f"capping the ratio at {rate / results['mlflow'][part]:.2f}x")
        part = "log_metric calls/s"
        if part in alone and part in results["mlflow"]:
            floor = durable_commit_floor(work, postgres)
            reach = 1 / (1 / alone[part] + floor)
            print(f"  a durable one-row commit on the same database takes {floor * 1000:.3f} ms; the client "
                  f"alone plus one such commit per call reaches {reach:.1f} log_metric calls/s, capping "
                  f"the ratio at {reach / results['mlflow'][part]:.2f}x for a server that keeps every call")
    if answers["mlflow"]:
        replayed = {name: replayed_search(work, name, a, sizes) for name, a in answers.items()}
        m = results["mlflow"]["search runs scanned/s"]
        print(f"{'  answers replayed':24} {replayed['ferrolab']:12.1f} {replayed['mlflow']:12.1f}"
              "   (each server's own answers, sent by a server doing no work)")
        print(f"  the client alone caps the search ratio at {replayed['mlflow'] / m:.2f}x with MLflow's answers, "
              f"{replayed['ferrolab'] / m:.2f}x with ferrolab's")


if __name__ == "__main__":
    main()
