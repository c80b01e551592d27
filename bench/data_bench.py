"""The data magics on a 10,000,000-row request log, against DuckDB, Python polars
and pandas in the same run on the same files.

    python bench/data_bench.py [--rows N] [--reps N] [--out results.json]

Generates (once, deterministically) a request log as Parquet and CSV and a users
table under bench/results/data/, then times five analytical queries:

  * ferrolab: `%%sql` through a real kernel with jupyter_client, round trip
    (request sent to reply and idle received, result table included);
  * DuckDB: the same SQL over read_parquet views, result fetched;
  * Python polars: the same SQL through SQLContext over scan_parquet, collected;
  * pandas: the same questions in pandas over frames read once (load timed apart).

Medians of --reps runs after one warm-up. Also the time to scan the CSV once
(count and mean) in each. Prints a table with ratios and writes JSON.
"""
import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "python"))

QUERIES = {
    "latency per model": """
SELECT model, COUNT(*) AS n, AVG(latency_ms) AS mean_ms, MIN(latency_ms) AS min_ms,
       MAX(latency_ms) AS max_ms, STDDEV(latency_ms) AS std_ms
FROM requests GROUP BY model ORDER BY model""",
    "daily error rate": """
SELECT CAST(ts AS DATE) AS day, model,
       AVG(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate
FROM requests GROUP BY CAST(ts AS DATE), model ORDER BY day, model""",
    "cost per team": """
SELECT u.team, COUNT(*) AS n, SUM(r.cost_usd) AS cost_usd
FROM requests r JOIN users u ON r.user_id = u.user_id
GROUP BY u.team ORDER BY u.team""",
    "top users (rank)": """
WITH per_user AS (
  SELECT user_id, SUM(prompt_tokens + completion_tokens) AS tokens FROM requests GROUP BY user_id
)
SELECT user_id, tokens, RANK() OVER (ORDER BY tokens DESC) AS rnk
FROM per_user ORDER BY rnk, user_id LIMIT 10""",
    "feedback per model": """
SELECT model, COUNT(feedback) AS rated, AVG(feedback) AS score,
       SUM(CASE WHEN feedback > 0 THEN 1 ELSE 0 END) AS ups
FROM requests GROUP BY model ORDER BY model""",
}

CSV_QUERY = "SELECT COUNT(*) AS n, AVG(latency_ms) AS mean_ms FROM requests_csv"


def pandas_queries(requests, users):
    def latency():
        return requests.groupby("model")["latency_ms"].agg(["count", "mean", "min", "max", "std"]).sort_index()

    def daily():
        day = requests["ts"].dt.floor("D")
        errors = (requests["status"] == "error").astype("float64")
        return errors.groupby([day, requests["model"]]).mean().sort_index()

    def teams():
        joined = requests[["user_id", "cost_usd"]].merge(users, on="user_id")
        return joined.groupby("team")["cost_usd"].agg(["count", "sum"]).sort_index()

    def top_users():
        tokens = (requests["prompt_tokens"] + requests["completion_tokens"]).groupby(requests["user_id"]).sum()
        ranked = tokens.rank(method="min", ascending=False)
        return tokens[ranked <= 10].sort_values(ascending=False)

    def feedback():
        g = requests.groupby("model")["feedback"]
        return pd.DataFrame({"rated": g.count(), "score": g.mean(),
                             "ups": (requests["feedback"] > 0).groupby(requests["model"]).sum()})

    return dict(zip(QUERIES, [latency, daily, teams, top_users, feedback]))


