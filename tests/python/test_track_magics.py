"""The tracking magics through the real kernel: with no server named, runs go to a
local store (the same store and API handling as the server's, in the kernel); the
same magics then talk to a collaboration server after %track connect. Bad input gets
a clear error. The full story (fine-tuning runs, registry, review, promotion, audit)
is notebook 06, run by test_notebooks.py."""
import json
import os
import sqlite3
import subprocess

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import BIN
from kernel_client import of_type, run
from test_collab_ipynb import Server


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("track")
    server = Server(folder / "collab")
    token = subprocess.run([BIN, "collab", "token", "create", "--data", str(server.data), "--name", "carol",
                            "--role", "editor"], check=True, capture_output=True, text=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERROLAB_TRACKING", "MLFLOW_TRACKING"))}
    env.update(FERROLAB_TRACKING_DIR=str(folder / "local"), USER="dana", CAROL_TOKEN=token,
               JPY_SESSION_NAME="track-test.ipynb")
    km, kc = start_new_kernel(kernel_name="ferrolab", startup_timeout=60, env=env, cwd=str(folder))
    try:
        yield kc, folder, server
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        server.proc.terminate()
        server.proc.wait(timeout=30)


def shown(messages):
    """The plain text of a cell's results and displays, and its error if any."""
    parts = []
    for m in messages:
        if m["msg_type"] in ("execute_result", "display_data"):
            parts.append(m["content"]["data"].get("text/plain", ""))
        elif m["msg_type"] == "error":
            parts.append(m["content"]["ename"] + ": " + m["content"]["evalue"])
    return "\n".join(parts)


def cell(kc, code):
    content, messages = run(kc, code, timeout=300)
    return content["status"], shown(messages), messages


def test_without_a_server_runs_go_to_the_local_store(setup):
    kc, folder, _ = setup
    status, text, _ = cell(kc, "%track status")
    assert status == "ok" and "the local store" in text and "as dana (owner)" in text, text
    for name, lr, loss in [("sweep-a", "0.1", "0.9"), ("sweep-b", "0.01", "0.4")]:
        assert cell(kc, f"%track start {name} --experiment sweeps --tag team=nlp")[0] == "ok"
        status, text, _ = cell(kc, f"%track log optimizer=adamw loss={loss} --step 3")
        assert status == "ok" and "logged 1 metric(s) and 1 param(s)" in text, text
        assert cell(kc, f"%track params lr={lr}")[0] == "ok"
        assert cell(kc, "%track end")[0] == "ok"
    status, text, messages = cell(kc, "%runs sweeps --order-by 'metrics.loss ASC'")
    assert status == "ok", text
    lines = text.splitlines()
    assert "2 run(s) at the local store" in lines[0] and "1 param(s) equal in every run not shown" in lines[0]
    assert "params.lr" in lines[1] and "params.optimizer" not in lines[1]
    assert lines[2].split()[0] == "sweep-b" and lines[3].split()[0] == "sweep-a"
    html = of_type(messages, "execute_result")[0]["content"]["data"]["text/html"]
    assert "<table" in html and "sweep-b" in html
    status, text, _ = cell(kc, "%runs sweeps --filter \"metrics.loss < 0.5\"")
    assert "1 run(s)" in text and "sweep-b" in text and "sweep-a" not in text
    status, text, messages = cell(kc, "%compare sweep-a sweep-b")
    assert status == "ok" and "1 param(s) differ" in text, text
    assert "* lr" in text and "  optimizer" in text
    html = of_type(messages, "execute_result")[0]["content"]["data"]["text/html"]
    assert html.count("<svg") == 1  # the loss, one line per run
    # The local store is the server's SQLite store, with the run's source recorded.
    db = sqlite3.connect(folder / "local" / "tracking.sqlite")
    tags = dict(db.execute("SELECT key, value FROM tags WHERE run_id = (SELECT run_id FROM runs WHERE name = 'sweep-a')"))
    db.close()
    assert tags["mlflow.source.name"] == "track-test.ipynb" and tags["ferrolab.source.cell"].startswith("In [")
    assert tags["ferrolab.author"] == "dana" and tags["team"] == "nlp"


def test_connect_reports_to_the_server_as_the_tokens_owner(setup):
    kc, _, server = setup
    url = f"http://127.0.0.1:{server.port}"
    status, text, _ = cell(kc, f"%track connect {url} --token-env CAROL_TOKEN")
    assert status == "ok" and f"tracking to {url} as carol (editor)" in text, text
    assert cell(kc, "%track start remote-1")[0] == "ok"
    assert cell(kc, "%track log acc=0.75 --step 1")[0] == "ok"
    assert cell(kc, "%track end --status FAILED")[0] == "ok"
    code, body, _ = server.request("POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": ["0"]})
    assert code == 200, body
    runs = json.loads(body)["runs"]
    [remote] = [x for x in runs if x["info"]["run_name"] == "remote-1"]
    assert remote["info"]["status"] == "FAILED" and remote["data"]["metrics"][0]["value"] == 0.75
    status, text, _ = cell(kc, "%runs")
    assert "remote-1" in text and "sweep-a" not in text, text
    status, text, _ = cell(kc, "%track disconnect")
    assert "the local store" in text
    status, text, _ = cell(kc, "%runs")
    assert "sweep-a" in text and "remote-1" not in text


