"""Shared setup for the real-client suites.

The kernelspec is installed into a temporary prefix (put first on JUPYTER_PATH),
FERROLAB_HOME and the local tracking store (FERROLAB_TRACKING_DIR) point at
temporary folders, and no tracking server is inherited, so the tests never touch
the user's Jupyter setup, history or runs, nor write into the source tree.
"""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("FERROLAB_BIN")
if not BIN or not Path(BIN).exists():
    raise RuntimeError("set FERROLAB_BIN to the built ferrolab binary (make test does this)")

_PREFIX = Path(tempfile.mkdtemp(prefix="ferrolab-tests-"))
subprocess.run([BIN, "kernel", "install", "--prefix", str(_PREFIX)], check=True, capture_output=True)
os.environ["JUPYTER_PATH"] = str(_PREFIX / "share" / "jupyter")
# Models are large and read-only: the temporary home shares the real models folder.
_REAL_HOME = Path(os.environ.get("FERROLAB_HOME") or Path.home() / ".cache" / "ferrolab")
(_PREFIX / "home").mkdir(parents=True, exist_ok=True)
(_PREFIX / "home" / "models").symlink_to(_REAL_HOME / "models", target_is_directory=True)
# So are the crates Rust cells use, built once per machine (`ferrolab kernel prepare`).
(_REAL_HOME / "cells").mkdir(parents=True, exist_ok=True)
(_PREFIX / "home" / "cells").symlink_to(_REAL_HOME / "cells", target_is_directory=True)
os.environ["FERROLAB_HOME"] = str(_PREFIX / "home")
# Kernels report runs to a local store in their working directory unless told
# otherwise; tests that need a tracking server start one and say so themselves.
os.environ["FERROLAB_TRACKING_DIR"] = str(_PREFIX / "tracking")
for _name in ("FERROLAB_TRACKING_URI", "FERROLAB_TRACKING_TOKEN", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"):
    os.environ.pop(_name, None)
MODELS = _REAL_HOME / "models"
SMOLLM2 = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
# The venv with torch, transformers and PEFT (make reference-venv).
REFERENCE_PYTHON = os.environ.get("FERROLAB_REFERENCE_PYTHON")
# A kernel that errors should show why in the test log.
os.environ.setdefault("FERROLAB_LOG", "warn")

# The first Rust cell of a kernel waits for evcxr to warm up (and, on a machine
# where the crates for cells were never built, for that build); later cells are fast.
WARM_UP_TIMEOUT = 600


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_PREFIX, ignore_errors=True)


@pytest.fixture
def kernel():
    """A started ferrolab kernel with a blocking client, warmed up."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="ferrolab", startup_timeout=60)
    try:
        reply = kc.execute_interactive("0", timeout=WARM_UP_TIMEOUT)
        assert reply["content"]["status"] == "ok", reply["content"]
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
