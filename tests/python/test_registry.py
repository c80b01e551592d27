"""The model registry and its governance on the collaboration server: registered
models, versions and aliases through the real `mlflow` client, and the review and
promotion rules and the audit log through ferrolab's own endpoints. Each person is
a collab token; the mlflow client sends whichever MLFLOW_TRACKING_TOKEN holds."""
import contextlib
import os
import sqlite3
import subprocess

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import httpx  # noqa: E402
import mlflow  # noqa: E402
import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from conftest import BIN  # noqa: E402
from cluster import Cluster  # noqa: E402
from test_artifacts_s3 import BUCKET, S3  # noqa: E402
from test_collab_ipynb import Server  # noqa: E402


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def server(request, tmp_path_factory):
    """One server on its embedded storage; or three replicas on one PostgreSQL,
    each call going to the next replica in turn."""
    s3 = None
    if request.param == "embedded":
        s = Server(tmp_path_factory.mktemp("registry"))
    else:
        s3 = S3()
        try:
            s = Cluster(tmp_path_factory.mktemp("registry-cluster"), s3, BUCKET)
        except BaseException:
            s3.stop()
            raise
    s.users = {"owner": s.token}
    for name in ("alice", "bob"):
        s.users[name] = subprocess.run(
            [BIN, "collab", "token", "create", *s.token_store, "--name", name, "--role", "editor"],
            check=True, capture_output=True, text=True).stdout.strip()
    os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{s.port}"
    os.environ["MLFLOW_TRACKING_TOKEN"] = s.users["alice"]
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    yield s
    mlflow.set_tracking_uri(None)
    s.stop()
    if s3:
        s3.stop()


@contextlib.contextmanager
def as_user(server, name):
    before = os.environ["MLFLOW_TRACKING_TOKEN"]
    os.environ["MLFLOW_TRACKING_TOKEN"] = server.users[name]
    try:
        yield MlflowClient()
    finally:
        os.environ["MLFLOW_TRACKING_TOKEN"] = before


def ferrolab(server, user, endpoint, **body):
    r = httpx.post(f"http://127.0.0.1:{server.port}/api/2.0/ferrolab/{endpoint}",
                   headers={"Authorization": f"Bearer {server.users[user]}"}, json=body, timeout=30)
    return r.status_code, r.json()


@contextlib.contextmanager
def evaluation_not_required(server):
    """For tests of reviews and aliases: the evaluation rule needs an evaluation the
    server ran on a real adapter, which test_evaluation.py covers."""
    status, before = ferrolab(server, "owner", "policy/get")
    assert status == 200, before
    status, body = ferrolab(server, "owner", "policy/set", policy={**before["policy"], "require_evaluation": False})
    assert status == 200, body
    try:
        yield
    finally:
        ferrolab(server, "owner", "policy/set", policy=before["policy"])


