"""Evaluation evidence the server recorded itself (docs/security.md, governance).

The promotion policy needs a passing prompt-test evaluation of the version being
promoted. A run a client logged says whatever the client wrote, so the attack is to
log `pass_rate = 1` on any run and link it; the policy must refuse it. The evidence
that counts is an evaluation the server ran (`ferrolab/model-versions/evaluate`) on
exactly the registered adapter: the adapter the training run uploaded, whose content
hash must be the version's `adapter_digest`.

A real run: a tiny random model is fine-tuned for two steps by `ferrolab finetune`
reporting to the server (which uploads the adapter), registered with its content
hash computed here (BLAKE3, independently of ferrolab), and evaluated by the server
in its sandbox."""
import json
import os
import subprocess
import threading
from pathlib import Path

import blake3
import httpx
import pytest

from conftest import BIN
from test_collab_ipynb import Server

ASSERT_NEVER = "ZQXJ-never-generated"
PASSING = f"""
prompts: ["Say something: {{{{topic}}}}"]
providers:
  - label: candidate
    config: {{temperature: 0, max_tokens: 4}}
tests:
  - vars: {{topic: weather}}
  - vars: {{topic: tea}}
defaultTest:
  assert:
    - type: not-contains
      value: {ASSERT_NEVER}
"""
FAILING = PASSING.replace("not-contains", "contains")


def content_hash(folder: Path) -> str:
    """The tracking store's rule, written again: BLAKE3 over each file's relative
    path and BLAKE3, sorted."""
    files = sorted(
        (p.relative_to(folder).as_posix(), "blake3:" + blake3.blake3(p.read_bytes()).hexdigest())
        for p in folder.rglob("*") if p.is_file())
    h = blake3.blake3()
    for rel, digest in files:
        h.update(rel.encode() + b"\0" + digest.encode() + b"\n")
    return "blake3:" + h.hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("evaluation"))
    s.users = {"owner": s.token}
    for name in ("alice", "bob"):
        s.users[name] = subprocess.run(
            [BIN, "collab", "token", "create", "--data", str(s.data), "--name", name, "--role", "editor"],
            check=True, capture_output=True, text=True).stdout.strip()
    yield s
    s.stop()


def call(server, user, endpoint, **body):
    prefix = "ferrolab" if endpoint.startswith(("reviews/", "model-versions/", "policy/", "audit/")) else "mlflow"
    r = httpx.post(f"http://127.0.0.1:{server.port}/api/2.0/{prefix}/{endpoint}",
                   headers={"Authorization": f"Bearer {server.users[user]}"}, json=body, timeout=600)
    return r.status_code, r.json()


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    """A fine-tuning run reported to the server: (run id, local adapter folder).
    The base model lives in FERROLAB_HOME, as models do: the sandbox replaces /tmp
    (where the tests' folders, and perhaps this checkout, are) but shows that."""
    work = tmp_path_factory.mktemp("train")
    model = Path(os.environ["FERROLAB_HOME"]) / "evaluation-tiny-model"
    subprocess.run([BIN, "model", "tiny", str(model), "--seed", "7"], check=True, capture_output=True)
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q: {i}?\nA:", "completion": f" {i}"}) + "\n"
                            for i in range(8)))
    config = work / "run.toml"
    config.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in {
        "model": str(model), "data": str(data), "output": str(work / "run"), "steps": 2,
        "batch_size": 2, "lr": 1e-3, "r": 2, "targets": ["q", "v"], "eval_fraction": 0.0,
        "seed": 3, "device": "cpu"}.items()) + "\n")
    env = dict(os.environ, FERROLAB_TRACKING_URI=f"http://127.0.0.1:{server.port}",
               FERROLAB_TRACKING_TOKEN=server.users["alice"])
    subprocess.run([BIN, "finetune", str(config)], check=True, capture_output=True, timeout=600, env=env,
                   cwd=work)
    status, experiments = call(server, "alice", "experiments/search", max_results=100)
    ids = [e["experiment_id"] for e in experiments["experiments"]]
    status, found = call(server, "alice", "runs/search", experiment_ids=ids, max_results=10)
    [run] = [r for r in found["runs"] if r["info"]["status"] == "FINISHED"]
    return run["info"]["run_id"], work / "run" / "adapter"


def register(server, name, run_id, adapter_hash):
    call(server, "alice", "registered-models/create", name=name)
    status, body = call(server, "alice", "model-versions/create", name=name, source="file:///adapter",
                        run_id=run_id, lineage={"adapter": {"hash": adapter_hash}})
    assert status == 200, body
    return body["model_version"]["version"]


def test_a_pass_rate_a_client_logged_does_not_count(server):
    """The attack: any run with pass_rate = 1, linked as the evaluation."""
    call(server, "alice", "registered-models/create", name="claimed")
    status, body = call(server, "alice", "model-versions/create", name="claimed", source="file:///x")
    assert status == 200, body
    status, exp = call(server, "alice", "experiments/create", name="hand-made")
    status, run = call(server, "alice", "runs/create", experiment_id=exp["experiment_id"])
    run_id = run["run"]["info"]["run_id"]
    call(server, "alice", "runs/log-metric", run_id=run_id, key="pass_rate", value=1.0, timestamp=0, step=0)
    status, _ = call(server, "alice", "model-versions/link-evaluation", name="claimed", version="1", run_id=run_id)
    assert status == 200
    status, _ = call(server, "bob", "reviews/create", name="claimed", version="1", decision="approve", comment="ok")
    assert status == 200
    status, body = call(server, "alice", "registered-models/alias", name="claimed", alias="production", version="1")
    assert status == 403, body
    assert "the server has not evaluated version 1" in body["message"], body
    # A version without a training run cannot be evaluated: nothing the server holds is it.
    status, body = call(server, "alice", "model-versions/evaluate", name="claimed", version="1", suite=PASSING)
    assert status == 400 and "names no training run" in body["message"], body


