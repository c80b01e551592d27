"""Artifacts in S3-compatible object storage (`ferrolab collab serve --artifacts
s3://BUCKET/PREFIX`), against moto's S3 server, through the real `mlflow` client:
the bytes are in the bucket before the artifact is named, the data folder only
caches them, and a store that cannot be reached is a clear error that records
nothing."""
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import boto3  # noqa: E402
import httpx  # noqa: E402
import mlflow  # noqa: E402
import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from conftest import BIN  # noqa: E402
from test_collab_ipynb import Server, _free_port, _wait_for_port  # noqa: E402

BUCKET = "ferrolab-artifacts"


class S3:
    """moto's S3 server on a free port, with a bucket."""

    def __init__(self):
        self.port = _free_port()
        server = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, self.proc, 60, lambda: "moto's S3 server did not start")
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                        AWS_REGION="us-east-1", AWS_ENDPOINT_URL=self.url, AWS_ALLOW_HTTP="true")
        self.client().create_bucket(Bucket=BUCKET)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1")

    def keys(self, prefix=""):
        listed = self.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return {item["Key"] for item in listed.get("Contents", [])}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def s3():
    store = S3()
    yield store
    store.stop()


def tracking_to(server):
    os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{server.port}"
    os.environ["MLFLOW_TRACKING_TOKEN"] = server.token
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])


def test_artifacts_round_trip_through_the_bucket(s3, tmp_path):
    server = Server(tmp_path / "data", args=["--artifacts", f"s3://{BUCKET}/team-a"], env=s3.env)
    try:
        tracking_to(server)
        client = MlflowClient()
        run = client.create_run("0")
        weights = tmp_path / "weights.bin"
        weights.write_bytes(os.urandom(20 << 20))  # sent to the bucket in parts
        client.log_artifact(run.info.run_id, str(weights), "model")
        client.log_text(run.info.run_id, "accuracy 0.91\n", "report.txt")
        keys = s3.keys("team-a/")
        for content in (weights.read_bytes(), b"accuracy 0.91\n"):
            digest = hashlib.sha256(content).hexdigest()
            assert f"team-a/sha256/{digest[:2]}/{digest}" in keys, keys
        # The data folder only caches: without it, the bytes come from the bucket.
        shutil.rmtree(server.data / "artifacts")
        back = client.download_artifacts(run.info.run_id, "model/weights.bin", str(tmp_path / "back"))
        assert Path(back).read_bytes() == weights.read_bytes()
        assert client.download_artifacts(run.info.run_id, "report.txt", str(tmp_path / "back2"))
        listed = sorted((f.path, f.is_dir) for f in client.list_artifacts(run.info.run_id))
        assert listed == [("model", True), ("report.txt", False)]
    finally:
        mlflow.set_tracking_uri(None)
        server.stop()


def test_the_data_folders_copies_stay_within_the_cache_limit(s3, tmp_path):
    """With a bucket the data folder only caches its blobs: past
    --artifact-cache-mib the least recently used copies go (never one used in
    the last 10 s, which a download may be about to open), and every artifact
    still downloads, from the bucket when its copy is gone."""
    server = Server(tmp_path / "data", args=["--artifacts", f"s3://{BUCKET}/cache", "--artifact-cache-mib", "1"],
                    env=s3.env)
    cached = lambda: {p.name: p.stat().st_size for p in (server.data / "artifacts" / "sha256").rglob("*")
                      if p.is_file() and len(p.name) == 64}
    try:
        tracking_to(server)
        client = MlflowClient()
        run = client.create_run("0")
        contents = {}
        for name in ("a.bin", "b.bin", "c.bin"):
            contents[name] = os.urandom(400_000)
            (tmp_path / name).write_bytes(contents[name])
            client.log_artifact(run.info.run_id, str(tmp_path / name))
        digest = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
        # 1.2 MB, over the 1 MiB limit, but all just used: all stay.
        assert set(cached()) == set(digest.values())
        time.sleep(11)
        contents["d.bin"] = os.urandom(400_000)
        (tmp_path / "d.bin").write_bytes(contents["d.bin"])
        client.log_artifact(run.info.run_id, str(tmp_path / "d.bin"))
        digest["d.bin"] = hashlib.sha256(contents["d.bin"]).hexdigest()
        kept = cached()
        assert sum(kept.values()) <= 1 << 20, kept
        # The oldest went first; the newest stays.
        assert digest["a.bin"] not in kept and digest["d.bin"] in kept, kept
        for name, data in contents.items():
            back = client.download_artifacts(run.info.run_id, name, str(tmp_path / "back"))
            assert Path(back).read_bytes() == data
        assert len(s3.keys("cache/")) == 4
    finally:
        mlflow.set_tracking_uri(None)
        server.stop()


def test_a_bucket_that_goes_away_is_a_clear_error_and_records_nothing(tmp_path, monkeypatch):
    # The client would send the refused upload again and again, backing off.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    store = S3()
    server = Server(tmp_path / "data", args=["--artifacts", f"s3://{BUCKET}"], env=store.env)
    try:
        tracking_to(server)
        client = MlflowClient()
        run = client.create_run("0")
        client.log_text(run.info.run_id, "kept", "kept.txt")
        store.stop()
        with pytest.raises(MlflowException):
            client.log_text(run.info.run_id, "lost", "lost.txt")
        # What the server answers, which the client does not show.
        answer = httpx.put(
            f"http://127.0.0.1:{server.port}/api/2.0/mlflow-artifacts/artifacts/0/{run.info.run_id}/artifacts/lost.txt",
            content=b"lost", headers={"Authorization": f"Bearer {server.token}"}, timeout=120)
        assert answer.status_code == 500
        assert "cannot store the artifact" in answer.json()["message"]
        assert f"s3://{BUCKET}" in answer.json()["message"]
        assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["kept.txt"]
    finally:
        mlflow.set_tracking_uri(None)
        server.stop()


def test_an_unreachable_bucket_stops_the_server_at_start(tmp_path):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{_free_port()}", AWS_ALLOW_HTTP="true")
    proc = subprocess.run([BIN, "collab", "serve", "--data", str(tmp_path / "data"), "--bind",
                           f"127.0.0.1:{_free_port()}", "--artifacts", f"s3://{BUCKET}/x"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cannot reach the artifact store s3://" in proc.stderr, proc.stderr
    assert "AWS_ENDPOINT_URL" in proc.stderr
