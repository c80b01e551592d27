"""Experiment tracking through MLflow's REST API on the collaboration server, driven
by the real `mlflow` client (mlflow-skinny, pip) with MLFLOW_TRACKING_URI pointing
at `ferrolab collab serve` and MLFLOW_TRACKING_TOKEN holding a collab token."""
import math
import os
import subprocess
import threading
from pathlib import Path

# Offline: the mlflow client reports usage to its authors unless told not to.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import httpx  # noqa: E402
import mlflow  # noqa: E402
import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from conftest import BIN  # noqa: E402
from cluster import Cluster  # noqa: E402
from test_artifacts_s3 import BUCKET, S3  # noqa: E402
from test_collab_ipynb import Server  # noqa: E402


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def server(request, tmp_path_factory):
    """One server on its embedded storage; or three replicas on one PostgreSQL with
    artifacts in S3, each call going to the next replica in turn."""
    if request.param == "embedded":
        s = Server(tmp_path_factory.mktemp("collab"))
    else:
        s3 = S3()
        try:
            s = Cluster(tmp_path_factory.mktemp("cluster"), s3, BUCKET)
        except BaseException:
            s3.stop()
            raise
    os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{s.port}"
    os.environ["MLFLOW_TRACKING_TOKEN"] = s.token
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    yield s
    mlflow.set_tracking_uri(None)
    s.stop()
    if request.param == "postgres":
        s3.stop()
        # Every replica answered part of the suite.
        assert all(n > 10 for n in s.front.served), s.front.served


def test_the_mlflow_fluent_api_logs_a_run(server):
    experiment = mlflow.set_experiment("finetune-smollm2")
    assert experiment.name == "finetune-smollm2" and experiment.experiment_id != "0"
    # set_experiment again finds it by name instead of creating another.
    assert mlflow.set_experiment("finetune-smollm2").experiment_id == experiment.experiment_id
    with mlflow.start_run(run_name="lora-r8") as run:
        mlflow.log_param("lr", 0.002)
        mlflow.log_params({"r": 8, "alpha": 16})
        for step in range(5):
            mlflow.log_metric("loss", 2.0 / (step + 1), step=step)
        mlflow.log_metrics({"eval_loss": 0.9, "tokens_per_s": 1234.5}, step=4)
        mlflow.set_tag("team", "nlp")
        run_id = run.info.run_id
    got = MlflowClient().get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "lora-r8" and got.info.end_time
    assert got.data.params == {"lr": "0.002", "r": "8", "alpha": "16"}
    assert got.data.metrics == {"loss": 0.4, "eval_loss": 0.9, "tokens_per_s": 1234.5}
    assert got.data.tags["team"] == "nlp" and got.data.tags["ferrolab.author"] == "pytest"
    history = MlflowClient().get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, 2.0 / (s + 1)) for s in range(5)]


def test_search_runs_with_filters_and_order(server):
    client = MlflowClient()
    exp = client.create_experiment("sweep")
    for lr, acc, status in [("0.1", 0.5, "FAILED"), ("0.01", 0.9, "FINISHED"), ("0.001", 0.95, "FINISHED")]:
        run = client.create_run(exp, run_name=f"lr-{lr}", tags={"sweep": "yes"})
        client.log_batch(run.info.run_id, metrics=[Metric("acc", acc, 0, 0)], params=[Param("lr", lr)])
        client.set_terminated(run.info.run_id, status=status)
    found = client.search_runs([exp], "metrics.acc > 0.8 and attributes.status = 'FINISHED'", order_by=["metrics.acc DESC"])
    assert [r.data.params["lr"] for r in found] == ["0.001", "0.01"]
    found = client.search_runs([exp], "params.lr IN ('0.1', '0.01')", order_by=["params.lr ASC"])
    assert [r.data.params["lr"] for r in found] == ["0.01", "0.1"]
    frame = mlflow.search_runs([exp], filter_string="tags.sweep = 'yes'")
    assert len(frame) == 3
    with pytest.raises(MlflowException, match="position 13"):
        client.search_runs([exp], "metrics.acc >> 1")


def test_nan_and_infinity_survive(server):
    client = MlflowClient()
    run = client.create_run("0")
    client.log_metric(run.info.run_id, "odd", float("nan"), step=0)
    client.log_metric(run.info.run_id, "odd", float("inf"), step=1)
    values = [m.value for m in client.get_metric_history(run.info.run_id, "odd")]
    assert math.isnan(values[0]) and values[1] == float("inf")


