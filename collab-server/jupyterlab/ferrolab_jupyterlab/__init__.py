"""ferrolab in JupyterLab.

The server half of the extension: a proxy from this Jupyter server to the ferrolab
collaboration server (``/ferrolab/api/...``). It adds the person's token to each
call, so the browser never holds it and it never appears in a URL. The server and
the token come from the environment: ``FERROLAB_COLLAB_URL`` (e.g.
``http://127.0.0.1:7878``) and ``FERROLAB_TOKEN``, which ``make up`` sets.
"""

from .handlers import setup_handlers

__all__ = ["setup_handlers"]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "@ferrolab/jupyterlab"}]


def _jupyter_server_extension_points():
    return [{"module": "ferrolab_jupyterlab"}]


def _load_jupyter_server_extension(server_app):
    setup_handlers(server_app.web_app)
    server_app.log.info("ferrolab: the collaboration server's notebooks are at /ferrolab/api/notebooks")
