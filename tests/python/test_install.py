"""`ferrolab kernel install` as Jupyter sees it: `jupyter kernelspec list`."""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import BIN


def kernelspecs(env):
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_client.kernelspecapp", "list", "--json"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out)["kernelspecs"]


def test_install_list_uninstall_with_prefix(tmp_path):
    env = dict(os.environ, JUPYTER_PATH=str(tmp_path / "share" / "jupyter"))
    subprocess.run([BIN, "kernel", "install", "--prefix", str(tmp_path)], check=True, env=env)
    specs = kernelspecs(env)
    assert "ferrolab" in specs
    spec = specs["ferrolab"]["spec"]
    assert spec["display_name"] == "Rust (ferrolab)"
    assert spec["language"] == "rust"
    assert spec["interrupt_mode"] == "message"
    assert spec["argv"][1:] == ["kernel", "run", "--connection-file", "{connection_file}"]
    assert Path(spec["argv"][0]).resolve() == Path(BIN).resolve()
    resources = Path(specs["ferrolab"]["resource_dir"])
    assert (resources / "logo-64x64.png").read_bytes().startswith(b"\x89PNG")
    subprocess.run([BIN, "kernel", "uninstall", "--prefix", str(tmp_path)], check=True, env=env)
    assert "ferrolab" not in kernelspecs(env) or Path(kernelspecs(env)["ferrolab"]["resource_dir"]) != resources


def test_sys_prefix_follows_the_virtual_environment(tmp_path):
    env = dict(os.environ, VIRTUAL_ENV=str(tmp_path))
    out = subprocess.run([BIN, "kernel", "install", "--sys-prefix"], check=True, env=env,
                         capture_output=True, text=True).stdout
    assert str(tmp_path / "share" / "jupyter" / "kernels" / "ferrolab") in out
    assert (tmp_path / "share" / "jupyter" / "kernels" / "ferrolab" / "kernel.json").exists()


def test_bad_connection_file_is_a_clear_error(tmp_path):
    missing = subprocess.run([BIN, "kernel", "run", "--connection-file", str(tmp_path / "nope.json")],
                             capture_output=True, text=True)
    assert missing.returncode != 0
    assert "cannot read the connection file" in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = subprocess.run([BIN, "kernel", "run", "--connection-file", str(broken)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "is not a Jupyter connection file" in result.stderr
