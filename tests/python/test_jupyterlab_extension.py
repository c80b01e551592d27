"""ferrolab's JupyterLab extension, server half: a real Jupyter server from the
venv with the installed `ferrolab-jupyterlab` wheel, in front of a real
collaboration server. The browser half (the "Shared notebooks" panel) is
`tests/browser/jupyterlab.test.js`."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from test_collab_ipynb import Server

JUPYTER = Path(sys.executable).parent / "jupyter"
JUPYTER_TOKEN = "jupyter-test-token"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Jupyter:
    """`jupyter server` with the extension, told about `collab` (or not)."""

    def __init__(self, root, collab=None, token=None):
        self.port = _free_port()
        env = dict(os.environ)
        for name in ("FERROLAB_COLLAB_URL", "FERROLAB_TOKEN"):
            env.pop(name, None)
        if collab is not None:
            env["FERROLAB_COLLAB_URL"] = f"http://127.0.0.1:{collab.port}"
            env["FERROLAB_TOKEN"] = token or collab.token
        self.log_path = Path(root) / f"jupyter-{self.port}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(JUPYTER), "server", "--no-browser", "--allow-root", f"--port={self.port}", "--ip=127.0.0.1",
             f"--IdentityProvider.token={JUPYTER_TOKEN}", f"--ServerApp.root_dir={root}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        deadline = time.monotonic() + 60
        while self.get("/api/status")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter server did not start: {self.log_path.read_text(errors='replace')}")
            time.sleep(0.2)

    def get(self, path, auth=True):
        return self.call("GET", path, None, auth)

    def post(self, path, body=b"", auth=True):
        return self.call("POST", path, body, auth)

    def call(self, method, path, body, auth):
        headers = {"Authorization": f"token {JUPYTER_TOKEN}"} if auth else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), dict(error.headers)
        except OSError:
            return 0, "", {}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def servers():
    with tempfile.TemporaryDirectory(prefix="ferrolab-lab-") as root:
        collab = Server(Path(root) / "data")
        nb = v4.new_notebook()
        nb.cells = [v4.new_markdown_cell("# Shared"), v4.new_code_cell("let x = 40 + 2;\nx")]
        status, body, _ = collab.request("POST", "/api/notebooks?title=Shared%20one", nbformat.writes(nb).encode())
        assert status == 201, body
        entry = json.loads(body)
        jupyter = Jupyter(root, collab)
        try:
            yield collab, jupyter, entry
        finally:
            jupyter.stop()
            collab.stop()


def test_the_extension_is_installed_in_the_venv():
    listed = subprocess.run([str(JUPYTER), "labextension", "list"], capture_output=True, text=True)
    text = listed.stdout + listed.stderr
    assert "@ferrolab/jupyterlab" in text and "enabled" in text and "OK" in text, text
    servers = subprocess.run([str(JUPYTER), "server", "extension", "list"], capture_output=True, text=True)
    assert "ferrolab_jupyterlab" in servers.stdout + servers.stderr


def test_the_proxy_lists_and_opens_the_servers_notebooks_without_showing_the_token(servers):
    collab, jupyter, entry = servers
    status, body, headers = jupyter.get("/ferrolab/api/notebooks")
    assert status == 200, body
    listed = json.loads(body)["notebooks"]
    assert [n["id"] for n in listed] == [entry["id"]]
    assert listed[0]["title"] == "Shared one"
    status, body, headers = jupyter.get(f"/ferrolab/api/notebooks/{entry['id']}/ipynb")
    assert status == 200, body
    nb = nbformat.reads(body, as_version=4)
    nbformat.validate(nb)
    assert [c.source for c in nb.cells] == ["# Shared", "let x = 40 + 2;\nx"]
    status, body, _ = jupyter.get(f"/ferrolab/api/notebooks/{entry['id']}")
    assert status == 200 and json.loads(body)["id"] == entry["id"]
    status, body, _ = jupyter.get("/ferrolab/api/workspace")
    assert status == 200 and json.loads(body)["user"]["role"] == "owner"
    for path in ("/ferrolab/api/notebooks", f"/ferrolab/api/notebooks/{entry['id']}/ipynb", "/ferrolab/api/workspace"):
        status, body, headers = jupyter.get(path)
        assert collab.token not in body and collab.token not in json.dumps(headers), path


def test_only_a_signed_in_jupyter_user_reaches_the_collaboration_server(servers):
    _, jupyter, entry = servers
    status, body, _ = jupyter.get("/ferrolab/api/notebooks", auth=False)
    assert status == 403, (status, body)
    status, body, _ = jupyter.get(f"/ferrolab/api/notebooks/{entry['id']}/ipynb", auth=False)
    assert status == 403, (status, body)


def test_only_the_extensions_own_calls_are_proxied(servers):
    _, jupyter, entry = servers
    for path in (
        "/ferrolab/api/notebooks/..%2F..%2Fsession",
        "/ferrolab/api/tokens",
        f"/ferrolab/api/notebooks/{entry['id']}/kernel/shutdown",
        f"/ferrolab/api/notebooks/{entry['id']}/export",
    ):
        status, body, _ = jupyter.get(path)
        assert status == 404, (path, status, body)
    # The kernel calls are POSTs only.
    status, _, _ = jupyter.get(f"/ferrolab/api/notebooks/{entry['id']}/kernel/execute")
    assert status == 405


def test_kernel_calls_reach_the_server_checked_and_its_answer_comes_back(servers):
    _, jupyter, entry = servers
    execute = f"/ferrolab/api/notebooks/{entry['id']}/kernel/execute"
    for bad in (b"", b"not json", b'{"cells": []}', b'{"cells": [1]}', b'{"cells": "all"}', b'{"all": "yes"}'):
        status, body, _ = jupyter.post(execute, bad)
        assert status == 400, (bad, status, body)
        assert "cells" in json.loads(body)["error"]["message"], body
    # The server's own refusal of a cell it does not have, passed back as it is.
    status, body, _ = jupyter.post(execute, json.dumps({"cells": ["no-such-cell"]}).encode())
    assert 400 <= status < 500 and status != 403, (status, body)
    assert "no-such-cell" in body, body
    # Without the Jupyter sign-in, nothing is sent.
    status, _, _ = jupyter.post(execute, json.dumps({"all": True}).encode(), auth=False)
    assert status == 403


def test_a_missing_notebook_gets_the_servers_own_error(servers):
    _, jupyter, _ = servers
    status, body, _ = jupyter.get("/ferrolab/api/notebooks/NoSuchNotebook123/ipynb")
    assert status == 404, body
    assert json.loads(body)["error"]["message"]


def test_a_viewer_token_reads_and_its_role_shows(servers):
    collab, _, entry = servers
    viewer = subprocess.run(
        [str(Path(os.environ["FERROLAB_BIN"])), "collab", "token", "create", "--data", str(collab.data),
         "--name", "vera", "--role", "viewer"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="ferrolab-lab-") as root:
        jupyter = Jupyter(root, collab, token=viewer)
        try:
            status, body, _ = jupyter.get("/ferrolab/api/workspace")
            assert status == 200, body
            user = json.loads(body)["user"]
            assert (user["name"], user["role"]) == ("vera", "viewer")
            status, body, _ = jupyter.get(f"/ferrolab/api/notebooks/{entry['id']}/ipynb")
            assert status == 200, body
            # The collaboration server refuses a viewer's kernel calls; the refusal comes back.
            for action in ("execute", "interrupt", "restart"):
                status, body, _ = jupyter.post(
                    f"/ferrolab/api/notebooks/{entry['id']}/kernel/{action}", json.dumps({"all": True}).encode()
                )
                assert status == 403, (action, status, body)
        finally:
            jupyter.stop()


def test_without_a_collaboration_server_the_answer_says_what_to_set():
    with tempfile.TemporaryDirectory(prefix="ferrolab-lab-") as root:
        jupyter = Jupyter(root)
        try:
            status, body, _ = jupyter.get("/ferrolab/api/notebooks")
            assert status == 503, body
            message = json.loads(body)["error"]["message"]
            assert "FERROLAB_COLLAB_URL" in message and "FERROLAB_TOKEN" in message
        finally:
            jupyter.stop()


def test_a_stopped_collaboration_server_is_named_not_hidden():
    with tempfile.TemporaryDirectory(prefix="ferrolab-lab-") as root:
        collab = Server(Path(root) / "data")
        jupyter = Jupyter(root, collab)
        try:
            collab.stop()
            status, body, _ = jupyter.get("/ferrolab/api/notebooks")
            assert status == 502, body
            message = json.loads(body)["error"]["message"]
            assert f"127.0.0.1:{collab.port}" in message and "ferrolab collab serve" in message
        finally:
            jupyter.stop()