def test_the_server_evaluates_only_the_registered_adapter(server, trained):
    run_id, adapter = trained
    assert (adapter / "adapter_config.json").is_file()
    # Registered with another adapter's digest: the uploaded adapter is not this version.
    version = register(server, "swapped", run_id, "blake3:" + "0" * 64)
    status, body = call(server, "alice", "model-versions/evaluate", name="swapped", version=version, suite=PASSING)
    assert status == 403 and "is not the one version" in body["message"], body
    # Viewers evaluate nothing; a bad suite is named, not a 500.
    viewer = subprocess.run([BIN, "collab", "token", "create", "--data", str(server.data), "--name", "vic",
                             "--role", "viewer"], check=True, capture_output=True, text=True).stdout.strip()
    server.users["vic"] = viewer
    good = register(server, "checked", run_id, content_hash(adapter))
    status, body = call(server, "vic", "model-versions/evaluate", name="checked", version=good, suite=PASSING)
    assert status == 403, body
    status, body = call(server, "alice", "model-versions/evaluate", name="checked", version=good,
                        suite="prompts: [unclosed")
    assert status == 400 and "the suite did not run" in body["message"], body
    status, body = call(server, "alice", "model-versions/evaluate", name="checked", version=good,
                        suite=PASSING.replace("  - label: candidate", "  - id: echo\n  - label: candidate"))
    assert status == 400 and "keep one provider" in body["message"], body


def test_only_a_passing_evaluation_by_the_server_promotes_exactly_that_version(server, trained):
    run_id, adapter = trained
    version = register(server, "shipped", run_id, content_hash(adapter))
    status, _ = call(server, "bob", "reviews/create", name="shipped", version=version, decision="approve",
                     comment="reviewed")
    assert status == 200
    status, failing = call(server, "alice", "model-versions/evaluate", name="shipped", version=version, suite=FAILING)
    assert status == 200, failing
    assert failing["pass_rate"] == 0.0 and failing["tests"] == 2 and failing["failed"] == 2, failing
    status, body = call(server, "alice", "registered-models/alias", name="shipped", alias="production",
                        version=version)
    assert status == 403 and "passed 0.0%, under the 90.0%" in body["message"], body
    # Changing the server's run afterwards changes no evidence.
    call(server, "alice", "runs/log-metric", run_id=failing["run_id"], key="pass_rate", value=1.0,
         timestamp=0, step=1)
    status, body = call(server, "alice", "registered-models/alias", name="shipped", alias="production",
                        version=version)
    assert status == 403, body
    status, passing = call(server, "alice", "model-versions/evaluate", name="shipped", version=version, suite=PASSING)
    assert status == 200 and passing["pass_rate"] == 1.0, passing
    status, body = call(server, "alice", "registered-models/alias", name="shipped", alias="production",
                        version=version)
    assert status == 200, body
    # The evaluation is a run the server recorded, with the suite and results kept.
    status, run = call(server, "bob", "runs/get", run_id=passing["run_id"])
    tags = {t["key"]: t["value"] for t in run["run"]["data"]["tags"]}
    assert tags["ferrolab.recorded_by"] == "server"
    assert tags["ferrolab.evaluation.adapter_digest"] == content_hash(adapter)
    assert run["run"]["info"]["status"] == "FINISHED"
    status, details = call(server, "bob", "model-versions/details", name="shipped", version=version)
    assert [e["pass_rate"] for e in details["model_version"]["server_evaluations"]] == [0.0, 1.0]
    status, audit = call(server, "bob", "audit/get", name="shipped")
    assert audit["chain_verified"] is True
    assert [e["action"] for e in audit["entries"]].count("model_version.evaluate") == 2
    # A later version of the same adapter starts with no evidence of its own.
    again = register(server, "shipped", run_id, content_hash(adapter))
    status, body = call(server, "alice", "registered-models/alias", name="shipped", alias="production",
                        version=again)
    assert status == 403 and f"the server has not evaluated version {again}" in body["message"], body


def test_one_evaluation_runs_at_a_time(server, trained):
    """A second evaluation while one runs is refused with 429, not queued without
    bound. The first is known to be running when its `prompt-test` process exists."""
    run_id, adapter = trained
    version = register(server, "busy", run_id, content_hash(adapter))
    slow = PASSING.replace("tests:\n", "tests:\n" + "  - vars: {topic: more}\n" * 40)
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", call(
        server, "alice", "model-versions/evaluate", name="busy", version=version, suite=slow)))
    first.start()
    while "first" not in results and not prompt_test_running():
        pass
    assert "first" not in results, "the first evaluation ended before its process was seen"
    status, body = call(server, "bob", "model-versions/evaluate", name="busy", version=version, suite=PASSING)
    assert status == 429 and body["error_code"] == "RESOURCE_EXHAUSTED", body
    first.join()
    assert results["first"][0] == 200, results["first"]


def prompt_test_running():
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = path.read_bytes()
        except OSError:
            continue
        if b"prompt-test\0" in line and b"--provider" in line:
            return True
    return False
