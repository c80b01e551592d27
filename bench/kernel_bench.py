"""Kernel benchmark: ferrolab against ipykernel and evcxr_jupyter, in one run.

Measures, through jupyter_client:
  1. startup: process start to kernel_info_reply (median of --starts runs);
  2. trivial round trip: a ferrolab magic vs ipykernel's `1+1` (p50/p99 of --rounds);
  3. Rust cells: the first cell after start and warm cells, ferrolab vs evcxr_jupyter;
  4. crates in cells, each in a fresh kernel after its first cell: the first cell that
     uses polars (evcxr_jupyter: `:dep polars` with the data magics' features, built
     from source) and the first that uses serde_json (evcxr_jupyter: `:dep
     serde_json`). ferrolab's come from the build `ferrolab kernel prepare` made once
     for the machine ($FERROLAB_HOME/cells), which the benchmark's kernels share.

evcxr_jupyter is installed with `cargo install evcxr_jupyter --locked` into
$FERROLAB_CACHE/anchors (once). Prints a table with ratios and writes JSON to
bench/results/. Usage: make bench  (or FERROLAB_BIN=... python bench/kernel_bench.py)
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("FERROLAB_CACHE", Path.home() / ".cache" / "ferrolab"))
ANCHORS = CACHE / "anchors"


# The data magics' polars features (magics/data/Cargo.toml and kernel/cell/tables/Cargo.toml).
POLARS_FEATURES = [
    "lazy", "sql", "csv", "parquet", "json", "ipc", "dtype-slim", "temporal", "fmt",
    "rank", "round_series", "cum_agg", "abs", "is_in", "strings", "semi_anti_join",
    "cross_join", "approx_unique", "unique_counts", "concat_str", "streaming",
    "dtype-categorical", "dtype-decimal",
]


def install_evcxr():
    exe = ANCHORS / "evcxr" / "bin" / "evcxr_jupyter"
    if not exe.exists():
        print("installing evcxr_jupyter (once) ...", flush=True)
        subprocess.run(
            ["cargo", "install", "evcxr_jupyter", "--locked", "--root", str(ANCHORS / "evcxr")],
            check=True,
        )
    return exe


def write_spec(prefix, name, argv, language):
    d = prefix / "share" / "jupyter" / "kernels" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": language}))


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def start(name):
    """Starts a kernel; returns (manager, client, seconds to kernel_info_reply)."""
    km = KernelManager(kernel_name=name)
    t0 = time.perf_counter()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.kernel_info()
    while True:
        msg = kc.get_shell_msg(timeout=120)
        if msg["msg_type"] == "kernel_info_reply":
            break
    elapsed = time.perf_counter() - t0
    # Not timed: make sure iopub is subscribed before anything is measured on it.
    kc.wait_for_ready(timeout=120)
    return km, kc, elapsed


def stop(km, kc):
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def round_trip(kc, code, timeout=300):
    """Seconds from execute_request to its idle status (reply and outputs in)."""
    t0 = time.perf_counter()
    msg_id = kc.execute(code)
    status = None
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            raise RuntimeError(f"{code!r} failed: {msg['content']['evalue']}")
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            status = time.perf_counter() - t0
            break
    return status


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warm", type=int, default=20)
    parser.add_argument("--skip-evcxr", action="store_true")
    parser.add_argument("--crates", default="polars,serde_json",
                        help="part 4's crates, comma-separated ('' for none; evcxr_jupyter builds "
                             "polars from source, which takes many minutes)")
    args = parser.parse_args()

    ferrolab = os.environ["FERROLAB_BIN"]
    prefix = Path(tempfile.mkdtemp(prefix="ferrolab-bench-"))
    write_spec(prefix, "bench-ferrolab",
               [ferrolab, "kernel", "run", "--connection-file", "{connection_file}"], "rust")
    write_spec(prefix, "bench-ipykernel",
               [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "python")
    kernels = ["bench-ferrolab", "bench-ipykernel"]
    if not args.skip_evcxr:
        evcxr = install_evcxr()
        write_spec(prefix, "bench-evcxr", [str(evcxr), "--control_file", "{connection_file}"], "rust")
        kernels.append("bench-evcxr")
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    # The crates for cells are built once per machine; the benchmark's home shares them.
    real_cells = Path(os.environ.get("FERROLAB_HOME", CACHE)) / "cells"
    os.environ["FERROLAB_HOME"] = str(prefix / "home")
    (prefix / "home").mkdir(parents=True, exist_ok=True)
    if real_cells.exists():
        (prefix / "home" / "cells").symlink_to(real_cells, target_is_directory=True)

    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
               "ferrolab_bin": Path(ferrolab).name}

    # 1. Startup.
    for name in kernels:
        times = []
        for _ in range(args.starts):
            km, kc, t = start(name)
            times.append(t)
            stop(km, kc)
        results[f"startup_{name}"] = statistics.median(times)

    # 2. Trivial round trip.
    for name, code in [("bench-ferrolab", "%env FERROLAB_BENCH=1"), ("bench-ipykernel", "1+1")]:
        km, kc, _ = start(name)
        for _ in range(5):
            round_trip(kc, code)
        times = [round_trip(kc, code) for _ in range(args.rounds)]
        results[f"trivial_p50_{name}"] = percentile(times, 50)
        results[f"trivial_p99_{name}"] = percentile(times, 99)
        stop(km, kc)

    # 3. Rust cells: first after start, then warm (different code each time).
    for name in [k for k in kernels if k != "bench-ipykernel"]:
        km, kc, startup = start(name)
        results[f"rust_first_{name}"] = round_trip(kc, "1 + 1")
        results[f"rust_start_to_first_{name}"] = startup + results[f"rust_first_{name}"]
        times = [round_trip(kc, f"let v{i} = {i} + 1; v{i} * 2") for i in range(args.warm)]
        results[f"rust_warm_p50_{name}"] = percentile(times, 50)
        stop(km, kc)

    # 4. Crates in cells: the first use of each in a fresh kernel (after its first cell).
    wanted = [c for c in args.crates.split(",") if c]
    if wanted:
        polars_features = ", ".join(f'"{f}"' for f in POLARS_FEATURES)
        uses = {
            "polars": ("use polars::prelude::*;\nlet df = df!(\"a\" => [1, 2, 3]).unwrap();\ndf.height()",
                       f':dep polars = {{ version = "0.55", default-features = false, features = [{polars_features}] }}'),
            "serde_json": ('serde_json::json!({"a": [1, 2]}).to_string()', ':dep serde_json = "1"'),
        }
        for name in [k for k in kernels if k != "bench-ipykernel"]:
            for crate, (code, dep) in [(c, uses[c]) for c in wanted]:
                km, kc, _ = start(name)
                round_trip(kc, "1 + 1")
                cell = code if name == "bench-ferrolab" else f"{dep}\n{code}"
                results[f"crate_{crate}_{name}"] = round_trip(kc, cell, timeout=3600)
                stop(km, kc)

    shutil.rmtree(prefix, ignore_errors=True)

    def ratio(a, b):
        return results[a] / results[b] if b in results and results[b] else float("nan")

    rows = [
        ("startup to kernel_info_reply", "startup_bench-ferrolab", "startup_bench-evcxr", "evcxr_jupyter", "≤ 0.2"),
        ("startup to kernel_info_reply", "startup_bench-ferrolab", "startup_bench-ipykernel", "ipykernel", "—"),
        ("trivial cell p50 (magic vs 1+1)", "trivial_p50_bench-ferrolab", "trivial_p50_bench-ipykernel", "ipykernel", "≤ 1.0"),
        ("trivial cell p99 (magic vs 1+1)", "trivial_p99_bench-ferrolab", "trivial_p99_bench-ipykernel", "ipykernel", "≤ 1.0"),
        ("first Rust cell", "rust_first_bench-ferrolab", "rust_first_bench-evcxr", "evcxr_jupyter", "—"),
        ("start to first Rust cell done", "rust_start_to_first_bench-ferrolab", "rust_start_to_first_bench-evcxr",
         "evcxr_jupyter", "≤ 1.0 s"),
        ("warm Rust cell p50", "rust_warm_p50_bench-ferrolab", "rust_warm_p50_bench-evcxr", "evcxr_jupyter", "≤ 0.5"),
        ("first cell using polars", "crate_polars_bench-ferrolab", "crate_polars_bench-evcxr", "evcxr_jupyter (:dep)",
         "≤ 0.05"),
        ("first cell using serde_json", "crate_serde_json_bench-ferrolab", "crate_serde_json_bench-evcxr",
         "evcxr_jupyter (:dep)", "—"),
    ]
    print(f"\n{results['date']} — {results['machine']}\n")
    print("| measure | ferrolab | anchor | anchor value | ratio | goal |")
    print("|---|---|---|---|---|---|")
    for label, ours, theirs, anchor, goal in rows:
        if theirs not in results or ours not in results:
            continue
        print(f"| {label} | {results[ours]*1000:.1f} ms | {anchor} | {results[theirs]*1000:.1f} ms "
              f"| {ratio(ours, theirs):.3f} | {goal} |")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"kernel-{results['date'].replace(':', '')}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
