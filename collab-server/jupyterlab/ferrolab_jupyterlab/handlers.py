"""The proxy to the collaboration server: only the calls the JupyterLab extension
makes, each rebuilt from validated parts (never a path passed through), with the
token added here and the server's own answer (or a clear error) passed back."""

import json
import os

import tornado
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

# Automerge document ids: base58 text.
NOTEBOOK_ID = r"[A-Za-z0-9]{1,64}"
TIMEOUT_S = 30


def upstream():
    """The collaboration server's URL and the token, or None when not set."""
    url = os.environ.get("FERROLAB_COLLAB_URL", "").strip().rstrip("/")
    token = os.environ.get("FERROLAB_TOKEN", "").strip()
    if not url or not token:
        return None
    return url, token


class ProxyHandler(APIHandler):
    """GETs one call of the collaboration server's REST API for the signed-in
    Jupyter user."""

    def upstream_path(self, *args):
        raise NotImplementedError

    def fail(self, status, code, message):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": {"code": code, "message": message}}))

    @tornado.web.authenticated
    async def get(self, *args):
        target = upstream()
        if target is None:
            return self.fail(
                503,
                "NOT_CONFIGURED",
                "this Jupyter server does not know a ferrolab collaboration server: start it "
                "with FERROLAB_COLLAB_URL (e.g. http://127.0.0.1:7878) and FERROLAB_TOKEN "
                "(a token from `ferrolab collab token create`) set; `make up` does this",
            )
        url, token = target
        client = AsyncHTTPClient()
        try:
            response = await client.fetch(
                url + self.upstream_path(*args),
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                request_timeout=TIMEOUT_S,
                raise_error=False,
            )
        except (OSError, HTTPClientError) as e:
            return self.fail(
                502,
                "UNREACHABLE",
                f"the collaboration server at {url} cannot be reached ({e}); is `ferrolab collab serve` running?",
            )
        if response.code == 599:
            return self.fail(
                502,
                "UNREACHABLE",
                f"the collaboration server at {url} cannot be reached ({response.error}); is `ferrolab collab serve` running?",
            )
        self.set_status(response.code)
        self.set_header("Content-Type", response.headers.get("Content-Type", "application/json"))
        self.finish(response.body or b"")


class NotebookList(ProxyHandler):
    def upstream_path(self):
        return "/api/notebooks"


class NotebookEntry(ProxyHandler):
    def upstream_path(self, notebook):
        return f"/api/notebooks/{notebook}"


class NotebookFile(ProxyHandler):
    def upstream_path(self, notebook):
        return f"/api/notebooks/{notebook}/ipynb"


class Workspace(ProxyHandler):
    def upstream_path(self):
        return "/api/workspace"


def setup_handlers(web_app):
    base = url_path_join(web_app.settings["base_url"], "ferrolab", "api")
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "workspace"), Workspace),
            (url_path_join(base, "notebooks"), NotebookList),
            (url_path_join(base, "notebooks", f"({NOTEBOOK_ID})"), NotebookEntry),
            (url_path_join(base, "notebooks", f"({NOTEBOOK_ID})", "ipynb"), NotebookFile),
        ],
    )
