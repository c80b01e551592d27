"""The proxy to the collaboration server: only the calls the JupyterLab extension
makes, each rebuilt from validated parts (never a path passed through), with the
token added here and the server's own answer (or a clear error) passed back."""

import json
import os

import tornado
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.web import HTTPError
from tornado.websocket import WebSocketClosedError, WebSocketHandler, websocket_connect

# Automerge document ids: base58 text.
NOTEBOOK_ID = r"[A-Za-z0-9]{1,64}"
TIMEOUT_S = 30
# The largest sync message relayed either way (a notebook with images loads in one).
MAX_MESSAGE = 256 << 20


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

    def unreachable(self, url, why):
        self.fail(
            502,
            "UNREACHABLE",
            f"the collaboration server at {url} cannot be reached ({why}); is `ferrolab collab serve` running?",
        )

    @tornado.web.authenticated
    async def get(self, *args):
        await self.relay("GET", args)

    async def relay(self, method, args, body=None):
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
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await client.fetch(
                url + self.upstream_path(*args),
                method=method,
                headers=headers,
                body=body,
                request_timeout=TIMEOUT_S,
                raise_error=False,
            )
        except (OSError, HTTPClientError) as e:
            return self.unreachable(url, e)
        if response.code == 599:
            return self.unreachable(url, response.error)
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


class NotebookKernel(ProxyHandler):
    """Runs cells on, interrupts or restarts a notebook's shared kernel: a POST
    whose JSON body (for `execute`, the cells to run) is checked here and sent on."""

    def upstream_path(self, notebook, action):
        return f"/api/notebooks/{notebook}/kernel/{action}"

    @tornado.web.authenticated
    async def post(self, notebook, action):
        body = None
        if action == "execute":
            try:
                request = json.loads(self.request.body or b"{}")
            except ValueError:
                request = None
            cells = request.get("cells") if isinstance(request, dict) else None
            run_all = isinstance(request, dict) and request.get("all") is True
            if not run_all and not (
                isinstance(cells, list) and cells and all(isinstance(c, str) and len(c) <= 256 for c in cells)
            ):
                return self.fail(
                    400,
                    "BAD_REQUEST",
                    'send {"cells": ["CELL_ID", ...]} (the ids of the cells to run) or {"all": true}',
                )
            body = json.dumps({"all": True} if run_all else {"cells": cells})
        await self.relay("POST", (notebook, action), body if body is not None else "")


class Workspace(ProxyHandler):
    def upstream_path(self):
        return "/api/workspace"


class SyncProxy(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """The collaboration server's sync socket (automerge-repo's protocol), relayed
    both ways for the signed-in Jupyter user, the token added here. The server
    enforces the token's role on every message, as for any client."""

    upstream_socket = None

    @property
    def max_message_size(self):
        return MAX_MESSAGE

    @ws_authenticated
    async def get(self, *args, **kwargs):
        target = upstream()
        if target is None:
            raise HTTPError(503, "no collaboration server is configured (FERROLAB_COLLAB_URL, FERROLAB_TOKEN)")
        url, token = target
        ws_url = "ws" + url[len("http"):] + "/sync" if url.startswith("http") else url + "/sync"
        try:
            self.upstream_socket = await websocket_connect(
                HTTPRequest(ws_url, headers={"Authorization": f"Bearer {token}"}, request_timeout=TIMEOUT_S),
                on_message_callback=self.from_upstream,
                max_message_size=MAX_MESSAGE,
            )
        except Exception as e:  # noqa: BLE001 - any failure to connect is the same answer
            raise HTTPError(502, f"the collaboration server at {url} cannot be reached ({e})") from e
        # Sync messages are small and each one is someone's keystroke: sent at once,
        # not held by Nagle's algorithm until the previous one is acknowledged
        # (measured: 13 ms of a keystroke's 33 ms between two JupyterLab pages).
        self.upstream_socket.protocol.set_nodelay(True)
        return await super().get(*args, **kwargs)

    def open(self, *args, **kwargs):
        self.set_nodelay(True)
        return super().open(*args, **kwargs)

    def from_upstream(self, message):
        if message is None:
            self.close()
            return
        try:
            self.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            pass

    def on_message(self, message):
        if self.upstream_socket is not None:
            self.upstream_socket.write_message(message, binary=isinstance(message, bytes))

    def on_close(self):
        if self.upstream_socket is not None:
            self.upstream_socket.close()
            self.upstream_socket = None


def setup_handlers(web_app):
    base = url_path_join(web_app.settings["base_url"], "ferrolab", "api")
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(web_app.settings["base_url"], "ferrolab", "sync"), SyncProxy),
            (url_path_join(base, "workspace"), Workspace),
            (url_path_join(base, "notebooks"), NotebookList),
            (url_path_join(base, "notebooks", f"({NOTEBOOK_ID})"), NotebookEntry),
            (url_path_join(base, "notebooks", f"({NOTEBOOK_ID})", "ipynb"), NotebookFile),
            (
                url_path_join(base, "notebooks", f"({NOTEBOOK_ID})", "kernel", "(execute|interrupt|restart)"),
                NotebookKernel,
            ),
        ],
    )
