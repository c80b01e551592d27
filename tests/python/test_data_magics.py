"""The data magics through the real kernel: %load, %sql/%%sql, %tables, %schema,
%head, %drop, with their HTML and text tables and their errors."""
import pytest
from jupyter_client.manager import start_new_kernel

from kernel_client import of_type, run


@pytest.fixture(scope="module")
def data_kernel(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "requests.csv").write_text(
        "model,tokens,latency_ms,status\n"
        "smollm2,120,35.5,ok\n"
        "smollm2,80,30.0,ok\n"
        "llama,300,110.25,error\n"
        "qwen,50,1.0,ok\n"
    )
    (folder / "notes.csv").write_text("model,note\nsmollm2,\"<script>alert(1)</script>\"\n")
    km, kc = start_new_kernel(kernel_name="ferrolab", startup_timeout=60)
    try:
        yield kc, folder
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def result(messages):
    results = of_type(messages, "execute_result")
    assert len(results) == 1, messages
    return results[0]["content"]["data"]


def test_load_and_query(data_kernel):
    kc, folder = data_kernel
    content, messages = run(kc, f"%load requests {folder / 'requests.csv'}")
    assert content["status"] == "ok", content
    assert "4 columns" in result(messages)["text/plain"]
    content, messages = run(kc, "%%sql --out per_model\nSELECT model, SUM(tokens) AS tokens\nFROM requests\nGROUP BY model\nORDER BY tokens DESC")
    assert content["status"] == "ok", content
    data = result(messages)
    assert data["text/plain"].startswith("shape: (3, 2)")
    assert "<table" in data["text/html"] and "<td>llama</td>" in data["text/html"]
    content, messages = run(kc, "%sql SELECT tokens FROM per_model WHERE model = 'smollm2'")
    assert "200" in result(messages)["text/plain"]
    content, messages = run(kc, "%tables")
    assert "per_model" in result(messages)["text/plain"]
    content, messages = run(kc, "%schema requests")
    text = result(messages)["text/plain"]
    assert "latency_ms" in text and "f64" in text
    content, messages = run(kc, "%head requests 2")
    assert result(messages)["text/plain"].startswith("shape: (2, 4)")


def test_values_are_escaped(data_kernel):
    kc, folder = data_kernel
    run(kc, f"%load notes {folder / 'notes.csv'}")
    _, messages = run(kc, "%head notes")
    html = result(messages)["text/html"]
    assert "<script>" not in html and "&lt;script&gt;" in html


@pytest.mark.parametrize("code, ename, words", [
    ("%sql SELEC * FROM requests", None, "the query failed"),
    ("%sql SELECT nope FROM requests", None, "nope"),
    ("%head missing", "UnknownTable", "loaded tables:"),
    ("%load x /no/such/file.csv", "FileNotFound", "does not exist"),
    ("%load x data.unknown", "UsageError", "--format"),
])
def test_errors_are_clear_and_tables_survive(data_kernel, code, ename, words):
    kc, folder = data_kernel
    run(kc, f"%load requests {folder / 'requests.csv'}")
    content, messages = run(kc, code)
    assert content["status"] == "error"
    if ename:
        assert content["ename"] == ename, content
    assert words in content["evalue"], content["evalue"]
    assert len(of_type(messages, "error")) == 1
    content, messages = run(kc, "%sql SELECT COUNT(*) AS n FROM requests")
    assert content["status"] == "ok" and "4" in result(messages)["text/plain"]


def test_drop(data_kernel):
    kc, folder = data_kernel
    run(kc, f"%load gone {folder / 'requests.csv'}")
    content, _ = run(kc, "%drop gone")
    assert content["status"] == "ok"
    content, _ = run(kc, "%head gone")
    assert content["status"] == "error" and content["ename"] == "UnknownTable"


def test_charts_are_vega_lite_svg_and_text(data_kernel):
    kc, folder = data_kernel
    run(kc, f"%load requests {folder / 'requests.csv'}")
    content, messages = run(kc, "%plot requests --kind bar --x model --y tokens")
    assert content["status"] == "ok", content
    data = result(messages)
    spec = data["application/vnd.vegalite.v5+json"]
    assert spec["$schema"].endswith("vega-lite/v5.json") and spec["mark"] == "bar"
    sums = {v["x"]: v["y"] for v in spec["data"]["values"]}
    assert sums == {"smollm2": 200, "llama": 300, "qwen": 50}
    assert data["image/svg+xml"].startswith("<svg") and data["text/plain"].startswith("bar chart")
    content, messages = run(kc, "%plot SELECT tokens, latency_ms FROM requests WHERE status = 'ok' --kind scatter --x tokens --y latency_ms")
    assert content["status"] == "ok", content
    assert "3 points" in result(messages)["text/plain"]
    content, messages = run(kc, "%%plot --kind hist --x latency_ms --bins 4\nSELECT latency_ms FROM requests")
    counts = [v["count"] for v in result(messages)["application/vnd.vegalite.v5+json"]["data"]["values"]]
    assert counts == [1, 2, 0, 1]


@pytest.mark.parametrize("code, ename, words", [
    ("%plot requests --kind hist --x model", "NotNumeric", "`model` is str"),
    ("%plot requests --kind bar --x nope", "ColumnNotFound", "model, tokens, latency_ms, status"),
    ("%plot requests --kind pie --x model", "UsageError", "line, bar, scatter, hist, box"),
    ("%plot missing --kind bar --x model", "UnknownTable", "loaded tables:"),
    ("%describe missing", "UnknownTable", "loaded tables:"),
    ("%profile", "UsageError", "%profile NAME"),
])
def test_chart_and_summary_errors(data_kernel, code, ename, words):
    kc, folder = data_kernel
    run(kc, f"%load requests {folder / 'requests.csv'}")
    content, _ = run(kc, code)
    assert content["status"] == "error" and content["ename"] == ename, content
    assert words in content["evalue"], content["evalue"]
    content, messages = run(kc, "%describe requests")
    assert content["status"] == "ok" and "null_count" in result(messages)["text/plain"]
