"""The PyTorch + PEFT side of the fine-tuning benchmark (run by finetune_bench.py in
the reference venv): LoRA on SmolLM2 from its GGUF, the same examples, settings and
thread count as ferrolab. Prints JSON: tokens/s after the first step, peak RSS (and
peak CUDA memory with --device cuda), losses. `--device cuda --dtype bf16` is the GPU
side of scripts/gpu-check.sh."""

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("gguf")
    p.add_argument("data")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    args = p.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype).to(args.device)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.train()
    examples = [json.loads(line) for line in open(args.data)]
    rows = []
    for e in examples:
        prompt = tok(e["prompt"])["input_ids"]
        completion = tok(e["completion"])["input_ids"] + [tok.eos_token_id]
        ids = (prompt + completion)[: args.max_length]
        labels = ([-100] * len(prompt) + completion)[: args.max_length]
        rows.append((ids, labels))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    losses, tokens, started = [], 0, None
    for step in range(args.steps + 1):
        batch = [rows[(step * args.batch_size + i) % len(rows)] for i in range(args.batch_size)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tok.eos_token_id] * (width - len(i)) for i, _ in batch], device=args.device)
        labels = torch.tensor([l + [-100] * (width - len(l)) for _, l in batch], device=args.device)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step == 0:
            started = time.perf_counter()
        else:
            tokens += sum(len(i) for i, _ in batch)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"tokens_per_s": tokens / elapsed, "peak_rss_mib": peak, "losses": losses}
    if args.device.startswith("cuda"):
        out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["peak_cuda_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
