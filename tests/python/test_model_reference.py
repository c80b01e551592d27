"""ferrolab's model engine against Hugging Face transformers on the same GGUF file:
identical token ids (digits, spaces, Unicode, the chat template), the same greedy
continuation, and the same last-position logits."""
import json
import subprocess

import pytest

from conftest import BIN, REFERENCE_PYTHON, ROOT, SMOLLM2

CASES = [
    {"prompt": "What is the capital of France?", "chat": True},
    {"prompt": "The quick brown fox", "chat": False},
    {"prompt": "List three prime numbers:", "chat": True},
    {"prompt": "In 1969, 12 astronauts  walked   on the moon; 3.14159 is pi, 1,000,000 is a million.", "generate": False},
    {"prompt": "  leading spaces, tabs\tand\nnewlines\n\n, émigré naïve 東京 🚀 <|im_start|>user x<|im_end|>", "generate": False},
    {"prompt": "def add(a, b):\n    return a + b  # 42", "generate": False},
]
MAX_NEW_TOKENS = 32


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    if not REFERENCE_PYTHON:
        pytest.fail("FERROLAB_REFERENCE_PYTHON is not set (make test runs `make reference-venv` and sets it)")
    cases = tmp_path_factory.mktemp("ref") / "cases.json"
    cases.write_text(json.dumps(CASES))
    out = subprocess.run(
        [REFERENCE_PYTHON, str(ROOT / "tests/reference/smollm2_reference.py"), str(SMOLLM2), str(cases),
         "--max-new-tokens", str(MAX_NEW_TOKENS)],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def ferrolab(case):
    args = [BIN, "model", "generate", "--model", "smollm2", "--json", "--max-tokens",
            str(MAX_NEW_TOKENS if case.get("generate", True) else 1), case["prompt"]]
    if case.get("chat"):
        args.insert(3, "--chat")
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_same_tokens_continuation_and_logits(reference, index):
    case, ref = CASES[index], reference[index]
    ours = ferrolab(case)
    assert ours["prompt"] == ref["prompt"], "the chat template renders differently"
    assert ours["prompt_ids"] == ref["prompt_ids"]
    if not case.get("generate", True):
        return
    assert ours["completion_ids"] == ref["completion_ids"], (ours["text"], ref["text"])
    assert ours["text"] == ref["text"]
    a, b = ours["last_logits"], ref["last_logits"]
    assert len(a) == len(b)
    scale = max(abs(x) for x in b)
    worst = max(abs(x - y) for x, y in zip(a, b))
    assert worst / scale < 1e-4, f"max |Δlogit| {worst} against a scale of {scale}"
    assert a.index(max(a)) == b.index(max(b))


def test_capital_of_france(reference):
    assert reference[0]["text"] == "The capital of France is Paris."
    assert ferrolab(CASES[0])["text"] == "The capital of France is Paris."


def test_model_path_names_the_installed_file():
    out = subprocess.run([BIN, "model", "path", "smollm2"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_unknown_model_says_where_it_looked(tmp_path):
    out = subprocess.run([BIN, "model", "path", "no-such-model"], capture_output=True, text=True)
    assert out.returncode != 0
    assert "model 'no-such-model' not found" in out.stderr
