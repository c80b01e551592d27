"""TPC-H through the data magics against DuckDB and Python polars, same files,
same threads, same run.

    python bench/tpch/tpch_bench.py [--sf 1 --sf 10] [--reps N] [--threads N]
                                    [--modes memory,cold] [--out FILE]

For each scale factor the tables are generated once as Parquet (tpchgen-cli,
under $FERROLAB_CACHE/tpch/sfN), then every query runs in each engine, one engine
at a time, DuckDB and Python polars each in a child process of their own (so
their memory is never held together, and all of it is back before the next):

  * ferrolab: `%%sql` through a real kernel with jupyter_client, round trip
    (request sent to reply and idle received, result table included);
    "memory": the tables `%load`ed and decoded into memory first (the kernel's
    copies' budget, FERROLAB_DATA_CACHE_MB, set to --memory-mb so every table
    fits at SF10);
    "cold": FERROLAB_DATA_CACHE_MB=0, every query reads the Parquet files;
  * DuckDB: "memory": tables created from the files; "cold": views over
    read_parquet; rows fetched;
  * Python polars: SQLContext over read_parquet frames ("memory") or
    scan_parquet ("cold"), collected.

Median of --reps runs after one warm-up per query. Every engine's rows are
checked against DuckDB's (tpch.compare): ferrolab's through `%%sql --out` and a
Rust cell that reads the tables back. Prints per-query times, ratios and the
geometric means; writes JSON.
"""
import argparse
from concurrent.futures.process import BrokenProcessPool
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def median_time(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def geomean(values):
    values = [v for v in values if v is not None]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def in_child(fn, *args):
    """fn(*args) in a fresh Python process, which exits (memory and all) after."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def run_duckdb(folder, sf, mode, threads, reps):
    import tpch

    db = tpch.duckdb_connection(folder, threads, in_memory=(mode == "memory"))
    times = {}
    for name, sql in tpch.queries(sf).items():
        times[name] = median_time(lambda: db.execute(sql).fetchall(), reps)
    db.close()
    return times


def run_polars(folder, sf, mode, reps, expected):
    import polars as pl
    import tpch

    if mode == "memory":
        frames = {t: pl.read_parquet(folder / f"{t}.parquet").lazy() for t in tpch.TABLES}
    else:
        frames = {t: pl.scan_parquet(folder / f"{t}.parquet") for t in tpch.TABLES}
    ctx = pl.SQLContext(frames)
    times, problems = {}, {}
    for name, sql in tpch.queries(sf).items():
        try:
            rows = tpch.polars_rows(ctx.execute(sql).collect())
        except Exception as error:  # a query polars cannot run is reported, not fatal
            problems[name] = f"error: {str(error).splitlines()[0]}"
            times[name] = None
            continue
        wrong = tpch.compare(expected[name], rows, tpch.ordered(sql))
        if wrong:
            problems[name] = wrong
        times[name] = median_time(lambda: ctx.execute(sql).collect(), reps)
    return times, problems


def run_ferrolab(tpch, folder, sf, mode, reps, expected, check, memory_mb):
    env = {"FERROLAB_DATA_CACHE_MB": "0" if mode == "cold" else str(memory_mb)}
    kernel = tpch.Kernel(env=env)
    try:
        load_s = kernel.load(folder, wait_for_memory=(mode == "memory"))
        print(f"  ferrolab {mode}: tables loaded in {load_s:.1f} s", flush=True)
        kernel.settle()
        times, problems = {}, {}
        checked = []
        for name, sql in tpch.queries(sf).items():
            content, _ = kernel.sql(sql)
            if content["status"] != "ok":
                problems[name] = f"{content.get('ename')}: {content.get('evalue', '').splitlines()[0]}"
                times[name] = None
                continue

            def go():
                content, _ = kernel.sql(sql)
                assert content["status"] == "ok", content

            times[name] = median_time(go, reps)
            if check:
                content, _ = kernel.sql(sql, out=f"r_{name}")
                assert content["status"] == "ok", content
                checked.append(name)
        if checked:
            rows = kernel.results([f"r_{n}" for n in checked])
            for name in checked:
                wrong = tpch.compare(expected[name], rows[f"r_{name}"], tpch.ordered(tpch.queries(sf)[name]))
                if wrong:
                    problems[name] = wrong
        return times, problems, load_s
    finally:
        kernel.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sf", type=float, action="append", help="scale factor (repeatable; default 1 and 10)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="memory,cold")
    parser.add_argument("--memory-mb", type=int, default=14000,
                        help="the kernel's in-memory copies' budget in memory mode (SF10's tables take about 10 GB)")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("FERROLAB_CACHE", Path.home() / ".cache" / "ferrolab")) / "tpch")
    parser.add_argument("--out", type=Path, default=HERE.parent / "results" / "tpch.json")
    args = parser.parse_args()
    scale_factors = args.sf or [1.0, 10.0]
    modes = [m for m in args.modes.split(",") if m]
    # Same threads for everyone: polars (here and in the kernel) and DuckDB.
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)
    import tpch

    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads, "reps": args.reps, "results": {},
    }
    for sf in scale_factors:
        label = f"sf{sf:g}"
        folder = tpch.generate(args.data / label, sf)
        print(f"TPC-H SF{sf:g} ({folder})", flush=True)
        expected = in_child(tpch.answers, folder, sf, args.threads)
        for mode in modes:
            print(f" {mode}", flush=True)
            duck = in_child(run_duckdb, folder, sf, mode, args.threads, args.reps)
            try:
                pol, pol_problems = in_child(run_polars, folder, sf, mode, args.reps, expected)
            except BrokenProcessPool:
                # Python polars' own process killed (at SF10 in memory on a 24 GiB
                # machine: out of memory); reported, and the other two go on.
                print("  polars: its process was killed (out of memory?)", flush=True)
                pol, pol_problems = {}, {n: "polars' process was killed" for n in tpch.NAMES}
            fer, fer_problems, load_s = run_ferrolab(tpch, folder, sf, mode, args.reps, expected,
                                                     check=(mode == "memory"), memory_mb=args.memory_mb)
            rows = {}
            print(f"  {'query':6} {'ferrolab':>10} {'duckdb':>10} {'polars':>10} {'f/duckdb':>9} {'f/polars':>9}")
            for name in tpch.NAMES:
                f, d, p = fer.get(name), duck.get(name), pol.get(name)
                rd = f / d if f and d else None
                rp = f / p if f and p else None
                rows[name] = {"ferrolab_s": f, "duckdb_s": d, "polars_s": p,
                              "ferrolab_vs_duckdb": rd, "ferrolab_vs_polars": rp,
                              "ferrolab_problem": fer_problems.get(name),
                              "polars_problem": pol_problems.get(name)}
                fmt = lambda v: f"{v * 1000:10.0f}" if v else f"{'-':>10}"
                ratio = lambda v: f"{v:9.2f}" if v else f"{'-':>9}"
                note = fer_problems.get(name) or ""
                print(f"  {name:6} {fmt(f)} {fmt(d)} {fmt(p)} {ratio(rd)} {ratio(rp)}  {note}", flush=True)
            complete = [n for n in tpch.NAMES if fer.get(n) and duck.get(n) and pol.get(n)]
            g = {k: geomean([src[n] for n in complete]) for k, src in
                 (("ferrolab", fer), ("duckdb", duck), ("polars", pol))}
            # ferrolab against DuckDB also where polars has no time.
            both = [n for n in tpch.NAMES if fer.get(n) and duck.get(n)]
            g_fd = {k: geomean([src[n] for n in both]) for k, src in (("ferrolab", fer), ("duckdb", duck))}
            summary = {
                "queries_run_by_all": len(complete),
                "geomean_s": g,
                "ferrolab_and_duckdb_geomean_s": g_fd,
                "ferrolab_vs_duckdb_all_they_ran": g_fd["ferrolab"] / g_fd["duckdb"] if both else None,
                "ferrolab_vs_duckdb": g["ferrolab"] / g["duckdb"] if complete else None,
                "ferrolab_vs_polars": g["ferrolab"] / g["polars"] if complete else None,
                "over_2x_duckdb": [n for n in both if fer[n] / duck[n] > 2.0],
                "slower_than_polars": [n for n in complete if fer[n] > pol[n]],
                "ferrolab_failed": sorted(n for n in tpch.NAMES if not fer.get(n)),
                "wrong_results": {"ferrolab": fer_problems, "polars": pol_problems},
                "ferrolab_load_s": load_s,
            }
            if complete:
                print(f"  geometric mean over {len(complete)} queries: ferrolab {g['ferrolab'] * 1000:.0f} ms, "
                      f"DuckDB {g['duckdb'] * 1000:.0f} ms, polars {g['polars'] * 1000:.0f} ms; "
                      f"ferrolab/DuckDB {summary['ferrolab_vs_duckdb']:.2f}x, "
                      f"ferrolab/polars {summary['ferrolab_vs_polars']:.2f}x", flush=True)
            elif both:
                print(f"  geometric mean over {len(both)} queries: ferrolab {g_fd['ferrolab'] * 1000:.0f} ms, "
                      f"DuckDB {g_fd['duckdb'] * 1000:.0f} ms; ferrolab/DuckDB "
                      f"{summary['ferrolab_vs_duckdb_all_they_ran']:.2f}x (no polars times)", flush=True)
            print(f"  over 2x DuckDB: {summary['over_2x_duckdb']}; slower than polars: "
                  f"{summary['slower_than_polars']}; ferrolab failed: {summary['ferrolab_failed']}", flush=True)
            report["results"][f"{label}-{mode}"] = {"queries": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