def prompt_test_run(client, pass_rate):
    exp = client.get_experiment_by_name("prompt-tests") or client.get_experiment(client.create_experiment("prompt-tests"))
    run = client.create_run(exp.experiment_id, run_name=f"eval-{pass_rate}")
    client.log_metric(run.info.run_id, "pass_rate", pass_rate)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_registered_models_versions_and_aliases_with_the_mlflow_client(server):
    with as_user(server, "alice") as client:
        created = client.create_registered_model("support-bot", tags={"team": "nlp"}, description="answers tickets")
        assert created.name == "support-bot" and created.tags == {"team": "nlp"}
        with pytest.raises(MlflowException) as dup:
            client.create_registered_model("support-bot")
        assert dup.value.error_code == "RESOURCE_ALREADY_EXISTS"
        run = client.create_run("0", run_name="train")
        v1 = client.create_model_version("support-bot", "file:///runs/a/adapter", run_id=run.info.run_id)
        v2 = client.create_model_version("support-bot", "file:///runs/b/adapter", tags={"r": "8"})
        assert (v1.version, v2.version) == ("1", "2") and v1.run_id == run.info.run_id
        assert v1.user_id == "alice" and v1.status == "READY"
        client.update_model_version("support-bot", "2", description="r=8")
        client.set_model_version_tag("support-bot", "2", "ready", "yes")
        got = client.get_model_version("support-bot", "2")
        assert got.description == "r=8" and got.tags == {"r": "8", "ready": "yes"}
        # An alias outside the policy needs no review.
        client.set_registered_model_alias("support-bot", "staging", "2")
        assert client.get_model_version_by_alias("support-bot", "staging").version == "2"
        model = client.get_registered_model("support-bot")
        assert model.aliases == {"staging": "2"} and model.description == "answers tickets"
        assert [m.name for m in client.search_registered_models("name LIKE 'support%'")] == ["support-bot"]
        assert client.search_registered_models("name = 'nothing'") == []
        found = client.search_model_versions(f"run_id = '{run.info.run_id}'")
        assert [v.version for v in found] == ["1"]
        assert sorted(v.version for v in client.search_model_versions("name = 'support-bot'")) == ["1", "2"]
        client.delete_registered_model_alias("support-bot", "staging")
        with pytest.raises(MlflowException) as gone:
            client.get_model_version_by_alias("support-bot", "staging")
        assert gone.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        with pytest.raises(MlflowException) as missing:
            client.get_model_version("support-bot", "9")
        assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        with pytest.raises(MlflowException, match="stages are not supported"):
            client.transition_model_version_stage("support-bot", "1", "Production")
        assert [v.version for v in client.search_model_versions("name = 'support-bot' AND tags.r = '8'")] == ["2"]
        with pytest.raises(MlflowException, match="'flavor' cannot be searched"):
            client.search_model_versions("flavor = 'lora'")
        client.delete_model_version("support-bot", "1")
        assert [v.version for v in client.search_model_versions("name = 'support-bot'")] == ["2"]


def test_promotion_needs_another_persons_approval_and_a_passing_evaluation(server):
    with as_user(server, "alice") as alice:
        alice.create_registered_model("summarizer")
        alice.create_model_version("summarizer", "file:///runs/s/adapter")
        # Without a review and an evaluation, both rules are named.
        with pytest.raises(MlflowException) as refused:
            alice.set_registered_model_alias("summarizer", "production", "1")
        message = str(refused.value)
        assert refused.value.error_code == "PERMISSION_DENIED"
        assert "approvals: 0 of the 1" in message and "the server has not evaluated version 1" in message
        status, body = ferrolab(server, "alice", "reviews/create", name="summarizer", version="1",
                                decision="approve", comment="mine is great")
        assert status == 403 and "self-approval refused" in body["message"]
        failing = prompt_test_run(alice, 0.6)
        status, _ = ferrolab(server, "alice", "model-versions/link-evaluation", name="summarizer", version="1",
                             run_id=failing)
        assert status == 200
    status, body = ferrolab(server, "bob", "reviews/create", name="summarizer", version="1",
                            decision="approve", comment="read the eval report")
    assert status == 200 and body["review"]["reviewer"] == "bob"
    with as_user(server, "alice") as alice:
        # Linked runs carry what a client logged: even a passing one does not count.
        passing = prompt_test_run(alice, 0.95)
        ferrolab(server, "alice", "model-versions/link-evaluation", name="summarizer", version="1", run_id=passing)
        with pytest.raises(MlflowException, match="the server has not evaluated version 1") as refused:
            alice.set_registered_model_alias("summarizer", "production", "1")
        assert "approvals" not in str(refused.value)
    with evaluation_not_required(server), as_user(server, "alice") as alice:
        alice.set_registered_model_alias("summarizer", "production", "1")
        assert alice.get_model_version_by_alias("summarizer", "production").version == "1"
        # A version holding a protected alias cannot be deleted out from under it.
        with pytest.raises(MlflowException, match="protected alias 'production'"):
            alice.delete_model_version("summarizer", "1")
    status, body = ferrolab(server, "bob", "model-versions/details", name="summarizer", version="1")
    assert {r["pass_rate"] for r in body["model_version"]["evaluation_runs"]} == {0.6, 0.95}
    assert body["model_version"]["reviews"][0]["comment"] == "read the eval report"


