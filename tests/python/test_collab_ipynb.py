"""`.ipynb` import/export through the collaboration server's REST API, checked
with nbformat: every export validates, and reads back equal to what was imported
(older 4.x files are upgraded: cell ids added, minor version 5)."""
import base64
import copy
import json
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from conftest import BIN, ROOT

PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)).decode()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port, proc, seconds, failure):
    """Waits until `port` accepts connections; raises `failure()` if `proc` exits
    or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(failure())
            time.sleep(0.05)


class Server:
    def __init__(self, data, args=(), env=None):
        self.data = data
        self.port = _free_port()
        # The server's output goes to a file beside its data folder: a pipe nobody
        # reads would stop a talkative server once it filled.
        self.log_path = data.parent / f"{data.name}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [BIN, "collab", "serve", "--data", str(data), "--bind", f"127.0.0.1:{self.port}", *args],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        self.token = subprocess.run(
            [BIN, "collab", "token", "create", "--data", str(data), "--name", "pytest", "--role", "owner"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        _wait_for_port(self.port, self.proc, 30,
                       lambda: f"collab server did not start: {self.log_path.read_text(errors='replace')}")

    @property
    def token_store(self):
        """Where `ferrolab collab token` finds this server's tokens."""
        return ["--data", str(self.data)]

    def blobs(self):
        """The artifact contents stored (their hashes)."""
        return {p.name for p in (self.data / "artifacts" / "sha256").rglob("*") if p.is_file()}

    def request(self, method, path, body=None, token=True):
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), dict(error.headers)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory(prefix="ferrolab-collab-") as data:
        srv = Server(Path(data))
        try:
            yield srv
        finally:
            srv.stop()


def _rich_notebook():
    nb = v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "ferrolab", "display_name": "Rust (ferrolab)", "language": "rust"},
        "language_info": {"name": "rust", "version": "1.95", "file_extension": ".rs"},
        "widgets": {"application/vnd.jupyter.widget-state+json": {
            "version_major": 2, "version_minor": 0,
            "state": {"abc": {"model_name": "IntSliderModel", "state": {"value": 3, "max": 10.5, "disabled": False}}},
        }},
        "custom": {"nested": [1, 2.25, None, True, "x", {"deep": []}], "big": 9007199254740993},
    }
    md = v4.new_markdown_cell("# Report\n![chart](attachment:chart.png)\n\nΣ émoji 😀 עברית")
    md.attachments = {"chart.png": {"image/png": PNG}}
    code = v4.new_code_cell("println!(\"hi\");\nlet x = 1;", execution_count=7)
    code.metadata = {"tags": ["setup", "slow"], "collapsed": False, "scrolled": True, "jupyter": {"source_hidden": True}}
    code.outputs = [
        v4.new_output("stream", name="stdout", text="hi\nthere\n"),
        v4.new_output("stream", name="stderr", text="warning: careful\n"),
        v4.new_output("execute_result", execution_count=7, data={
            "text/plain": "1", "text/html": "<b>1</b>\n<i>one</i>", "application/json": {"a": [1, 2]},
            "text/latex": "$x^2$", "image/svg+xml": "<svg xmlns=\"http://www.w3.org/2000/svg\">\n</svg>",
        }, metadata={"isolated": True}),
        v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"},
                      metadata={"image/png": {"width": 400, "height": 300}}),
        v4.new_output("error", ename="Panic", evalue="boom", traceback=["\x1b[31mthread main panicked\x1b[0m", "at src/lib.rs:1"]),
    ]
    raw = v4.new_raw_cell("raw text", metadata={"format": "text/x-rst"})
    empty = v4.new_code_cell("")
    return nb | {"cells": [md, code, raw, empty]}


def _old_notebook(minor):
    return {
        "nbformat": 4, "nbformat_minor": minor, "metadata": {"title": "old one"},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["line one\n", "line two"]},
            {"cell_type": "code", "metadata": {}, "source": ["1 + 1"], "execution_count": 1,
             "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                          "data": {"text/plain": ["2"]}}]},
        ],
    }


