"""nbclient executes every notebook in notebooks/ with the ferrolab kernel, and the
outputs are checked, not only that the run finished. Notebook 06 runs against a
collaboration server started here, with two people's tokens, as `make up` sets it up."""
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import BIN, ROOT, WARM_UP_TIMEOUT
from test_collab_ipynb import Server

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def text_of(cell):
    """Everything a reader sees in a cell's outputs, as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.extend(str(v) for v in out["data"].values())
        elif out["output_type"] == "error":
            parts.append(out["ename"] + ": " + out["evalue"])
    return "\n".join(parts)


# What each notebook must show, by cell id.
EXPECTED = {
    "01-rust-basics.ipynb": {
        "variables": ["Hello from Rust!"],
        "functions": ["42"],
        "struct": ["Point(1.5, -2)", "<b>Point</b>"],
        "live": ["**Progress:** 3 of 3 steps"],
        "error": ["CompileError: mismatched types"],
        "time": ["Wall time:", "43"],
        "markdown": ["**Markdown** from a cell magic"],
        "lsmagic": ["%%markdown", "%time"],
    },
    "02-data-exploration.ipynb": {
        "generate": ["wrote 20000 requests and 200 users"],
        "load": ["loaded `requests`", "9 columns", "ts: datetime"],
        "tables": ["requests", "users", "ts: datetime"],
        "schema": ["completion_tokens", "i64"],
        "head": ["shape: (5, 9)"],
        "describe": ["shape: (9, 10)", "null_count", "25%"],
        "profile": ["profile of `requests`: 20000 rows", "`feedback` has", "<svg"],
        "per-model": ["shape: (4, 5)", "smollm2-135m"],
        "rust-share": ["shape: (4, 3)", "share", "<table"],
        "sql-share": ["shape: (1, 2)", "1.0"],
        "daily": ["shape: (56, 3)"],
        "teams": ["shape: (4, 3)", "research"],
        "top-users": ["shape: (5, 3)", "rank"],
        "plot-bar": ["bar chart", "4 bars", "<svg", "vega-lite/v5"],
        "plot-line": ["line chart", "56 points"],
        "plot-hist": ["40 bins"],
        "plot-scatter": ["scatter chart", "every 4th of 20000 points"],
        "plot-box": ["4 boxes"],
        "plot-feedback": ["bar chart", "4 bars", "vote"],
        "bad-column": ["NotNumeric", "`model` is str"],
        "after": ["daily"],
    },
    "03-finetune.ipynb": {
        "generate": ["wrote 40 training examples; held out: harbor, island, jungle, kettle, ladder, meadow"],
        "finetune": ["step 40/40", "adapter (PEFT): runs/shout/adapter", "<svg"],
        "after-kettle": ["KETTLE!"],
        "after-island": ["ISLAND!"],
        "after-paris": ["The capital of France is Paris."],
    },
    "04-serve-and-monitor.ipynb": {
        "finetune": ["step 40/40", "adapter (PEFT): runs/shout-serve/adapter"],
        "serve": ["serving smollm2 as 'demo' at http://127.0.0.1:8765/v1 (models: smollm2, shout)"],
        "list": ["demo", "running"],
        "call": ["shout   -> KETTLE!", "shout   -> The capital of France is Paris."],
        "feedback": ['"stored":true'],
        "monitor": ["server 'demo', last 10 min:", "<svg", "Mean human feedback"],
        "logs": ["chat.completions", "200"],
        "export": ["completions with mean score >= 4 written to data/feedback.jsonl"],
        "finetune-again": ["step 2/2"],
        "stop": ["stopped server 'demo'"],
    },
    "05-prompt-tests.ipynb": {
        "serve": ["serving smollm2 as 'prompt-lab' at http://127.0.0.1:8766/v1"],
        "suite-v1": ["5 passed, 7 failed, 0 errors of 12 (41.7% pass rate)", "run kept in runs/prompt-tests/v1",
                     "smollm2 (served)", "Expected output to contain &quot;bonjour&quot;"],
        "suite-v2": ["since v1 (41.7%): 2 regressed, 1 fixed, 9 unchanged, 0 new",
                     "regressed: question=Say hello in French.", "fixed: question=What is the capital of France?",
                     "regressed</span>"],
        "metrics": ['"pass_rate":0.3333333333333333'],
        "stop": ["stopped server 'prompt-lab'"],
    },
    "06-tracking-and-governance.ipynb": {
        "status": ["tracking to http://127.0.0.1", "as alice (editor)"],
        "finetune-fast": ["step 40/40"],
        "runs": ["2 run(s) at http://127.0.0.1", "shout-slow", "shout-fast", "FINISHED", "params.lr"],
        "compare": ["2 runs compared", "lr", "0.0002", "0.002", "<svg"],
        "register": ["registered 'shout-bot' version 1 (author alice)", "Base model: `smollm2` (blake3:",
                     "Data: `", "Run: `shout-fast`"],
        "blocked": ["PolicyError", "approvals: 0 of the 1", "the server has not evaluated version 1"],
        "eval": ["the server evaluated 'shout-bot' version 1: 6 of 6 tests passed (100.0%)",
                 "in the experiment 'evaluations'"],
        "self-review": ["PolicyError", "self-approval refused"],
        "as-reviewer": ["as bob (editor)"],
        "review": ["bob approved 'shout-bot' version 1"],
        "as-author": ["as alice (editor)"],
        "promote": ["'shout-bot' version 1 is now 'production'"],
        "audit": ["review.approve", "bob", "alias.set", "production → version 1",
                  "hash chain verified"],
    },
}


def test_every_notebook_has_expectations():
    assert {p.name for p in NOTEBOOKS} == set(EXPECTED)


@pytest.fixture
def tracking(path, tmp_path, monkeypatch):
    """For notebook 06: a collaboration server, and the kernel's environment pointing at
    it with alice's token and bob's as the reviewer's."""
    if not path.name.startswith("06-"):
        monkeypatch.delenv("FERROLAB_TRACKING_URI", raising=False)
        yield None
        return
    server = Server(tmp_path / "collab")
    tokens = {}
    for name in ("alice", "bob"):
        tokens[name] = subprocess.run(
            [BIN, "collab", "token", "create", "--data", str(server.data), "--name", name, "--role", "editor"],
            check=True, capture_output=True, text=True).stdout.strip()
    monkeypatch.setenv("FERROLAB_TRACKING_URI", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("FERROLAB_TRACKING_TOKEN", tokens["alice"])
    monkeypatch.setenv("FERROLAB_REVIEWER_TOKEN", tokens["bob"])
    try:
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_shows_the_right_outputs(path: Path, tracking):
    nb = nbformat.read(path, as_version=4)
    stored_language = dict(nb.metadata.language_info)
    client = NotebookClient(
        nb,
        kernel_name="ferrolab",
        timeout=WARM_UP_TIMEOUT,
        startup_timeout=60,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    # The executed notebook, outputs and charts included, for the report tests
    # (tests/browser/export.test.js exports these when they are there).
    executed = ROOT / "tests" / "artifacts" / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, executed / path.name)
    # The notebook keeps what the kernel says of its language, so a front end that
    # stores kernel_info's language_info (JupyterLab) does not mark it modified on
    # opening; only the Rust version depends on the machine.
    reported = dict(nb.metadata.language_info)
    assert reported.pop("version") and stored_language.pop("version")
    assert reported == stored_language
    # JupyterLab ranks application/json above text/html: no table or chart may come
    # with it, or a JSON tree is shown in its place (ferrolab's machine-readable
    # results use application/vnd.ferrolab.*+json).
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            assert not ("text/html" in data and "application/json" in data), (cell.get("id"), list(data))
    cells = {cell.get("id"): cell for cell in nb.cells}
    for cell_id, needles in EXPECTED[path.name].items():
        shown = text_of(cells[cell_id])
        for needle in needles:
            assert needle in shown, f"{path.name} cell {cell_id}: {needle!r} not in {shown!r}"
    # Counts run 1, 2, 3… over the code cells, as in any Jupyter kernel.
    if path.name == "03-finetune.ipynb":
        before = text_of(cells["before"])
        assert "KETTLE!" not in before, "the base model must not already show the behaviour"
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
    # Only the cell tagged raises-exception may fail.
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        failed = any(o["output_type"] == "error" for o in cell.outputs)
        assert failed == ("raises-exception" in cell.metadata.get("tags", [])), cell.get("id")