def test_a_runs_latest_metric_is_its_highest_step_then_latest_time(server):
    client = MlflowClient()
    rid = client.create_run("0").info.run_id
    # In one batch, out of order: step 5 logged twice (the later time wins), NaN lowest.
    client.log_batch(rid, metrics=[Metric("x", 1.0, 10, 2), Metric("x", 3.0, 10, 5), Metric("x", 2.0, 20, 5),
                                   Metric("x", 9.0, 30, 1), Metric("y", float("nan"), 5, 0), Metric("y", -1.0, 5, 0)])
    assert client.get_run(rid).data.metrics == {"x": 2.0, "y": -1.0}
    client.log_metric(rid, "x", 7.0, timestamp=40, step=4)  # a lower step does not replace it
    assert client.get_run(rid).data.metrics["x"] == 2.0
    client.log_metric(rid, "x", 8.0, timestamp=1, step=6)
    assert client.get_run(rid).data.metrics["x"] == 8.0
    # A full batch (MLflow's 1,000) keeps every point, in step order.
    client.log_batch(rid, metrics=[Metric("z", float(i), 0, 999 - i) for i in range(1000)])
    history = client.get_metric_history(rid, "z")
    assert [(m.step, m.value) for m in history] == [(s, float(999 - s)) for s in range(1000)]
    assert client.get_run(rid).data.metrics["z"] == 0.0


def test_bad_input_gets_mlflows_errors_and_writes_nothing(server):
    client = MlflowClient()
    with pytest.raises(MlflowException) as missing:
        client.get_run("0" * 32)
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert client.get_experiment_by_name("no such experiment") is None
    with pytest.raises(MlflowException) as dup:
        client.create_experiment("sweep-dup")
        client.create_experiment("sweep-dup")
    assert dup.value.error_code == "RESOURCE_ALREADY_EXISTS"
    run = client.create_run("0")
    rid = run.info.run_id
    client.log_param(rid, "lr", "0.1")
    client.log_param(rid, "lr", "0.1")  # the same value again is fine
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        client.log_param(rid, "lr", "0.2")
    # A batch that breaks a rule stores none of its points.
    with pytest.raises(MlflowException, match="already logged"):
        client.log_batch(rid, metrics=[Metric("m", 1.0, 0, 0)], params=[Param("lr", "0.3")])
    assert client.get_metric_history(rid, "m") == []
    # The client splits big batches itself; a raw request over MLflow's limit is refused whole.
    r = httpx.post(f"http://127.0.0.1:{server.port}/api/2.0/mlflow/runs/log-batch",
                   headers={"Authorization": f"Bearer {server.token}"},
                   json={"run_id": rid, "metrics": [{"key": "m", "value": i, "timestamp": 0, "step": i} for i in range(1001)]})
    assert r.status_code == 400 and "at most 1000 metrics" in r.json()["message"]
    assert client.get_metric_history(rid, "m") == []


