"""%finetune through the real kernel: live progress through update_display_data,
a summary with the adapter's path, training from a %load table, an interrupt that
checkpoints, and --resume that finishes the run."""
import json
import subprocess
import time

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import BIN
from kernel_client import collect, of_type, reply_to, run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune")
    subprocess.run([BIN, "model", "tiny", str(folder / "tiny")], check=True, capture_output=True)
    rows = [(f"Say {w}:", f" {w} {w}") for w in ["red", "green", "blue", "cyan", "pink", "gold", "teal", "plum"]]
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"prompt": p, "completion": c}) for p, c in rows) + "\n")
    with open(folder / "train.csv", "w") as f:
        f.write("prompt,completion\n" + "".join(f'"{p}","{c}"\n' for p, c in rows))
    km, kc = start_new_kernel(kernel_name="ferrolab", startup_timeout=60)
    try:
        yield km, kc, folder
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def flags(folder, out, steps):
    return (f"--model {folder / 'tiny'} --output {folder / out} --steps {steps} --device cpu "
            f"--batch-size 2 --lr 1e-2 --eval-fraction 0")


def test_progress_is_live_and_the_summary_names_the_adapter(setup):
    _, kc, folder = setup
    content, messages = run(kc, f"%finetune --data {folder / 'train.jsonl'} {flags(folder, 'live', 30)}", timeout=600)
    assert content["status"] == "ok", content
    shown = of_type(messages, "display_data")
    assert len(shown) == 1
    display_id = shown[0]["content"]["transient"]["display_id"]
    updates = [m for m in of_type(messages, "update_display_data") if m["content"]["transient"]["display_id"] == display_id]
    assert updates, "the progress display is never updated"
    final = updates[-1]["content"]["data"]
    progress = final["application/vnd.ferrolab.finetune+json"]
    assert progress["step"] == 30 and progress["total_steps"] == 30
    assert "<svg" in final["text/html"] and "step 30/30" in final["text/plain"]
    result = of_type(messages, "execute_result")[0]["content"]["data"]
    # The report sits under ferrolab's own type: JupyterLab would show an
    # application/json tree instead of the HTML table.
    assert "application/json" not in result and "<table" in result["text/html"]
    report = result["application/vnd.ferrolab.finetune-report+json"]
    assert report["status"] == "finished" and report["steps_done"] == 30
    assert (folder / "live" / "adapter" / "adapter_model.safetensors").exists()
    assert "adapter (PEFT)" in result["text/plain"]
    assert len((folder / "live" / "metrics.jsonl").read_text().splitlines()) == 30


def test_training_from_a_loaded_table(setup):
    _, kc, folder = setup
    content, _ = run(kc, f"%load pairs {folder / 'train.csv'}")
    assert content["status"] == "ok", content
    content, messages = run(kc, f"%%finetune {flags(folder, 'table', 5)}\ntable = 'pairs'\nr = 4", timeout=600)
    assert content["status"] == "ok", content
    assert of_type(messages, "execute_result")[0]["content"]["data"]["application/vnd.ferrolab.finetune-report+json"]["steps_done"] == 5


def test_interrupt_checkpoints_and_resume_finishes(setup):
    km, kc, folder = setup
    msg_id = kc.execute(f"%finetune --data {folder / 'train.jsonl'} {flags(folder, 'stopped', 100000)} --checkpoint-every 100000")
    deadline = time.monotonic() + 300
    seen = []
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append(msg)
        if msg["msg_type"] == "update_display_data":
            break
    km.interrupt_kernel()
    reply = reply_to(kc, msg_id, timeout=300)["content"]
    collect(kc, msg_id)
    assert reply["status"] == "error"
    assert reply["ename"] == "KeyboardInterrupt"
    assert "resume" in reply["evalue"]
    checkpoints = list((folder / "stopped" / "checkpoints").iterdir())
    assert len(checkpoints) == 1
    done = json.loads((checkpoints[0] / "state.json").read_text())["step"]
    assert done >= 1
    content, messages = run(kc, f"%finetune --data {folder / 'train.jsonl'} {flags(folder, 'stopped', done + 3)} --resume", timeout=600)
    assert content["status"] == "ok", content
    report = of_type(messages, "execute_result")[0]["content"]["data"]["application/vnd.ferrolab.finetune-report+json"]
    assert report["steps_done"] == done + 3


def test_errors_are_clear(setup):
    _, kc, folder = setup
    content, _ = run(kc, "%finetune --steps 3")
    assert content["status"] == "error" and "no training data" in content["evalue"]
    content, _ = run(kc, f"%finetune --data {folder / 'train.jsonl'} --model nowhere --output {folder / 'x'}")
    assert content["status"] == "error" and "model 'nowhere' not found" in content["evalue"]
    content, _ = run(kc, f"%finetune --table missing --model {folder / 'tiny'}")
    assert content["status"] == "error" and "missing" in content["evalue"]
