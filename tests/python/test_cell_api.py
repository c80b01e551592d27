"""Rust cells that use the notebook's tables, models and runs (the cell API,
`ferrolab_cell`), run by nbclient as a notebook: SQL -> Rust -> SQL and back, a
DataFrame shown as a cell's value, `generate` on a tiny random model, and a metric
logged from Rust that the collaboration server's tracking API (read with the
`mlflow` client) then holds.

The crates cells use come from the build `make test` prepared once for the machine
(`ferrolab kernel prepare`): a fresh kernel's `use polars::prelude::*` cell builds
no polars of its own (checked in what its build folder holds, not by time), and two
kernels started one after the other leave that shared build as it was.
"""
import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from conftest import BIN, WARM_UP_TIMEOUT
from kernel_client import run, stream_text
from test_collab_ipynb import Server


def shared_build():
    """Every file of the prepared crates' build, with its size and mtime."""
    cells = Path(os.environ["FERROLAB_HOME"]) / "cells"
    files = {}
    for path in cells.rglob("*"):
        if path.is_file() and "target" in path.parts:
            stat = path.stat()
            files[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return files


def built_in(folder):
    """The compiled crates a kernel's own evcxr folder holds, by crate name."""
    names = set()
    for path in Path(folder).rglob("*"):
        if path.suffix in (".rlib", ".rmeta", ".so") and path.name.startswith("lib"):
            names.add(path.name[3:].split("-")[0].split(".")[0])
    return names


def outputs(cell):
    """A cell's outputs as (kind, data-by-mime) pairs, errors as their text."""
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "error":
            out.append(("error", {"text/plain": o["ename"] + ": " + o["evalue"]}))
        elif o["output_type"] == "stream":
            out.append((o["name"], {"text/plain": o["text"]}))
        else:
            out.append((o["output_type"], o.get("data", {})))
    return out


def text(cell):
    return "\n".join(str(v) for _, data in outputs(cell) for v in data.values())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cell-api")
    server = Server(folder / "collab")
    token = subprocess.run([BIN, "collab", "token", "create", "--data", str(server.data), "--name", "erin",
                            "--role", "editor"], check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield folder, server, token
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


def test_sql_rust_sql_a_model_and_a_metric_in_one_notebook(server):
    folder, collab, token = server
    tiny = folder / "tiny"
    subprocess.run([BIN, "model", "tiny", str(tiny), "--seed", "7"], check=True, capture_output=True)
    (folder / "logs.csv").write_text("model,tokens\nalpha,3\nbeta,10\nalpha,4\ngamma,1\n")
    before = shared_build()
    assert before, "the prepared crates are missing: make test runs `ferrolab kernel prepare` first"

    cells = [
        ("load", "%load logs logs.csv"),
        ("sql-out", "%%sql --out per_model\nSELECT model, SUM(tokens) AS total FROM logs GROUP BY model ORDER BY model"),
        ("rust-table", "use polars::prelude::*;\n"
                       "let per_model = table(\"per_model\")?;\n"
                       "let doubled = per_model.lazy().with_column((col(\"total\") * lit(2)).alias(\"doubled\")).collect()?;\n"
                       "save_table(\"doubled\", &doubled)?;\n"
                       "println!(\"rows from SQL: {}\", doubled.height());"),
        ("sql-back", "%%sql\nSELECT model, doubled FROM doubled WHERE doubled > 10 ORDER BY model"),
        ("value", "doubled"),
        ("missing", "let nothing = table(\"no_such_table\");\nprintln!(\"{}\", nothing.unwrap_err());"),
        ("start", "%track start from-rust --experiment cell-api"),
        ("model", f"let answer = generate({json.dumps(str(tiny))}, \"hello\", &Generate::default().max_tokens(5))?;\n"
                  "log_param(\"source\", \"rust\")?;\n"
                  "log_metric(\"answer_chars\", answer.chars().count() as f64)?;\n"
                  "println!(\"generated {} chars\", answer.chars().count());"),
        ("end", "%track end"),
    ]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "ferrolab", "display_name": "Rust (ferrolab)", "language": "rust"}
    for cell_id, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell["id"] = cell_id
        nb.cells.append(cell)
    evcxr_dir = folder / "evcxr-1"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERROLAB_TRACKING", "MLFLOW_TRACKING"))}
    env.update(FERROLAB_TRACKING_URI=f"http://127.0.0.1:{collab.port}", FERROLAB_TRACKING_TOKEN=token, EVCXR_TMPDIR=str(evcxr_dir))
    evcxr_dir.mkdir()
    client = NotebookClient(nb, timeout=WARM_UP_TIMEOUT, kernel_name="ferrolab",
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env=env)
    by_id = {c["id"]: c for c in nb.cells}

    assert "rows from SQL: 3" in text(by_id["rust-table"]), outputs(by_id["rust-table"])
    back = text(by_id["sql-back"])
    assert "alpha" in back and "14" in back and "beta" in back and "20" in back and "gamma" not in back, back
    kinds = dict(outputs(by_id["value"]))
    assert "execute_result" in kinds, outputs(by_id["value"])
    html = kinds["execute_result"].get("text/html", "")
    assert "<table" in html and "shape: (3, 3)" in html and "doubled" in html, kinds
    assert "UnknownTable" in text(by_id["missing"]) and "per_model" in text(by_id["missing"])
    assert "generated" in text(by_id["model"]), outputs(by_id["model"])

    # The tracking server holds what the Rust cell logged, read with MLflow's client.
    from mlflow.tracking import MlflowClient
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    try:
        mlflow = MlflowClient(tracking_uri=f"http://127.0.0.1:{collab.port}")
        experiment = mlflow.get_experiment_by_name("cell-api")
        runs = mlflow.search_runs([experiment.experiment_id])
    finally:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    assert len(runs) == 1
    run_data = runs[0].data
    chars = int(text(by_id["model"]).split("generated ")[1].split(" chars")[0])
    assert run_data.metrics["answer_chars"] == chars
    assert run_data.params["source"] == "rust"

    # polars came from the shared build: this kernel compiled none of its own.
    own = built_in(evcxr_dir)
    assert not own & {"polars", "polars_core", "serde_json", "ferrolab_cell"}, own
    assert shared_build() == before, "the kernel rebuilt the shared crates"


def ok(kc, code):
    """Runs `code` (waiting as long as a first build may take); it must succeed.
    Returns the cell's iopub messages."""
    content, messages = run(kc, code, timeout=WARM_UP_TIMEOUT)
    assert content["status"] == "ok", content
    return messages


def test_a_second_fresh_kernel_shares_the_same_build(tmp_path):
    before = shared_build()
    for n in (1, 2):
        evcxr_dir = tmp_path / f"evcxr-{n}"
        evcxr_dir.mkdir()
        km, kc = start_new_kernel(kernel_name="ferrolab", startup_timeout=60,
                                  env={**os.environ, "EVCXR_TMPDIR": str(evcxr_dir)})
        try:
            messages = ok(kc, "use polars::prelude::*;\nlet df = df!(\"a\" => [1, 2, 3])?;\n"
                              "println!(\"{}\", df.height() * 2);")
            assert "6" in stream_text(messages), messages
            if n == 2:
                # A crate added with :dep builds beside the prebuilt ones, and a cell uses both.
                ok(kc, ':dep unicode-segmentation = "1"')
                messages = ok(kc, "use unicode_segmentation::UnicodeSegmentation;\n"
                                  "println!(\"{}\", serde_json::json!(\"a b\".split_word_bounds().count()));")
                assert stream_text(messages).strip() == "3", messages
                # A :dep naming a crate of the prepared set replaces it in this kernel's
                # cells, and the cell API still works beside it.
                ok(kc, ':dep serde_json = "1"')
                messages = ok(kc, 'display_markdown("**shown**");\n'
                                  'serde_json::to_string(&serde_json::json!([1, 2]))?')
                shown = [m["content"]["data"] for m in messages if m["msg_type"] == "display_data"]
                results = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "execute_result"]
                assert {"text/markdown": "**shown**"}.items() <= shown[0].items(), messages
                assert results == ['"[1,2]"'], messages
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        assert not built_in(evcxr_dir) & {"polars", "polars_core"}, built_in(evcxr_dir)
    assert shared_build() == before, "a kernel rebuilt the shared crates"