def test_a_later_rejection_blocks_and_only_owners_change_the_policy(server):
    with as_user(server, "alice") as alice:
        alice.create_registered_model("classifier")
        alice.create_model_version("classifier", "file:///c")
    status, body = ferrolab(server, "bob", "policy/set", policy={
        "protected_aliases": ["production"], "min_approvals": 0, "require_evaluation": False, "min_pass_rate": 0})
    assert status == 403 and "only an owner" in body["message"]
    status, body = ferrolab(server, "owner", "policy/set", policy={"protected_aliases": ["production"]})
    assert status == 400 and "min_approvals" in body["message"]
    ferrolab(server, "bob", "reviews/create", name="classifier", version="1", decision="approve", comment="ok")
    ferrolab(server, "bob", "reviews/create", name="classifier", version="1", decision="reject", comment="leaks PII")
    status, body = ferrolab(server, "owner", "policy/set", policy={
        "protected_aliases": ["production", "canary"], "min_approvals": 1, "require_evaluation": False,
        "min_pass_rate": 0.9})
    assert status == 200
    with as_user(server, "alice") as alice:
        with pytest.raises(MlflowException, match="rejected by bob") as refused:
            alice.set_registered_model_alias("classifier", "canary", "1")
        assert "evaluation" not in str(refused.value)
    status, _ = ferrolab(server, "owner", "policy/set", policy={
        "protected_aliases": ["production"], "min_approvals": 1, "require_evaluation": True, "min_pass_rate": 0.9})
    assert status == 200


def test_the_audit_log_records_everything_and_no_api_changes_it(server):
    status, body = ferrolab(server, "bob", "audit/get", name="summarizer")
    assert status == 200 and body["chain_verified"] is True
    actions = [(e["actor"], e["action"]) for e in body["entries"] if e["model"] == "summarizer"]
    assert actions == [
        ("alice", "registered_model.create"),
        ("alice", "model_version.create"),
        ("alice", "model_version.link_evaluation"),
        ("bob", "review.approve"),
        ("alice", "model_version.link_evaluation"),
        ("alice", "alias.set"),
    ]
    [promoted] = [e for e in body["entries"] if e["model"] == "summarizer" and e["action"] == "alias.set"]
    assert promoted["before"] is None and promoted["after"] == {"alias": "production", "version": "1"}
    # The refused self-approval and refused promotions wrote nothing.
    base = f"http://127.0.0.1:{server.port}/api/2.0"
    headers = {"Authorization": f"Bearer {server.users['owner']}"}
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/ferrolab/audit/get", "/ferrolab/audit/delete", "/ferrolab/audit/update", "/mlflow/audit/delete"):
            r = httpx.request(method, base + path, headers=headers, json={"name": "summarizer", "seq": 1})
            assert r.status_code in (200, 404)
    status, after = ferrolab(server, "owner", "audit/get")
    assert after["chain_verified"] is True
    assert [e["hash"] for e in after["entries"] if e["model"] == "summarizer"] == [
        e["hash"] for e in body["entries"] if e["model"] == "summarizer"]
    # Even the database refuses edits to the log.
    if isinstance(server, Cluster):
        for edit in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(subprocess.CalledProcessError) as refused:
                server.pg.sql(f"SET search_path TO ferrolab_tracking; {edit}")
            assert "append-only" in refused.value.stderr
        return
    db = sqlite3.connect(server.data / "tracking.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit_log SET actor = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit_log")
    db.close()