def generate(folder: Path, rows: int):
    parquet, csv, users = folder / "requests.parquet", folder / "requests.csv", folder / "users.parquet"
    marker = folder / f"rows-{rows}"
    if marker.exists() and parquet.exists() and csv.exists() and users.exists():
        return parquet, csv, users
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261128)
    models = np.array(["smollm2-135m", "llama-3.2-1b", "qwen2.5-0.5b", "phi-3.5-mini"])
    model = rng.integers(0, 4, rows)
    completion = rng.integers(10, 510, rows, dtype=np.int32)
    prompt = rng.integers(50, 1550, rows, dtype=np.int32)
    start = np.datetime64("2026-10-01T00:00:00", "us")
    ts = start + rng.integers(0, 60 * 86400, rows).astype("timedelta64[s]")
    feedback = rng.choice(np.array([1, -1, 0], dtype=np.int8), rows, p=[0.2, 0.05, 0.75])
    frame = pl.DataFrame({
        "request_id": np.arange(rows, dtype=np.int64),
        "ts": np.sort(ts),
        "user_id": rng.integers(0, 100_000, rows, dtype=np.int64),
        "model": models[model],
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "latency_ms": 20 + (model + 1) * completion * 0.8 * rng.uniform(0.5, 1.5, rows),
        "cost_usd": (prompt + completion) * np.array([0.1, 0.6, 0.3, 0.4])[model] / 1e6,
        "status": np.where(rng.random(rows) < np.array([0.02, 0.05, 0.03, 0.08])[model], "error", "ok"),
        "feedback": feedback,
    }).with_columns(pl.when(pl.col("feedback") == 0).then(None).otherwise(pl.col("feedback")).alias("feedback"))
    frame.write_parquet(parquet, row_group_size=1_000_000)
    frame.write_csv(csv)
    teams = [f"team-{i:02d}" for i in range(20)]
    pl.DataFrame({"user_id": np.arange(100_000, dtype=np.int64),
                  "team": [teams[i % 20] for i in range(100_000)]}).write_parquet(users)
    marker.touch()
    return parquet, csv, users