def test_tokens_are_required_and_viewers_cannot_write(server):
    base = f"http://127.0.0.1:{server.port}/api/2.0/mlflow"
    r = httpx.post(base + "/experiments/create", json={"name": "x"})
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    viewer = subprocess.run([BIN, "collab", "token", "create", *server.token_store, "--name", "ann", "--role", "viewer"],
                            check=True, capture_output=True, text=True).stdout.strip()
    headers = {"Authorization": f"Bearer {viewer}"}
    r = httpx.post(base + "/experiments/create", json={"name": "x"}, headers=headers)
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"
    r = httpx.get(base + "/experiments/get-by-name", params={"experiment_name": "sweep"}, headers=headers)
    assert r.status_code == 200 and r.json()["experiment"]["name"] == "sweep"
    r = httpx.post(base + "/runs/nonsense", json={}, headers=headers)
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_two_clients_logging_to_one_run_lose_no_point(server):
    client = MlflowClient()
    run = client.create_run("0")
    rid = run.info.run_id

    def log(worker):
        c = MlflowClient()
        for i in range(100):
            c.log_metric(rid, "shared", float(i), step=worker * 1000 + i)

    threads = [threading.Thread(target=log, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = client.get_metric_history(rid, "shared")
    assert sorted(m.step for m in history) == sorted([w * 1000 + i for w in range(2) for i in range(100)])


def tracked_env(server, **extra):
    return dict(os.environ, FERROLAB_TRACKING_URI=f"http://127.0.0.1:{server.port}",
                FERROLAB_TRACKING_TOKEN=server.token, **extra)


def test_prompt_test_and_finetune_runs_reach_the_server(server, tmp_path):
    import json

    suite = tmp_path / "suite.yaml"
    suite.write_text("prompts: ['Say {{w}}']\nproviders: [echo]\ntests:\n"
                     "  - vars: {w: hi}\n    assert: [{type: contains, value: hi}]\n"
                     "  - vars: {w: yo}\n    assert: [{type: contains, value: hi}]\n")
    proc = subprocess.run([BIN, "prompt-test", str(suite), "--name", "tracked"], cwd=tmp_path, env=tracked_env(server),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 100 and "warning" not in proc.stderr, proc.stderr
    client = MlflowClient()
    exp = client.get_experiment_by_name("prompt-tests")
    [run] = client.search_runs([exp.experiment_id], "attributes.run_name = 'tracked'")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["pass_rate"] == 0.5 and run.data.metrics["failed"] == 1
    assert run.data.params["kind"] == "prompt-test" and run.data.params["tests"] == "2"
    assert run.data.tags["ferrolab.artifact.results.json"].endswith("runs/prompt-tests/tracked/results.json")

    model = tmp_path / "tiny"
    subprocess.run([BIN, "model", "tiny", str(model), "--seed", "3"], check=True, capture_output=True)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Q: {i}?\nA:", "completion": f" {i}"}) for i in range(8)) + "\n")
    config = tmp_path / "run.toml"
    config.write_text(f'model = "{model}"\ndata = "{data}"\nsteps = 3\nbatch_size = 2\nmax_length = 16\n'
                      f'eval_fraction = 0.0\ndevice = "cpu"\noutput = "{tmp_path / "ft"}"\n')
    subprocess.run([BIN, "finetune", str(config)], check=True, capture_output=True, env=tracked_env(server), timeout=600)
    exp = client.get_experiment_by_name("finetune")
    [run] = client.search_runs([exp.experiment_id], "attributes.run_name = 'ft'")
    assert run.info.status == "FINISHED" and run.data.params["steps"] == "3"
    losses = client.get_metric_history(run.info.run_id, "loss")
    local = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [(m.step, m.value) for m in losses] == [(m["step"], pytest.approx(m["loss"])) for m in local]
    # The adapter is copied to the server as the run's artifact, byte for byte.
    assert [(f.path, f.is_dir) for f in client.list_artifacts(run.info.run_id)] == [("adapter", True)]
    names = sorted(f.path for f in client.list_artifacts(run.info.run_id, "adapter"))
    assert names == ["adapter/adapter_config.json", "adapter/adapter_model.safetensors"]
    fetched = client.download_artifacts(run.info.run_id, "adapter", str(tmp_path / "fetched"))
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (Path(fetched) / name).read_bytes() == (tmp_path / "ft" / "adapter" / name).read_bytes()


def test_artifacts_through_the_mlflow_client_are_stored_by_content(server, tmp_path):
    client = MlflowClient()
    report = tmp_path / "report.txt"
    report.write_text("accuracy 0.91\n")
    before = server.blobs()
    runs = []
    for _ in range(2):
        run = client.create_run("0")
        client.log_artifact(run.info.run_id, str(report))
        client.log_text(run.info.run_id, "same bytes", "notes/summary.txt")
        runs.append(run.info.run_id)
    listed = sorted((f.path, f.is_dir, f.file_size) for f in client.list_artifacts(runs[0]))
    assert listed == [("notes", True, None), ("report.txt", False, 14)]
    back = client.download_artifacts(runs[1], "notes/summary.txt", str(tmp_path / "back"))
    assert Path(back).read_text() == "same bytes"
    added = server.blobs() - before
    assert len(added) == 2, added  # two contents, each stored once for both runs
    base = f"http://127.0.0.1:{server.port}/api/2.0/mlflow-artifacts/artifacts"
    headers = {"Authorization": f"Bearer {server.token}"}
    r = httpx.put(f"{base}/0/{runs[0]}/artifacts/../../../escape.txt", content=b"x", headers=headers)
    assert r.status_code in (400, 404)
    assert not list(server.data.rglob("escape.txt"))
    r = httpx.put(f"{base}/0/{'0' * 32}/artifacts/x.txt", content=b"x", headers=headers)
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    r = httpx.get(f"{base}/0/{runs[0]}/artifacts/missing.txt", headers=headers)
    assert r.status_code == 404
    r = httpx.get(f"{base}/0/{runs[0]}/artifacts/report.txt")
    assert r.status_code == 401


def test_an_unreachable_tracking_server_loses_no_result(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("prompts: ['Say {{w}}']\nproviders: [echo]\ntests: [{vars: {w: hi}}]\n")
    env = dict(os.environ, FERROLAB_TRACKING_URI="http://127.0.0.1:9", FERROLAB_TRACKING_TOKEN="x")
    proc = subprocess.run([BIN, "prompt-test", str(suite), "--name", "offline"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning: the run was not reported to the tracking server" in proc.stderr
    assert (tmp_path / "runs/prompt-tests/offline/results.json").exists()


def test_search_experiments_with_a_filter(server):
    client = MlflowClient()
    client.create_experiment("filter-a", tags={"team": "nlp"})
    client.create_experiment("filter-b", tags={"team": "vision"})
    names = {e.name for e in client.search_experiments(filter_string="name LIKE 'filter-%'")}
    assert names == {"filter-a", "filter-b"}
    [nlp] = client.search_experiments(filter_string="name LIKE 'filter-%' AND tags.team = 'nlp'")
    assert nlp.name == "filter-a"
    assert client.search_experiments(filter_string="name = 'nothing'") == []
    with pytest.raises(MlflowException, match="cannot be searched"):
        client.search_experiments(filter_string="attributes.owner = 'x'")
