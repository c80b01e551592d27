#!/usr/bin/env bash
# The GPU check, one script for a machine with an NVIDIA GPU:
#   1. builds the model engine with --features cuda (or takes a binary built elsewhere),
#   2. lists the devices,
#   3. checks CUDA against the CPU: the same greedy tokens and last-position logits
#      from a tiny random model and from SmolLM2,
#   4. fine-tunes SmolLM2 with LoRA for 50 steps in bf16 on cuda:0 and prints tokens/s
#      and peak GPU memory,
#   5. where python3 has torch, transformers, peft and gguf, runs PyTorch + PEFT on the
#      same GPU, data and settings (bench/finetune_torch.py) and prints the ratio.
# Record its figures in docs/benchmarks.md.
#
#   scripts/gpu-check.sh                      needs nvcc, cargo and `make model`
#   scripts/gpu-check.sh ENGINE [MODEL.gguf]  a binary from
#       cargo build --release -p ferrolab-llm --features cuda --example engine
#   (the machine running it needs only the driver and CUDA's cuBLAS, cuRAND and NVRTC
#   libraries on the loader's path)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-}"
if [ -z "$BIN" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrolab/target-cuda}"
    command -v nvcc >/dev/null || { echo "gpu-check: nvcc not found; candle's CUDA kernels need the CUDA toolkit" >&2; exit 1; }
    cargo build --release --locked -p ferrolab-llm --features cuda --example engine
    BIN="$CARGO_TARGET_DIR/release/examples/engine"
fi
MODEL="${2:-}"
[ -n "$MODEL" ] || MODEL="$("$BIN" model path smollm2)" || { echo "gpu-check: run make model first" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'kill "${SAMPLER:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "== devices"
"$BIN" gpu

echo "== CUDA against the CPU (f32, greedy)"
"$BIN" model tiny "$WORK/tiny" >/dev/null
for model in "$WORK/tiny" "$MODEL"; do
    for device in cpu cuda:0; do
        "$BIN" model generate --json --model "$model" --device "$device" --max-tokens 24 \
            "The capital of France is" >"$WORK/$(basename "$model").$device.json"
    done
    python3 - "$WORK/$(basename "$model")" <<'PY'
import json, sys
base = sys.argv[1]
cpu, gpu = (json.load(open(f"{base}.{d}.json")) for d in ("cpu", "cuda:0"))
scale = max(abs(x) for x in cpu["last_logits"])
err = max(abs(a - b) for a, b in zip(cpu["last_logits"], gpu["last_logits"])) / scale
same = cpu["completion_ids"] == gpu["completion_ids"]
print(f"gpu-check: {base.rsplit('/', 1)[-1]}: logits max error {err:.1e} of the largest; "
      f"greedy tokens {'the same' if same else 'DIFFER'}: {gpu['text']!r}")
sys.exit(0 if err < 1e-4 and same else 1)
PY
done

echo "== LoRA fine-tuning, bf16, cuda:0"
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
cat >"$WORK/run.toml" <<TOML
model = "$MODEL"
data = "$WORK/train.jsonl"
steps = 50
batch_size = 4
max_length = 128
r = 8
alpha = 16.0
dropout = 0.0
targets = ["q", "v"]
lr = 2e-4
schedule = "constant"
eval_fraction = 0.0
checkpoint_every = 1000
device = "cuda:0"
dtype = "bf16"
output = "$WORK/run"
TOML

PEAK="$WORK/peak"
echo 0 >"$PEAK"
(while true; do
    used=$(nvidia-smi --id=0 --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 || echo 0)
    [ "${used:-0}" -gt "$(cat "$PEAK")" ] && echo "$used" >"$PEAK"
    sleep 0.2
done) &
SAMPLER=$!
"$BIN" finetune "$WORK/run.toml" >"$WORK/report.json"
kill "$SAMPLER" 2>/dev/null || true
python3 - "$WORK" "$(cat "$PEAK")" <<'PY'
import json, sys
work, peak = sys.argv[1], sys.argv[2]
steps = [json.loads(l) for l in open(f"{work}/run/metrics.jsonl")]
tokens = sum(s["tokens"] for s in steps[1:])
rate = tokens / (steps[-1]["elapsed_s"] - steps[0]["elapsed_s"])
json.dump({"tokens_per_s": rate, "peak_gpu_mib": int(peak)}, open(f"{work}/ferrolab.json", "w"))
print(f"gpu-check: ferrolab: 50 LoRA steps (r=8, q+v, batch 4, 128 tokens, bf16) on cuda:0")
print(f"gpu-check: ferrolab: {rate:.0f} tokens/s after the first step; peak GPU memory {peak} MiB "
      f"(nvidia-smi, whole process); loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}")
PY

if python3 -c "import torch, transformers, peft, gguf; assert torch.cuda.is_available()" 2>/dev/null; then
    echo "== PyTorch + PEFT, same GPU, data and settings"
    echo 0 >"$PEAK"
    (while true; do
        used=$(nvidia-smi --id=0 --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 || echo 0)
        [ "${used:-0}" -gt "$(cat "$PEAK")" ] && echo "$used" >"$PEAK"
        sleep 0.2
    done) &
    SAMPLER=$!
    python3 bench/finetune_torch.py "$MODEL" "$WORK/train.jsonl" --steps 50 --device cuda \
        --dtype bf16 --threads "$(nproc)" >"$WORK/torch.json"
    kill "$SAMPLER" 2>/dev/null || true
    python3 - "$WORK" "$(cat "$PEAK")" <<'PY'
import json, sys
work, peak = sys.argv[1], int(sys.argv[2])
ours, torch = (json.load(open(f"{work}/{n}.json")) for n in ("ferrolab", "torch"))
print(f"gpu-check: torch+peft: {torch['tokens_per_s']:.0f} tokens/s; peak GPU memory {peak} MiB "
      f"(nvidia-smi; {torch['peak_cuda_allocated_mib']:.0f} MiB allocated by torch); "
      f"loss {torch['losses'][0]:.3f} -> {torch['losses'][-1]:.3f}")
print(f"gpu-check: ratio ferrolab / torch+peft: {ours['tokens_per_s'] / torch['tokens_per_s']:.2f}x tokens/s, "
      f"{ours['peak_gpu_mib'] / peak:.2f}x peak GPU memory")
PY
else
    echo "gpu-check: python3 lacks torch with CUDA, transformers, peft or gguf: no PyTorch comparison"
fi