CORPUS = {
    "rich outputs, attachments and widget metadata": lambda: _rich_notebook(),
    "the repository's example notebook": lambda: json.loads((ROOT / "notebooks" / "01-rust-basics.ipynb").read_text()),
    "nbformat 4.0 without cell ids": lambda: _old_notebook(0),
    "nbformat 4.4 without cell ids": lambda: _old_notebook(4),
    "duplicate cell ids": lambda: {
        "nbformat": 4, "nbformat_minor": 5, "metadata": {},
        "cells": [{"id": "same", "cell_type": "raw", "metadata": {}, "source": "a"},
                  {"id": "same", "cell_type": "raw", "metadata": {}, "source": "b"}],
    },
    "empty notebook": lambda: v4.new_notebook(),
}


def _normalised(nb):
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        cell.pop("id", None)
    nb.pop("nbformat_minor", None)
    return nb


@pytest.mark.parametrize("name", list(CORPUS))
def test_import_then_export_is_lossless(server, name):
    original = CORPUS[name]()
    original_text = json.dumps(original)
    status, body, _ = server.request("POST", "/api/notebooks", original_text.encode())
    assert status == 201, body
    entry = json.loads(body)
    status, exported_text, headers = server.request("GET", f"/api/notebooks/{entry['id']}/ipynb")
    assert status == 200, exported_text
    assert headers["content-type"] == "application/x-ipynb+json"
    exported = nbformat.reads(exported_text, as_version=4)
    nbformat.validate(exported)
    assert exported.nbformat_minor == 5
    ids = [cell.id for cell in exported.cells]
    assert len(set(ids)) == len(ids), "cell ids are unique"
    expected = nbformat.reads(original_text, as_version=4)
    if original.get("nbformat_minor") == 5 and name != "duplicate cell ids":
        assert exported == expected
    else:
        assert _normalised(exported) == _normalised(expected)
    # Written the way Jupyter writes files, so exports diff cleanly.
    assert exported_text == nbformat.writes(exported) + "\n"


def test_title_and_listing(server):
    status, body, _ = server.request("POST", "/api/notebooks?title=Fine%20tuning%20run", b"")
    assert status == 201, body
    entry = json.loads(body)
    assert entry["title"] == "Fine tuning run"
    assert entry["notebook"].startswith("automerge:") and entry["runtime"].startswith("automerge:")
    status, body, _ = server.request("GET", f"/api/notebooks/{entry['id']}")
    assert status == 200 and json.loads(body) == entry
    status, body, _ = server.request("GET", "/api/notebooks")
    assert entry["id"] in [n["id"] for n in json.loads(body)["notebooks"]]
    status, body, _ = server.request("GET", f"/api/notebooks/{entry['id']}/ipynb")
    nbformat.validate(nbformat.reads(body, as_version=4))


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"nbformat": 3, "worksheets": []}).encode(), 422, "nbformat 4"),
    (json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                 "cells": [{"cell_type": "bogus", "source": ""}]}).encode(), 422, "cell 0"),
    (json.dumps({"hello": 1}).encode(), 400, ".ipynb"),
])
def test_bad_bodies_get_actionable_errors(server, body, status, words):
    got, text, _ = server.request("POST", "/api/notebooks", body)
    assert got == status, text
    assert words in json.loads(text)["error"]["message"]


def test_unknown_notebook_and_endpoint(server):
    status, text, _ = server.request("GET", "/api/notebooks/nope/ipynb")
    assert status == 404 and "GET /api/notebooks" in json.loads(text)["error"]["message"]
    status, text, _ = server.request("GET", "/api/nothing-here")
    assert status == 404
    status, text, _ = server.request("GET", "/api/notebooks", token=False)
    assert status == 401