def cache_entries(folder):
    """The shared :dep cache's entries: {crate name: hits} (evcxr's cache layout:
    one folder per rustc command, its arguments in `meta`, a hit counter)."""
    entries = {}
    for entry in Path(folder).iterdir():
        meta, hits = entry / "meta", entry / "hits"
        if not (meta.is_file() and hits.is_file()):
            continue
        args = meta.read_text().splitlines()
        if "--crate-name" in args:
            name = args[args.index("--crate-name") + 1]
        else:  # a build script's own probe of rustc: --crate-name=NAME
            name = next(a.split("=", 1)[1] for a in args if a.startswith("--crate-name="))
        entries.setdefault(name, []).append(int(hits.read_text()))
    return entries


def test_dep_crates_build_once_per_machine_with_progress_shown(tmp_path):
    """A `:dep` crate (and what it depends on) is compiled by the first kernel that
    asks for it; the next fresh kernel takes every one from the shared cache instead
    of compiling it, and both show the build as it goes."""
    cache = tmp_path / "dep-cache"
    seen = []
    for n in (1, 2):
        evcxr_dir = tmp_path / f"evcxr-{n}"
        evcxr_dir.mkdir()
        km, kc = start_new_kernel(kernel_name="ferrolab", startup_timeout=60,
                                  env={**os.environ, "EVCXR_TMPDIR": str(evcxr_dir),
                                       "FERROLAB_DEP_CACHE_DIR": str(cache)})
        try:
            messages = ok(kc, ':dep textwrap = "0.16"\ntextwrap::fill("a b c", 1)')
            shown = [m["content"]["data"].get("text/plain", "") for m in messages
                     if m["msg_type"] in ("display_data", "update_display_data")]
            results = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "execute_result"]
            assert results == ['"a\\nb\\nc"'], messages
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        # What was being built and how far along, then what the build did.
        assert any(line.startswith("building for :dep: ") and " of about " in line for line in shown), shown
        assert shown[-1].startswith(":dep: about "), shown
        seen.append(cache_entries(cache))
    first, second = seen
    assert {"textwrap", "smawk", "unicode_width"} <= set(first), first
    assert {name: hits for name, hits in first.items() if set(hits) != {0}} == {}
    # The second kernel compiled nothing again: same entries, each one used once more.
    assert set(second) == set(first), (first, second)
    assert {name: hits for name, hits in second.items() if set(hits) != {1}} == {}
