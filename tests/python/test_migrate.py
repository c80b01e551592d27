"""`ferrolab collab migrate`: a team that outgrows one embedded server moves its
data folder into a cluster's PostgreSQL (artifacts into moto's S3) and carries on
with the same clients and tokens: notebooks, runs, metrics, artifacts, the
registry and the audit log arrive whole, through replicas whose own data folders
are empty; and a move that cannot be made says why and stores nothing."""
import hashlib
import json
import os
import subprocess
from types import SimpleNamespace

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import httpx  # noqa: E402
import mlflow  # noqa: E402
import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from conftest import BIN  # noqa: E402
from cluster import Cluster  # noqa: E402
from pgcluster import Postgres  # noqa: E402
from test_artifacts_s3 import BUCKET, S3  # noqa: E402
from test_collab_ipynb import Server, _rich_notebook  # noqa: E402


def call(port, token, method, path, body=None):
    """A REST call as the embedded suites make it (`Server.request`), to any port."""
    status, text, _ = Server.request(SimpleNamespace(port=port, token=token), method, path, body)
    return status, text


def ferrolab(port, token, endpoint, **body):
    reply = httpx.post(f"http://127.0.0.1:{port}/api/2.0/ferrolab/{endpoint}",
                       headers={"Authorization": f"Bearer {token}"}, json=body, timeout=60)
    return reply.status_code, reply.json()


def use_tracking(port, token):
    os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return MlflowClient()


def migrate(*args, env=None):
    return subprocess.run([BIN, "collab", "migrate", *args], capture_output=True, text=True, env=env, timeout=300)


def fill(server, tmp_path):
    """What a team made on its embedded server: notebooks, tracked runs with an
    artifact, a registered model with an alias (audit entries). Returns what a
    client sees, to compare after the move."""
    token = server.token
    made = {}
    status, body = call(server.port, token, "POST", "/api/notebooks", json.dumps(_rich_notebook()).encode())
    assert status == 201, body
    status, body = call(server.port, token, "POST", "/api/notebooks?title=Second%20one", b"")
    assert status == 201, body
    status, body = call(server.port, token, "GET", "/api/notebooks")
    assert status == 200, body
    made["notebooks"] = sorted((n["id"], n["title"]) for n in json.loads(body)["notebooks"])
    made["ipynb"] = {}
    for notebook_id, _ in made["notebooks"]:
        status, text = call(server.port, token, "GET", f"/api/notebooks/{notebook_id}/ipynb")
        assert status == 200, text
        made["ipynb"][notebook_id] = text

    client = use_tracking(server.port, token)
    experiment = client.create_experiment("before-the-move", tags={"team": "nlp"})
    run = client.create_run(experiment, run_name="lora-r8", tags={"stage": "dev"})
    run_id = run.info.run_id
    client.log_param(run_id, "rank", "8")
    for step in range(5):
        client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
    from mlflow.entities import Metric
    client.log_batch(run_id, metrics=[Metric("acc", i / 1000, 1_700_000_000_000 + i, i) for i in range(1000)])
    weights = tmp_path / "adapter.bin"
    weights.write_bytes(os.urandom(300_000))
    client.log_artifact(run_id, str(weights), "model")
    client.set_terminated(run_id)
    client.create_registered_model("support-bot", description="answers tickets")
    client.create_model_version("support-bot", "file:///runs/lora-r8/adapter", run_id=run_id)
    client.set_registered_model_alias("support-bot", "staging", "1")
    made.update(run_id=run_id, experiment=experiment, weights=weights.read_bytes())
    made["loss"] = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    made["acc"] = sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, "acc"))
    status, audit = ferrolab(server.port, token, "audit/get")
    assert status == 200 and audit["chain_verified"] is True, audit
    made["audit"] = [entry["hash"] for entry in audit["entries"]]
    assert len(made["audit"]) >= 3
    return made


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """An embedded server filled and stopped, its data folder moved into a fresh
    database and bucket, and two replicas on them with empty data folders."""
    root = tmp_path_factory.mktemp("migrate")
    s3 = S3()
    pg = Postgres()
    cluster = None
    try:
        embedded = Server(root / "embedded")
        try:
            made = fill(embedded, root)
        finally:
            embedded.stop()
        made["data"] = embedded.data
        made["token"] = embedded.token
        done = migrate("--data", str(embedded.data), "--database", pg.url,
                       "--artifacts", f"s3://{BUCKET}/cluster", env=s3.env)
        assert done.returncode == 0, done.stderr
        made["printed"] = done.stdout
        (root / "cluster").mkdir()
        cluster = Cluster(root / "cluster", s3, BUCKET, replicas=2, pg=pg)
        yield cluster, made
    finally:
        mlflow.set_tracking_uri(None)
        if cluster:
            cluster.stop()
        pg.stop()
        s3.stop()


def test_notebooks_and_tokens_arrive_whole(moved):
    cluster, made = moved
    assert f"1 artifacts sent to s3://{BUCKET}/cluster" in made["printed"], made["printed"]
    assert "tokens (they keep working)" in made["printed"], made["printed"]
    # The token made on the embedded server works on every replica.
    for _ in range(2):
        status, body = call(cluster.port, made["token"], "GET", "/api/notebooks")
        assert status == 200, body
        assert sorted((n["id"], n["title"]) for n in json.loads(body)["notebooks"]) == made["notebooks"]
    for notebook_id, text in made["ipynb"].items():
        status, exported = call(cluster.port, made["token"], "GET", f"/api/notebooks/{notebook_id}/ipynb")
        assert status == 200, exported
        assert exported == text
    # The moved workspace takes new notebooks as before.
    status, body = call(cluster.port, made["token"], "POST", "/api/notebooks?title=After", b"")
    assert status == 201, body


