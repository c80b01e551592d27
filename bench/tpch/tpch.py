"""TPC-H for the data magics, shared by `bench/tpch/tpch_bench.py` and
`tests/python/test_tpch.py`.

* Data: the eight tables as Parquet, generated offline by `tpchgen-cli` (a PyPI
  wheel of the Rust port of the specification's `dbgen`).
* Queries: `queries/q01.sql` … `q22.sql`, the specification's 22 queries with its
  validation (default) substitution parameters; Q11's fraction is 0.0001 / SF, as
  the specification says, written in for each scale factor.
* Answers: DuckDB's, on the same files; `compare` checks another engine's rows
  against them (in order where the query orders, numbers to 1e-9 relative).
* `Kernel`: a ferrolab kernel driven with jupyter_client: `%load` each table,
  `%%sql` each query, and the full results read back through a Rust cell.
"""
import atexit
import datetime
import decimal
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLES = ["lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region"]
NAMES = [f"q{n:02d}" for n in range(1, 23)]
# Where the machine's prepared crates for Rust cells are (`ferrolab kernel prepare`).
REAL_HOME = Path(os.environ.get("FERROLAB_HOME") or Path.home() / ".cache" / "ferrolab")


def queries(sf: float) -> dict:
    """The 22 queries by name ("q01" …), with Q11's fraction for this scale factor."""
    out = {}
    for name in NAMES:
        text = (HERE / "queries" / f"{name}.sql").read_text()
        if name == "q11":
            fraction = format(decimal.Decimal("0.0001") / decimal.Decimal(str(sf)), "f")
            text = text.replace("* 0.0001", f"* {fraction}")
        out[name] = text
    return out


def ordered(query: str) -> bool:
    """Whether the query's result has an order (an ORDER BY of the outer query)."""
    return "order by" in query.lower().rsplit(")", 1)[-1]


def generate(folder: Path, sf: float) -> Path:
    """The tables as Parquet in `folder` (made once; a half-written folder is redone)."""
    folder = Path(folder)
    done = folder / ".complete"
    if done.exists():
        return folder
    tpchgen = shutil.which("tpchgen-cli", path=str(Path(sys.executable).parent)) or shutil.which("tpchgen-cli")
    if tpchgen is None:
        raise RuntimeError("tpchgen-cli is not installed: `make venv` installs it into .venv")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    subprocess.run([tpchgen, "parquet", "-s", str(sf), "--output-dir", str(partial), "--quiet"],
                   check=True)
    (partial / ".complete").write_text(f"scale factor {sf}\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def duckdb_connection(folder: Path, threads: int, in_memory: bool):
    """DuckDB with the tables as in-memory tables or as views over the Parquet files."""
    import duckdb

    db = duckdb.connect()
    db.execute(f"SET threads = {threads}")
    kind = "TABLE" if in_memory else "VIEW"
    for table in TABLES:
        db.execute(f"CREATE {kind} {table} AS SELECT * FROM read_parquet('{folder / table}.parquet')")
    return db


def answers(folder: Path, sf: float, threads: int = 2) -> dict:
    """DuckDB's rows for every query."""
    db = duckdb_connection(folder, threads, in_memory=False)
    return {name: db.execute(sql).fetchall() for name, sql in queries(sf).items()}


def polars_rows(df) -> list:
    return [tuple(row) for row in df.iter_rows()]


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    numbers = (int, float, decimal.Decimal)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        a, b = float(a), float(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, datetime.datetime) != isinstance(b, datetime.datetime):
        a = a.date() if isinstance(a, datetime.datetime) else a
        b = b.date() if isinstance(b, datetime.datetime) else b
    return a == b


def _same_row(a, b) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))


def _sort_key(row):
    return tuple((v is None, str(round(float(v), 6)) if isinstance(v, (float, decimal.Decimal)) else str(v))
                 for v in row)


