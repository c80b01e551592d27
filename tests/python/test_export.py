"""`ferrolab export` from the command line: every notebook in notebooks/ exports to
HTML, markdown and ipynb; ipynb passes nbformat.validate; markdown keeps images as
files; bad input gets a clear error. (The HTML is checked in a browser by
tests/browser/export.test.js.)"""
import base64
import json
import subprocess
from pathlib import Path

import nbformat
import pytest

from conftest import BIN, ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c63f8cfc0f01f0005000201e2b1e9f60000000049454e44ae426082"
)).decode()


def export(*args, check=True):
    return subprocess.run([BIN, "export", *map(str, args)], capture_output=True, text=True, timeout=120, check=check)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_exports_to_every_format(path: Path, tmp_path):
    html = tmp_path / "report.html"
    export(path, "--to", "html", "-o", html, "--toc")
    text = html.read_text()
    assert text.startswith("<!doctype html>")
    assert "Content-Security-Policy" in text
    source = nbformat.read(path, as_version=4)
    for cell in source.cells:
        if cell.cell_type == "code" and "remove-cell" not in cell.metadata.get("tags", []):
            assert f'data-cell="{cell.id}"' in text, cell.id

    ipynb = tmp_path / "copy.ipynb"
    export(path, "--to", "ipynb", "-o", ipynb)
    copy = nbformat.read(ipynb, as_version=4)
    nbformat.validate(copy)
    assert copy.nbformat_minor == 5
    assert [c.source for c in copy.cells] == [c.source for c in source.cells]

    md = tmp_path / "notes.md"
    export(path, "--to", "markdown", "-o", md)
    assert md.read_text().strip()


def nb_with(cells, metadata=None):
    return {"nbformat": 4, "nbformat_minor": 4, "metadata": metadata or {}, "cells": cells}


def test_markdown_keeps_images_as_files_and_ipynb_upgrades(tmp_path):
    src = tmp_path / "plots.ipynb"
    src.write_text(json.dumps(nb_with([
        {"cell_type": "markdown", "metadata": {}, "source": ["# Plots\n", "![logo](attachment:../../logo.png)"],
         "attachments": {"../../logo.png": {"image/png": PNG}}},
        {"cell_type": "code", "metadata": {}, "source": "plot()", "execution_count": 1, "outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {"image/png": PNG, "text/plain": "img"}},
            {"output_type": "display_data", "metadata": {}, "data": {
                "image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script><rect width='3' height='3'/></svg>",
                "application/vnd.vegalite.v5+json": {"mark": "bar"}}},
        ]},
        {"cell_type": "code", "metadata": {}, "source": "x", "execution_count": None, "outputs": [], "id": "dup"},
        {"cell_type": "code", "metadata": {}, "source": "y", "execution_count": None, "outputs": [], "id": "dup"},
    ])))
    out = tmp_path / "out" / "plots.md"
    out.parent.mkdir()
    export(src, "--to", "markdown", "-o", out)
    text = out.read_text()
    files = sorted(p.relative_to(out.parent).as_posix() for p in (out.parent / "plots_files").iterdir())
    assert len(files) == 3, files
    for f in files:
        assert f in text, f"{f} is referenced"
    assert not any(".." in f.split("/")[-1][:2] for f in files), "attachment names cannot leave the folder"
    svg = next(p for p in (out.parent / "plots_files").iterdir() if p.suffix == ".svg").read_text()
    assert "<rect" in svg and "script" not in svg
    assert (out.parent / "plots_files" / next(f for f in files if f.endswith("output0.png")).split("/")[-1]).read_bytes().startswith(b"\x89PNG")

    ipynb = tmp_path / "v45.ipynb"
    export(src, "--to", "ipynb", "-o", ipynb)
    nb = nbformat.read(ipynb, as_version=4)
    nbformat.validate(nb)
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids), "duplicate ids are replaced"
    assert nb.cells[0].source == "# Plots\n![logo](attachment:../../logo.png)"


def test_bad_input_gets_a_clear_error(tmp_path):
    missing = export(tmp_path / "nope.ipynb", check=False)
    assert missing.returncode != 0 and "cannot read" in missing.stderr
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    bad = export(broken, check=False)
    assert bad.returncode != 0 and "not valid JSON" in bad.stderr
    old = tmp_path / "old.ipynb"
    old.write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}))
    v3 = export(old, check=False)
    assert v3.returncode != 0 and "nbformat 3" in v3.stderr and "JupyterLab" in v3.stderr
    fmt = export(old, "--to", "pdf", check=False)
    assert fmt.returncode != 0 and "html, markdown or ipynb" in fmt.stderr
    assert not list(tmp_path.glob("*.html")), "nothing half-written is left"


def test_interactive_charts_need_their_script_and_say_so(tmp_path):
    src = tmp_path / "chart.ipynb"
    src.write_text(json.dumps(nb_with([
        {"cell_type": "code", "metadata": {}, "source": "%chart", "execution_count": 1, "outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {
                "image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg'><rect width='3' height='3'/></svg>",
                "application/vnd.vegalite.v5+json": {"mark": "bar"}}}]},
    ])))
    empty = tmp_path / "no-web-build"
    empty.mkdir()
    missing = export(src, "--interactive", "--chart-script", empty, "-o", tmp_path / "r.html", check=False)
    assert missing.returncode != 0
    assert "report-charts.js" in missing.stderr and "make web" in missing.stderr, missing.stderr
    assert not (tmp_path / "r.html").exists()
    markdown = export(src, "--interactive", "--to", "markdown", check=False)
    assert markdown.returncode != 0 and "for HTML reports" in markdown.stderr
    # With a script (any text will do here; the real one is drawn in a browser by
    # tests/browser/export.test.js) it is inlined and named in the policy.
    script = tmp_path / "report-charts.js"
    script.write_text("document.documentElement.dataset.charts = 'x';")
    export(src, "--interactive", "--chart-script", script, "-o", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "<script>document.documentElement.dataset.charts = 'x';</script>" in html
    assert "script-src 'sha256-" in html and 'data-vega-lite="{&quot;mark&quot;:&quot;bar&quot;}"' in html