def median_time(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kernel_runner(parquet, csv, users):
    import subprocess
    import tempfile

    from jupyter_client.manager import start_new_kernel
    from kernel_client import run

    # The kernelspec goes into a private prefix, so the user's Jupyter setup is untouched.
    prefix = Path(tempfile.mkdtemp(prefix="ferrolab-bench-"))
    # Its databases, runs and kernelspec go when the bench ends, however it ends.
    atexit.register(shutil.rmtree, prefix, ignore_errors=True)
    subprocess.run([os.environ["FERROLAB_BIN"], "kernel", "install", "--prefix", str(prefix)],
                   check=True, capture_output=True)
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    os.environ["FERROLAB_HOME"] = str(prefix / "home")
    km, kc = start_new_kernel(kernel_name="ferrolab", startup_timeout=120)

    def load(*lines):
        """%load each line, then wait until every table is in memory; the seconds that took."""
        start = time.perf_counter()
        for line in lines:
            content, _ = run(kc, line)
            assert content["status"] == "ok", content
        while True:
            _, messages = run(kc, "%tables")
            listing = next(m["content"]["data"]["application/vnd.ferrolab.table+json"]
                           for m in messages if m["msg_type"] == "execute_result")
            memory = [row[listing["columns"].index("memory")] for row in listing["rows"]]
            if not any(m == "loading into memory" for m in memory):
                assert all(m.startswith("in memory") for m in memory), memory
                return time.perf_counter() - start
            time.sleep(0.05)

    into_memory = load(f"%load requests {parquet}", f"%load users {users}")
    # The kernel's own start-up work (evcxr compiles its prelude, rust-analyzer loads
    # the standard library's types) takes both cores for several seconds; one Rust
    # cell that defines a variable waits for all of it, so no timing below (the
    # kernel's or the anchors') shares the machine with it.
    content, _ = run(kc, "let settled = 1;", timeout=600)
    assert content["status"] == "ok", content

    def query(sql):
        def go():
            content, _ = run(kc, "%%sql\n" + sql.strip(), timeout=600)
            assert content["status"] == "ok", content
        return go

    return km, kc, query, into_memory, load


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "data-bench.json"))
    args = parser.parse_args()

    t0 = time.perf_counter()
    parquet, csv, users = generate(HERE / "results" / "data", args.rows)
    print(f"data: {args.rows:,} rows ({parquet.stat().st_size / 1e6:.0f} MB Parquet, "
          f"{csv.stat().st_size / 1e6:.0f} MB CSV), ready in {time.perf_counter() - t0:.1f} s", flush=True)

    results = {name: {} for name in QUERIES}
    db = duckdb.connect()
    db.execute(f"CREATE VIEW requests AS SELECT * FROM read_parquet('{parquet}')")
    db.execute(f"CREATE VIEW users AS SELECT * FROM read_parquet('{users}')")
    db.execute(f"CREATE VIEW requests_csv AS SELECT * FROM read_csv('{csv}')")
    ctx = pl.SQLContext(requests=pl.scan_parquet(parquet), users=pl.scan_parquet(users),
                        requests_csv=pl.scan_csv(csv))

    km, kc, kernel_query, into_memory, kernel_load = kernel_runner(parquet, csv, users)
    print(f"ferrolab: Parquet tables loaded into memory in {into_memory * 1000:.0f} ms", flush=True)
    try:
        for name, sql in QUERIES.items():
            results[name]["ferrolab"] = median_time(kernel_query(sql), args.reps)
            results[name]["duckdb"] = median_time(lambda: db.execute(sql).fetchall(), args.reps)
            results[name]["polars"] = median_time(lambda: ctx.execute(sql).collect(), args.reps)
            print(f"{name}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in results[name].items()), flush=True)
        # ferrolab decodes the CSV into memory once (in the background after %load);
        # its scan time is that load, and later queries run on the copy.
        csv_load = kernel_load(f"%load requests_csv {csv}")
        csv_times = {
            "ferrolab": csv_load,
            "ferrolab_query_after_load": median_time(kernel_query(CSV_QUERY), 1),
            "duckdb": median_time(lambda: db.execute(CSV_QUERY).fetchall(), 1),
            "polars": median_time(lambda: ctx.execute(CSV_QUERY).collect(), 1),
        }
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    start = time.perf_counter()
    requests = pd.read_parquet(parquet)
    user_frame = pd.read_parquet(users)
    pandas_load = time.perf_counter() - start
    for name, fn in pandas_queries(requests, user_frame).items():
        results[name]["pandas"] = median_time(fn, args.reps)
    del requests
    start = time.perf_counter()
    frame = pd.read_csv(csv)
    frame["latency_ms"].mean()
    csv_times["pandas"] = time.perf_counter() - start
    del frame

    rows = []
    print()
    print(f"{'query':22} {'ferrolab':>9} {'duckdb':>9} {'polars':>9} {'pandas':>9} {'pandas+load':>11}"
          f" {'vs duckdb':>9} {'vs polars':>9}")
    for name, r in results.items():
        ratio_db, ratio_pl = r["ferrolab"] / r["duckdb"], r["ferrolab"] / r["polars"]
        rows.append({"query": name, **{k: round(v, 4) for k, v in r.items()},
                     "pandas_with_load": round(r["pandas"] + pandas_load, 4),
                     "ratio_vs_duckdb": round(ratio_db, 3), "ratio_vs_polars": round(ratio_pl, 3)})
        print(f"{name:22} {r['ferrolab'] * 1000:8.0f}ms {r['duckdb'] * 1000:8.0f}ms {r['polars'] * 1000:8.0f}ms "
              f"{r['pandas'] * 1000:8.0f}ms {(r['pandas'] + pandas_load) * 1000:10.0f}ms "
              f"{ratio_db:8.2f}x {ratio_pl:8.2f}x")
    print(f"\npandas load (Parquet, once): {pandas_load * 1000:.0f} ms")
    print("CSV scan (count + mean over the whole CSV; ferrolab: its load into memory, then the query on it): " +
          ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in csv_times.items()))
    out = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "rows": args.rows, "reps": args.reps, "queries": rows,
        "pandas_load_s": round(pandas_load, 4), "ferrolab_parquet_into_memory_s": round(into_memory, 4), "csv_scan_s": {k: round(v, 4) for k, v in csv_times.items()},
        "versions": {"duckdb": duckdb.__version__, "polars": pl.__version__, "pandas": pd.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
