"""Fine-tuning from the terminal: a run killed with kill -9 and resumed ends with
the loss curve of an uninterrupted run, and the adapters it writes load in PEFT with
the logits ferrolab computes."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import BIN, REFERENCE_PYTHON, ROOT, SMOLLM2

EXAMPLES = [
    {"prompt": f"Q: what is {a} plus {b}?\nA:", "completion": f" {a + b}"}
    for a in range(4) for b in range(4)
]


def tiny_model(folder):
    subprocess.run([BIN, "model", "tiny", str(folder), "--seed", "7"], check=True, capture_output=True)
    return folder


def write_run(folder, model, **settings):
    data = folder / "train.jsonl"
    data.write_text("\n".join(json.dumps(e) for e in EXAMPLES) + "\n")
    config = {
        "model": str(model), "data": str(data), "steps": 60, "batch_size": 4, "lr": 5e-3,
        "r": 8, "targets": ["q", "v", "gate"], "dropout": 0.1, "checkpoint_every": 10,
        "eval_fraction": 0.25, "eval_every": 20, "seed": 11, "device": "cpu",
    }
    config.update(settings)
    lines = []
    for key, value in config.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = folder / f"{config.get('name', 'run')}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_kill_9_then_resume_gives_the_uninterrupted_loss_curve(tmp_path):
    model = tiny_model(tmp_path / "tiny")
    whole = write_run(tmp_path, model, output=str(tmp_path / "whole"), name="whole")
    subprocess.run([BIN, "finetune", str(whole)], check=True, capture_output=True, timeout=600)
    expected = metrics(tmp_path / "whole")
    assert len(expected) == 60

    crashed = write_run(tmp_path, model, output=str(tmp_path / "crashed"), name="crashed")
    proc = subprocess.Popen([BIN, "finetune", str(crashed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = tmp_path / "crashed"
    deadline = time.monotonic() + 300
    # Kill it between checkpoints, once it has written one and gone on.
    while time.monotonic() < deadline:
        if (run_dir / "metrics.jsonl").exists() and len(metrics(run_dir)) >= 25:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(metrics(run_dir))
    assert 25 <= done_before < 60
    assert not (run_dir / "adapter").exists()

    resumed = subprocess.run([BIN, "finetune", str(crashed), "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after step" in resumed.stderr
    got = metrics(run_dir)
    assert [m["step"] for m in got] == list(range(1, 61))
    assert [m["loss"] for m in got] == [m["loss"] for m in expected]
    assert [m.get("eval_loss") for m in got] == [m.get("eval_loss") for m in expected]
    assert got[-1]["loss"] < got[0]["loss"]
    report = json.loads(resumed.stdout)
    assert report["status"] == "finished" and report["steps_done"] == 60


def test_a_run_folder_is_not_overwritten_by_accident(tmp_path):
    model = tiny_model(tmp_path / "tiny")
    config = write_run(tmp_path, model, output=str(tmp_path / "r"), steps=2)
    subprocess.run([BIN, "finetune", str(config)], check=True, capture_output=True, timeout=300)
    again = subprocess.run([BIN, "finetune", str(config)], capture_output=True, text=True, timeout=300)
    assert again.returncode != 0
    assert "already holds a run; pass --resume" in again.stderr


def test_bad_dataset_line_is_reported(tmp_path):
    model = tiny_model(tmp_path / "tiny")
    config = write_run(tmp_path, model, output=str(tmp_path / "r"))
    (tmp_path / "train.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "answer": "d"}\n')
    out = subprocess.run([BIN, "finetune", str(config)], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "line 2 of" in out.stderr and "missing field 'completion'" in out.stderr


def compare_with_peft(base, adapter, prompt):
    out = subprocess.run(
        [REFERENCE_PYTHON, str(ROOT / "tests/reference/peft_logits.py"), str(base), str(adapter), prompt],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ref = json.loads(out.stdout)
    ours = subprocess.run(
        [BIN, "model", "generate", "--model", str(base), "--adapter", str(adapter), "--json", "--max-tokens", "1", prompt],
        capture_output=True, text=True, timeout=600,
    )
    assert ours.returncode == 0, ours.stderr
    ours = json.loads(ours.stdout)
    assert ours["prompt_ids"] == ref["prompt_ids"]
    a, b, base_logits = ours["last_logits"], ref["adapted_logits"], ref["base_logits"]
    moved = max(abs(x - y) for x, y in zip(b, base_logits))
    assert moved > 1e-2, "the adapter must change the logits for the comparison to mean anything"
    scale = max(abs(x) for x in b)
    worst = max(abs(x - y) for x, y in zip(a, b))
    return worst / scale


def test_adapter_loads_in_peft_with_the_same_logits_on_smollm2(tmp_path):
    if not REFERENCE_PYTHON:
        pytest.fail("FERROLAB_REFERENCE_PYTHON is not set (make test sets it)")
    config = write_run(
        tmp_path, "smollm2", output=str(tmp_path / "smol"), steps=3, batch_size=2, lr=2e-2, dropout=0.0,
        targets=["q", "k", "v", "o", "gate", "up", "down"], eval_fraction=0.0, max_length=64,
    )
    out = subprocess.run([BIN, "finetune", str(config)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    adapter = tmp_path / "smol" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["target_modules"] == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert compare_with_peft(SMOLLM2, adapter, "Q: what is 2 plus 3?\nA:") < 1e-4