def compare(expected: list, got: list, in_order: bool):
    """None when `got` is DuckDB's `expected`, else what differs."""
    if len(expected) != len(got):
        return f"{len(got)} rows, DuckDB has {len(expected)}"
    if expected and len(expected[0]) != len(got[0]):
        return f"{len(got[0])} columns, DuckDB has {len(expected[0])}"
    pairs = zip(expected, got) if in_order else zip(sorted(expected, key=_sort_key), sorted(got, key=_sort_key))
    for i, (e, g) in enumerate(pairs):
        if not _same_row(e, g):
            return f"row {i}: {g!r}, DuckDB has {e!r}"
    return None


class Kernel:
    """A ferrolab kernel started with jupyter_client in a private Jupyter prefix."""

    def __init__(self, env=None, own_prefix=True):
        """With own_prefix (the benchmark), the kernelspec and FERROLAB_HOME go into
        a temporary folder that shares the machine's prepared crates for Rust cells;
        without (the tests), the environment conftest.py set up is used."""
        from jupyter_client.manager import start_new_kernel

        sys.path.insert(0, str(HERE.parent.parent / "tests" / "python"))
        from kernel_client import run

        self._run = run
        self.prefix = Path(tempfile.mkdtemp(prefix="ferrolab-tpch-"))
        atexit.register(shutil.rmtree, self.prefix, ignore_errors=True)
        if own_prefix:
            subprocess.run([os.environ["FERROLAB_BIN"], "kernel", "install", "--prefix", str(self.prefix)],
                           check=True, capture_output=True)
            (self.prefix / "home").mkdir()
            (REAL_HOME / "cells").mkdir(parents=True, exist_ok=True)
            (self.prefix / "home" / "cells").symlink_to(REAL_HOME / "cells", target_is_directory=True)
            os.environ["JUPYTER_PATH"] = str(self.prefix / "share" / "jupyter")
            os.environ["FERROLAB_HOME"] = str(self.prefix / "home")
        self.km, self.kc = start_new_kernel(kernel_name="ferrolab", startup_timeout=120,
                                            env={**os.environ, **(env or {})})

    def run(self, code: str, timeout=600):
        return self._run(self.kc, code, timeout=timeout)

    def ok(self, code: str, timeout=600):
        content, messages = self.run(code, timeout)
        if content["status"] != "ok":
            raise AssertionError(f"{code.splitlines()[0]}: {content.get('ename')}: {content.get('evalue')}")
        return messages

    def load(self, folder: Path, wait_for_memory: bool = True) -> float:
        """%load every table; with wait_for_memory, until all are in memory. Seconds taken."""
        start = time.perf_counter()
        for table in TABLES:
            self.ok(f"%load {table} {folder / table}.parquet")
        while wait_for_memory:
            messages = self.ok("%tables")
            listing = next(m["content"]["data"]["application/vnd.ferrolab.table+json"]
                           for m in messages if m["msg_type"] == "execute_result")
            memory = [row[listing["columns"].index("memory")] for row in listing["rows"]]
            if not any(m == "loading into memory" for m in memory):
                assert all(m.startswith("in memory") for m in memory), memory
                break
            time.sleep(0.05)
        return time.perf_counter() - start

    def settle(self):
        """Waits for the kernel's own start-up work (evcxr's first compile), so that
        no timing shares the machine with it."""
        self.ok("let settled = 1;")

    def sql(self, query: str, out: str = None):
        """Runs the query with %%sql (as a table named `out` when given)."""
        head = "%%sql" + (f" --out {out}" if out else "")
        return self.run(f"{head}\n{query.strip()}")

    def results(self, names) -> dict:
        """The full rows of the tables `names` (made with `out=`), read through a
        Rust cell that writes each as Arrow IPC."""
        import polars as pl

        folder = self.prefix / "results"
        folder.mkdir(exist_ok=True)
        listed = ", ".join(f'"{n}"' for n in names)
        self.ok("use polars::prelude::*;\n"
                f"for name in [{listed}] {{\n"
                "    let mut df = table(name)?;\n"
                f"    let mut file = std::fs::File::create(format!(\"{folder}/{{name}}.arrow\"))?;\n"
                "    IpcWriter::new(&mut file).finish(&mut df)?;\n"
                "}", timeout=900)
        return {n: polars_rows(pl.read_ipc(folder / f"{n}.arrow")) for n in names}

    def shutdown(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
