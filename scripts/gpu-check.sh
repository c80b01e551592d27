#!/usr/bin/env bash
# The GPU check, one script for a machine with an NVIDIA GPU and the CUDA toolkit:
# builds ferrolab with --features cuda, lists the devices, fine-tunes SmolLM2 with
# LoRA for 50 steps in bf16 on cuda:0, and prints tokens/s and peak GPU memory.
# Record its figures in docs/benchmarks.md.
#
#   scripts/gpu-check.sh            (needs `make model` first, or FERROLAB_HOME with models/)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrolab/target-cuda}"
command -v nvcc >/dev/null || { echo "gpu-check: nvcc not found; candle's CUDA kernels need the CUDA toolkit" >&2; exit 1; }
cargo build --release --locked --features cuda --bin ferrolab
BIN="$CARGO_TARGET_DIR/release/ferrolab"
"$BIN" gpu
MODEL="$("$BIN" model path smollm2)" || { echo "gpu-check: run make model first" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'kill "${SAMPLER:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 - "$WORK/train.jsonl" <<'PY'
import json, random, sys
rng = random.Random(1)
words = "model data prompt token kernel notebook adapter gradient loss batch sequence review".split()
s = lambda n: " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."
with open(sys.argv[1], "w") as f:
    for _ in range(400):
        f.write(json.dumps({"prompt": "Summarise:\n" + " ".join(s(12) for _ in range(4)) + "\nSummary:",
                            "completion": " " + " ".join(s(10) for _ in range(10))}) + "\n")
PY
cat > "$WORK/run.toml" <<TOML
model = "$MODEL"
data = "$WORK/train.jsonl"
steps = 50
batch_size = 4
max_length = 128
r = 8
targets = ["q", "v"]
lr = 2e-4
eval_fraction = 0.0
checkpoint_every = 1000
device = "cuda:0"
dtype = "bf16"
output = "$WORK/run"
TOML

PEAK="$WORK/peak"
echo 0 > "$PEAK"
( while true; do
    used=$(nvidia-smi --id=0 --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 || echo 0)
    [ "${used:-0}" -gt "$(cat "$PEAK")" ] && echo "$used" > "$PEAK"
    sleep 0.2
  done ) &
SAMPLER=$!
"$BIN" finetune "$WORK/run.toml" > "$WORK/report.json"
kill "$SAMPLER" 2>/dev/null || true
python3 - "$WORK" "$(cat "$PEAK")" <<'PY'
import json, sys
work, peak = sys.argv[1], sys.argv[2]
steps = [json.loads(l) for l in open(f"{work}/run/metrics.jsonl")]
tokens = sum(s["tokens"] for s in steps[1:])
rate = tokens / (steps[-1]["elapsed_s"] - steps[0]["elapsed_s"])
print(f"gpu-check: 50 LoRA steps (r=8, q+v, batch 4, 128 tokens, bf16) on cuda:0")
print(f"gpu-check: {rate:.0f} tokens/s after the first step; peak GPU memory {peak} MiB; "
      f"loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}")
PY
