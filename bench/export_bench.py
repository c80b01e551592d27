"""Export benchmark: a 500-cell notebook with images and charts to HTML, with
`ferrolab export --to html` and `jupyter nbconvert --to html` in the same run.

The notebook: 500 cells; one in five markdown (headings, a table, a list); the
code cells print a line, every other one shows a PNG (about 20 KB), every tenth a
chart (a Vega-Lite spec with its static SVG, as %plot makes them), every fifth
an HTML table. Each tool exports it 5 times; the median wall time is compared
(goal: ferrolab at most 0.1x nbconvert's).

    make bench-export
    FERROLAB_BIN=... NBCONVERT=.../bin/jupyter-nbconvert python bench/export_bench.py [--quick]
"""
import argparse
import base64
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
import zlib
from pathlib import Path


def png(width, height, seed):
    """A real PNG of noise (so it does not compress away)."""
    rng = random.Random(seed)
    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(width * 3)) for _ in range(height))

    def chunk(kind, data):
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def svg_chart(i):
    points = " ".join(f"{40 + x * 12},{200 - ((x * 37 + i * 11) % 150)}" for x in range(40))
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="560" height="240" viewBox="0 0 560 240">'
        '<rect width="560" height="240" fill="white"/>'
        f'<polyline points="{points}" fill="none" stroke="#1a73e8" stroke-width="2"/>'
        f'<text x="280" y="20" text-anchor="middle" font-size="13">loss, run {i}</text></svg>'
    )


def notebook(cells=500):
    image = base64.b64encode(png(96, 64, 1)).decode()
    out = []
    for i in range(cells):
        cid = f"c{i:04d}"
        if i % 5 == 4:
            out.append({"id": cid, "cell_type": "markdown", "metadata": {}, "source":
                        f"## Step {i}\n\nWhat changed: *learning rate* and **rank**.\n\n| k | v |\n|---|---|\n| lr | {i / 1000} |\n\n- one\n- two\n"})
            continue
        outputs = [{"output_type": "stream", "name": "stdout", "text": f"step {i}: loss {1 / (i + 1):.4f}\n"}]
        if i % 2 == 0:
            outputs.append({"output_type": "display_data", "metadata": {}, "data": {"image/png": image, "text/plain": "<Figure>"}})
        if i % 10 == 1:
            spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "mark": "line",
                    "data": {"values": [{"x": x, "y": (x * 37 + i * 11) % 150} for x in range(40)]},
                    "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": {"field": "y", "type": "quantitative"}}}
            outputs.append({"output_type": "display_data", "metadata": {}, "data": {
                "application/vnd.vegalite.v5+json": spec, "image/svg+xml": svg_chart(i), "text/plain": "line chart"}})
        if i % 5 == 3:
            rows = "".join(f"<tr><td>{r}</td><td>{r * i}</td></tr>" for r in range(8))
            outputs.append({"output_type": "execute_result", "execution_count": i + 1, "metadata": {}, "data": {
                "text/html": f"<table><tr><th>k</th><th>v</th></tr>{rows}</table>", "text/plain": "table"}})
        out.append({"id": cid, "cell_type": "code", "metadata": {}, "execution_count": i + 1, "outputs": outputs,
                    "source": f"let loss = train_step({i});\nprintln!(\"step {{}}: loss {{:.4}}\", {i}, loss);"})
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "ferrolab", "display_name": "Rust (ferrolab)", "language": "rust"},
        "language_info": {"name": "rust"}}, "cells": out}


def timed(cmd, env=None):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    runs = 2 if args.quick else 5
    ferrolab = os.environ["FERROLAB_BIN"]
    nbconvert = os.environ["NBCONVERT"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "report.ipynb"
        src.write_text(json.dumps(notebook()))
        size = src.stat().st_size
        env = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1"}
        ours, theirs = [], []
        for _ in range(runs):
            ours.append(timed([ferrolab, "export", str(src), "--to", "html", "-o", str(tmp / "ferrolab.html")]))
            theirs.append(timed([nbconvert, "--to", "html", "--output", str(tmp / "nbconvert.html"), str(src)], env))
        f, n = statistics.median(ours), statistics.median(theirs)
        f_size = (tmp / "ferrolab.html").stat().st_size
        n_size = (tmp / "nbconvert.html").stat().st_size
        n_html = (tmp / "nbconvert.html").read_text()
        remote = n_html.count('src="http')
        print(f"500-cell notebook, {size / 1e6:.1f} MB, median of {runs}:")
        print(f"  ferrolab export   {f:.3f} s   ({f_size / 1e6:.1f} MB, self-contained)")
        print(f"  nbconvert --to html {n:.3f} s   ({n_size / 1e6:.1f} MB; loads "
              f"{remote} scripts from the network)")
        print(f"  ratio {f / n:.3f}x (goal <= 0.1x)")
        if args.out:
            Path(args.out).write_text(json.dumps({"ferrolab_s": ours, "nbconvert_s": theirs, "ratio": f / n}, indent=1))


if __name__ == "__main__":
    main()