def test_bad_input_gets_clear_errors(setup):
    kc, folder, server = setup
    cases = [
        ("%track log loss=1", "no run is active"),
        ("%track end", "no run is active"),
        ("%track start a\n", None),
        ("%track start b", "run 'a'"),
        ("%track log loss", "'loss' is not KEY=VALUE"),
        ("%track params lr=0.1", None),
        ("%track params lr=0.2", "Changing param values is not allowed"),
        ("%track end --status DONE", "FINISHED, FAILED or KILLED"),
        ("%track end", None),
        ("%track connect not-a-url", "is not a URL"),
        ("%track connect http://127.0.0.1:9 --token-env CAROL_TOKEN", "cannot reach the tracking server"),
        ("%track connect http://127.0.0.1:1 --token-env NOPE_TOKEN", "NOPE_TOKEN: the variable is not set"),
        ("%runs no-such-experiment", "no experiment named 'no-such-experiment'"),
        ("%runs --filter \"metrics.loss >> 1\"", "position"),
        ("%compare sweep-a", "required"),
        ("%compare sweep-a nothing-like-this", "no run with the id or name 'nothing-like-this'"),
        ("%register m --adapter /nonexistent", "adapter_config.json"),
        ("%review m 1 --approve", "required"),
        ("%review m 1 looks fine", "say --approve or --reject"),
        ("%promote m 1 --alias production", "Registered Model with name=m not found"),
        ("%audit m", "Registered Model with name=m not found"),
        ("%link_eval m latest sweep-a", "Registered Model with name=m not found"),
    ]
    for code, expected in cases:
        status, text, _ = cell(kc, code)
        if expected is None:
            assert status == "ok", (code, text)
        else:
            assert status == "error" and expected in text, (code, text)
    # A failed connect keeps the previous backend.
    assert "the local store" in cell(kc, "%track status")[1]


def test_registry_magics_on_the_local_store(setup):
    kc, folder, _ = setup
    adapter = folder / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "base_model_name_or_path": "tiny"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    status, text, messages = cell(kc, f"%register local-bot --adapter {adapter} --eval sweep-b")
    assert status == "ok" and "registered 'local-bot' version 1 (author dana)" in text, text
    assert "no training run found" in text and "LoRA r = 4" in text
    card = of_type(messages, "execute_result")[0]["content"]["data"]["text/markdown"]
    assert "## Evaluation" in card and "`sweep-b`" in card and "no pass_rate" in card
    # Alone with the local store, nobody else can approve: production stays out of reach.
    status, text, _ = cell(kc, "%review local-bot latest --approve mine")
    assert status == "error" and "self-approval refused" in text
    status, text, _ = cell(kc, "%promote local-bot latest --alias production")
    assert status == "error" and "PolicyError" in text and "the server has not evaluated version 1" in text
    # The local store has no server to run an evaluation: %%evaluate says so.
    status, text, _ = cell(kc, "%%evaluate local-bot latest\nprompts: [hi]\n")
    assert status == "error" and "%%evaluate needs a tracking server" in text, text
    assert cell(kc, "%promote local-bot latest --alias staging")[0] == "ok"
    status, text, _ = cell(kc, "%audit local-bot")
    assert "alias.set" in text and "staging → version 1" in text and "hash chain verified" in text


def test_a_served_model_is_tracked_as_a_deployment(setup):
    import socket
    import httpx

    kc, folder, _ = setup
    model = folder / "tiny"
    subprocess.run([BIN, "model", "tiny", str(model), "--seed", "3"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, text, _ = cell(kc, f"%serve {model} --bind 127.0.0.1:{port} --name dep --log {folder / 'dep.sqlite'}")
    assert status == "ok" and "tracked as run" in text and "experiment 'deployments'" in text, text
    for prompt in ("a", "b", "c"):
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 2},
                       timeout=60)
        assert r.status_code == 200, r.text
    status, text, _ = cell(kc, "%serve stop dep")
    assert status == "ok", text
    db = sqlite3.connect(folder / "local" / "tracking.sqlite")
    [(run_id, state)] = db.execute(
        "SELECT r.run_id, r.status FROM runs r JOIN experiments e ON e.id = r.experiment_id "
        "WHERE e.name = 'deployments' AND r.name = 'dep'").fetchall()
    requests = sum(v for (v,) in db.execute("SELECT value FROM metrics WHERE run_id = ? AND key = 'requests'", (run_id,)))
    params = dict(db.execute("SELECT key, value FROM params WHERE run_id = ?", (run_id,)))
    db.close()
    assert state == "FINISHED" and requests == 3
    assert params["model"] == str(model) and params["bind"] == f"127.0.0.1:{port}"


def test_the_policy_magic_shows_and_owners_change_it(setup):
    kc, _, server = setup
    status, text, _ = cell(kc, "%policy")
    assert status == "ok" and "protected aliases: production" in text and "at least 90.0%" in text, text
    # The local store's user is its owner.
    status, text, _ = cell(kc, "%policy set --protect production --protect canary --min-approvals 2 --min-pass-rate 0.8")
    assert status == "ok" and "production, canary" in text and "approvals needed (from people other than the author): 2" in text
    status, text, _ = cell(kc, "%policy set --min-pass-rate 1.5")
    assert status == "error" and "between 0 and 1" in text
    # On the server, an editor may read the policy but not change it.
    url = f"http://127.0.0.1:{server.port}"
    assert cell(kc, f"%track connect {url} --token-env CAROL_TOKEN")[0] == "ok"
    status, text, _ = cell(kc, "%policy set --min-approvals 0")
    assert status == "error" and "only an owner changes the governance policy" in text
    assert cell(kc, "%track disconnect")[0] == "ok"