def test_registry_writes_need_an_editor(server):
    viewer = subprocess.run([BIN, "collab", "token", "create", *server.token_store, "--name", "vic",
                             "--role", "viewer"], check=True, capture_output=True, text=True).stdout.strip()
    server.users["vic"] = viewer
    with as_user(server, "vic") as vic:
        assert vic.get_registered_model("summarizer").name == "summarizer"
        with pytest.raises(MlflowException) as denied:
            vic.create_registered_model("mine")
        assert denied.value.error_code == "PERMISSION_DENIED"
    status, body = ferrolab(server, "vic", "reviews/create", name="summarizer", version="1", decision="approve",
                            comment="lgtm")
    assert status == 403


def test_an_approval_cannot_be_replayed_on_a_recreated_model(server):
    """The attack (docs/security.md, #2): remove `production`, delete the model,
    create it and its "v1" again, link a passing run, promote on the old approval.
    Removing the alias now needs an owner; and even after an owner removes it, the
    new version gets a new number and identity, so the old review does not count."""
    with as_user(server, "alice") as alice:
        alice.create_registered_model("replayed")
        first = alice.create_model_version("replayed", "file:///good")
    ferrolab(server, "bob", "reviews/create", name="replayed", version="1", decision="approve", comment="good")
    with evaluation_not_required(server), as_user(server, "alice") as alice:
        alice.set_registered_model_alias("replayed", "production", "1")
        with pytest.raises(MlflowException, match="only an owner removes it") as refused:
            alice.delete_registered_model_alias("replayed", "production")
        assert refused.value.error_code == "PERMISSION_DENIED"
    with as_user(server, "owner") as owner:
        owner.delete_registered_model_alias("replayed", "production")
    with as_user(server, "alice") as alice:
        alice.delete_registered_model("replayed")
        alice.create_registered_model("replayed")
        again = alice.create_model_version("replayed", "file:///evil")
        assert again.version == "2" and first.version == "1"
        with pytest.raises(MlflowException, match="approvals: 0 of the 1"):
            alice.set_registered_model_alias("replayed", "production", "2")
    status, body = ferrolab(server, "owner", "audit/get", name="replayed")
    assert status == 200 and body["chain_verified"] is True, body
    assert [e["action"] for e in body["entries"]].count("alias.delete") == 1


def test_another_spelling_of_a_name_is_the_same_person(server):
    twin = subprocess.run(
        [BIN, "collab", "token", "create", *server.token_store, "--name", "ALICE", "--role", "editor"],
        check=True, capture_output=True, text=True).stdout.strip()
    server.users["ALICE"] = twin
    with as_user(server, "alice") as alice:
        alice.create_registered_model("twins")
        alice.create_model_version("twins", "file:///t")
    status, body = ferrolab(server, "ALICE", "reviews/create", name="twins", version="1",
                            decision="approve", comment="looks fine to me")
    assert status == 403 and "self-approval refused" in body["message"], body
    bad = subprocess.run(
        [BIN, "collab", "token", "create", *server.token_store, "--name", "\u0430lice", "--role", "editor"],
        capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid token name" in bad.stderr


def test_registry_writes_at_once_keep_one_audit_chain(server):
    """Versions registered by several people at the same moment (on a cluster,
    through different replicas): every version gets its own number, and the audit
    log stays one unbroken chain with an entry for each."""
    import threading

    MlflowClient().create_registered_model("crowded")
    made, errors = [], []

    def register(user):
        try:
            for i in range(5):
                r = httpx.post(f"http://127.0.0.1:{server.port}/api/2.0/mlflow/model-versions/create",
                               headers={"Authorization": f"Bearer {server.users[user]}"},
                               json={"name": "crowded", "source": f"file:///{user}/{i}"}, timeout=60)
                assert r.status_code == 200, r.text
                made.append(int(r.json()["model_version"]["version"]))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=register, args=(u,)) for u in ("alice", "bob", "owner")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(made) == list(range(1, 16))
    status, body = ferrolab(server, "owner", "audit/get", name="crowded")
    assert status == 200 and body["chain_verified"] is True, body
    assert [e["action"] for e in body["entries"]].count("model_version.create") == 15