def test_runs_metrics_and_artifacts_arrive_whole(moved, tmp_path):
    cluster, made = moved
    client = use_tracking(cluster.port, made["token"])
    experiment = client.get_experiment_by_name("before-the-move")
    assert experiment.experiment_id == made["experiment"] and experiment.tags["team"] == "nlp"
    run = client.get_run(made["run_id"])
    assert run.data.params == {"rank": "8"} and run.data.tags["stage"] == "dev"
    assert run.info.status == "FINISHED" and run.info.run_name == "lora-r8"
    assert [(m.step, m.value) for m in client.get_metric_history(made["run_id"], "loss")] == made["loss"]
    assert sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(made["run_id"], "acc")) == made["acc"]
    assert run.data.metrics["loss"] == made["loss"][-1][1]
    # The replicas' data folders started empty: the bytes come from the bucket.
    digest = hashlib.sha256(made["weights"]).hexdigest()
    copies = lambda: [p for i in range(2) for p in (cluster.data / f"replica{i}" / "artifacts").rglob(digest)]
    assert copies() == []
    got = client.download_artifacts(made["run_id"], "model/adapter.bin", str(tmp_path))
    assert open(got, "rb").read() == made["weights"]
    assert copies(), "fetched from the bucket by the replica that served it"
    # New runs go on numbering after the moved ones.
    new = client.create_run(made["experiment"])
    client.log_metric(new.info.run_id, "loss", 0.5)
    assert len(client.search_runs([made["experiment"]])) == 2


def test_the_registry_and_the_audit_chain_arrive_whole(moved):
    cluster, made = moved
    client = use_tracking(cluster.port, made["token"])
    assert client.get_model_version_by_alias("support-bot", "staging").version == "1"
    status, audit = ferrolab(cluster.port, made["token"], "audit/get")
    assert status == 200 and audit["chain_verified"] is True, audit
    assert [entry["hash"] for entry in audit["entries"]] == made["audit"]
    # The chain goes on under the moved key, and versions keep their numbers.
    assert client.create_model_version("support-bot", "file:///elsewhere").version == "2"
    status, audit = ferrolab(cluster.port, made["token"], "audit/get")
    assert audit["chain_verified"] is True
    assert [entry["hash"] for entry in audit["entries"]][:len(made["audit"])] == made["audit"]
    assert len(audit["entries"]) == len(made["audit"]) + 1
    assert audit["entries"][-1]["seq"] == len(made["audit"]) + 1


def test_a_second_move_into_a_used_database_is_refused(moved):
    cluster, made = moved
    before = cluster.pg.sql("SELECT count(*) FROM ferrolab_chunks")
    again = migrate("--data", str(made["data"]), "--database", cluster.pg.url)
    assert again.returncode != 0
    assert "already holds a ferrolab workspace" in again.stderr and "empty database" in again.stderr
    assert cluster.pg.sql("SELECT count(*) FROM ferrolab_chunks") == before


def test_a_move_that_fails_stores_nothing(tmp_path):
    """A data folder whose tracking store holds a value that fits no column: the
    move stops naming the table, row and column, and the database stays empty, so
    the move can be made again once the file is mended."""
    import sqlite3
    server = Server(tmp_path / "data")
    try:
        status, body = call(server.port, server.token, "POST", "/api/notebooks?title=Kept", b"")
        assert status == 201, body
        client = use_tracking(server.port, server.token)
        run = client.create_run("0")
        client.log_metric(run.info.run_id, "loss", 1.5)
    finally:
        server.stop()
        mlflow.set_tracking_uri(None)
    db = sqlite3.connect(tmp_path / "data" / "tracking.sqlite")
    db.execute("UPDATE metrics SET step = 'seven'")
    db.commit()
    db.close()
    pg = Postgres()
    try:
        failed = migrate("--data", str(tmp_path / "data"), "--database", pg.url)
        assert failed.returncode != 0
        assert "metrics" in failed.stderr and "step" in failed.stderr and '"seven"' in failed.stderr, failed.stderr
        assert pg.sql("SELECT count(*) FROM ferrolab_chunks") == "0"
        assert pg.sql("SELECT count(*) FROM ferrolab_meta") == "0"
        assert pg.sql("SELECT count(*) FROM ferrolab_tracking.runs") == "0"
        db = sqlite3.connect(tmp_path / "data" / "tracking.sqlite")
        db.execute("UPDATE metrics SET step = 7")
        db.commit()
        db.close()
        done = migrate("--data", str(tmp_path / "data"), "--database", pg.url)
        assert done.returncode == 0, done.stderr
        assert pg.sql("SELECT step FROM ferrolab_tracking.metrics") == "7"
    finally:
        pg.stop()


@pytest.mark.parametrize("case", ["no folder", "not a data folder", "no database"])
def test_a_move_with_bad_arguments_says_what_to_do(case, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FERROLAB_DATABASE"}
    if case == "no folder":
        result = migrate("--data", str(tmp_path / "missing"), "--database", "postgres://x@127.0.0.1:1/x", env=env)
        assert "no data folder" in result.stderr
    elif case == "not a data folder":
        (tmp_path / "random").mkdir()
        result = migrate("--data", str(tmp_path / "random"), "--database", "postgres://x@127.0.0.1:1/x", env=env)
        assert "not an embedded server's data folder" in result.stderr
    else:
        result = migrate("--data", str(tmp_path), env=env)
        assert "--database" in result.stderr
    assert result.returncode != 0
